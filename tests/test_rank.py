"""``textransfer rank`` / ``textransfer.rank``: scores per candidate (models, run directories, source
tasks), the feature cache, the source tuning, the outputs and the errors for bad candidates."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

import textransfer
from conftest import REPO
from published_run import trained_run
from textransfer.cli import main
from textransfer.config.rank import RankConfig
from textransfer.errors import ConfigError
from textransfer.inference import embeddings
from textransfer.metrics.transferability import h_score, leep, logme
from textransfer.run import rank as rank_module
from textransfer.run.rank import CandidateScores, predicted_order, short_names

RECIPE = REPO / "recipes" / "news_to_sentiment.yaml"
SAMPLE = REPO / "textransfer" / "sample_data"


def recipe_overrides(model_dir):
    return [f"model.name_or_path={model_dir}", "model.max_length=32"]


@pytest.fixture
def classifier_dir(tmp_path, tiny_bert_dir):
    """The tiny BERT with a (random) 3-label classification head, saved with its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2})
    path = tmp_path / "classifier"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(path)
    return path


@pytest.fixture
def task_file(tmp_path):
    """A source task YAML with a path relative to its own folder (the news sample copied beside it)."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    shutil.copy(SAMPLE / "news.csv", folder / "headlines.csv")
    path = folder / "news.yaml"
    path.write_text(yaml.safe_dump({"name": "news", "data_files": "headlines.csv",
                                    "label_names": ["world", "sports", "business", "tech"]}))
    return path


def target_rows(tiny_bert_dir):
    from textransfer import RunConfig, load_task

    cfg = RunConfig.from_yaml(RECIPE, overrides=recipe_overrides(tiny_bert_dir))
    train = load_task(cfg.target).splits["train"]
    return list(train["text"]), np.asarray(train["labels"])


def mean_pooled(model_dir, texts, head=False):
    """Features written plainly: one text at a time, the mean of its last hidden states."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = (AutoModelForSequenceClassification if head else AutoModel).from_pretrained(model_dir).eval()
    feats, probs = [], []
    with torch.no_grad():
        for text in texts:
            out = model(**tok(text, truncation=True, max_length=32, return_tensors="pt"), output_hidden_states=True)
            feats.append(out.hidden_states[-1][0].mean(dim=0).numpy())
            if head:
                probs.append(torch.softmax(out.logits[0], dim=-1).numpy())
    return np.stack(feats), (np.stack(probs) if head else None)


def test_models_get_logme_h_score_and_leep_from_their_own_features(tmp_path, tiny_bert_dir, classifier_dir):
    options = RankConfig(max_examples=None)  # every train row, so the check below sees the same rows
    report = textransfer.rank(RECIPE, [tiny_bert_dir, str(classifier_dir)], tmp_path / "out", options=options,
                              overrides=recipe_overrides(tiny_bert_dir))
    texts, labels = target_rows(tiny_bert_dir)
    assert report.target["rows"] == len(texts) and report.target["labels"] == ["negative", "positive"]
    plain = report.candidates[0]
    features, _ = mean_pooled(tiny_bert_dir, texts)
    assert set(plain.scores) == {"logme", "h_score"}  # no head: no LEEP
    assert plain.scores["logme"] == pytest.approx(logme(features, labels), rel=1e-4)
    # float32 batches vs one text at a time: H-score's pinv of a near-singular covariance amplifies it
    assert plain.scores["h_score"] == pytest.approx(h_score(features, labels), rel=1e-2)
    headed = report.by_name("classifier")
    features, probs = mean_pooled(classifier_dir, texts, head=True)
    assert headed.scores["leep"] == pytest.approx(leep(probs, labels), rel=1e-4)
    assert headed.scores["logme"] == pytest.approx(logme(features, labels), rel=1e-4)
    assert any("3 labels (a, b, c)" in note for note in headed.notes)
    assert sorted(c.rank for c in report.candidates) == [1, 2]
    assert report.order == [{"by": "logme", "candidates": [c.name for c in sorted(
        report.candidates, key=lambda c: -c.scores["logme"])]}]
    saved = json.loads((tmp_path / "out" / "rank.json").read_text())
    assert saved["candidates"][1]["scores"]["leep"] == headed.scores["leep"]
    assert (tmp_path / "out" / "rank.png").read_bytes()[:4] == b"\x89PNG"


def count_calls(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_a_second_call_reuses_features_and_the_tuned_encoder(tmp_path, tiny_bert_dir, task_file, monkeypatch):
    forward = count_calls(monkeypatch, embeddings, "compute_features")
    trained = count_calls(monkeypatch, rank_module.StageTrainer, "train")
    options = RankConfig(max_examples=64, tune_sources=True, tune_steps=3, tune_batch_size=8)
    monkeypatch.chdir(tmp_path)  # the task's relative path resolves against its file, not the cwd
    args = dict(options=options, overrides=recipe_overrides(tiny_bert_dir))
    first = textransfer.rank(RECIPE, [str(task_file), tiny_bert_dir], tmp_path / "out", **args)
    # features: news text, review text (the embedder), reviews through the tuned encoder; the
    # plain model is the embedder itself, so its review features are the same cache entry
    assert len(forward) == 3 and len(trained) == 1
    news = first.by_name("news")
    assert set(news.scores) == {"centroid_cosine", "proxy_a_distance", "logme", "h_score", "leep"}
    assert news.ranked_by == "logme" and not news.features_cached
    assert -1.0 <= news.scores["centroid_cosine"] <= 1.0 and 0.0 <= news.scores["proxy_a_distance"] <= 2.0
    tuned = list((tmp_path / "out" / "tuned").iterdir())
    assert len(tuned) == 1 and (tuned[0] / "config.json").is_file()
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "features").iterdir()}
    assert len(stamp) == 3

    second = textransfer.rank(RECIPE, [str(task_file), tiny_bert_dir], tmp_path / "out", **args)
    assert len(forward) == 3 and len(trained) == 1  # nothing recomputed, nothing retrained
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "features").iterdir()} == stamp
    assert all(c.features_cached for c in second.candidates)
    assert [c.scores for c in second.candidates] == [c.scores for c in first.candidates]

    textransfer.rank(RECIPE, [tiny_bert_dir], tmp_path / "out", options=RankConfig(max_examples=32),
                     overrides=recipe_overrides(tiny_bert_dir))
    assert len(forward) == 4  # other rows: other features


def test_a_run_directory_is_scored_through_its_shipped_model(tmp_path_factory, tmp_path, tiny_bert_dir):
    run_dir = trained_run(tmp_path_factory, tiny_bert_dir)
    report = textransfer.rank(RECIPE, [str(run_dir), str(run_dir / "model")], tmp_path / "out",
                              options=RankConfig(max_examples=64), overrides=recipe_overrides(tiny_bert_dir))
    as_run, as_folder = report.candidates
    assert (as_run.name, as_run.spec, as_folder.name) == ("run", str(run_dir), "model")  # folders by their own name
    assert set(as_run.scores) == {"logme", "h_score", "leep"}  # its head: the run's target labels
    assert any("2 labels (negative, positive)" in note for note in as_run.notes)
    assert as_run.scores == as_folder.scores
    assert as_folder.features_cached  # the same model and rows: one cache entry


def test_predicted_order_ranks_models_by_logme_and_untuned_tasks_by_similarity():
    results = [CandidateScores("m1", "m1", "model", {"logme": -0.9}, "logme"),
               CandidateScores("t1", "t1.yaml", "task", {"centroid_cosine": 0.2}, "centroid_cosine"),
               CandidateScores("m2", "m2", "model", {"logme": -0.1}, "logme"),
               CandidateScores("t2", "t2.yaml", "task", {"centroid_cosine": 0.8}, "centroid_cosine")]
    order = predicted_order(results)
    assert order == [{"by": "logme", "candidates": ["m2", "m1"]}, {"by": "centroid_cosine", "candidates": ["t2", "t1"]}]
    assert [r.rank for r in results] == [2, 2, 1, 1]


def test_short_names_fall_back_to_the_whole_spec_when_they_clash(tmp_path):
    (tmp_path / "a").mkdir()
    assert short_names(["x/news.yaml", "y/news.yaml", "org/model", str(tmp_path / "a")]) == \
        ["x/news.yaml", "y/news.yaml", "org/model", "a"]


def test_the_command_prints_the_table_and_writes_its_files(tmp_path, tiny_bert_dir, task_file, capsys):
    out = tmp_path / "out"
    # an override after --candidates is recognised as one (it is no file and looks like section.option=value)
    rc = main(["rank", str(RECIPE), f"model.name_or_path={tiny_bert_dir}", "--candidates", tiny_bert_dir,
               str(task_file), "model.max_length=32", "--output-dir", str(out), "--max-examples", "48"])
    shown = capsys.readouterr().out
    assert rc == 0
    assert "Target task 'reviews': 48 train rows scored (2 labels)" in shown
    assert "Predicted order by LogME: " in shown and "Predicted order by cosine: news" in shown
    assert "PAD" in shown and "news" in shown
    saved = json.loads((out / "rank.json").read_text())
    assert saved["options"]["max_examples"] == 48 and saved["target"]["rows"] == 48
    assert [c["kind"] for c in saved["candidates"]] == ["model", "task"]
    assert (out / "rank.png").is_file()


@pytest.mark.parametrize("content,message", [
    (None, "no such file. A task candidate is a YAML file"),
    ("name: news\n", "holds no task: a task file has the keys of a `source:` section"),
    ("[1, 2]\n", "holds no task"),
    ("name: news\ndata_file: x.csv\n", "holds no task"),
    ("name: news\ndata_files: x.csv\ntext_column: [text]\n", "Did you mean `text_columns`?"),
    ("name: news\ndata_files: [x\n", "not valid YAML"),
])
def test_a_bad_task_file_is_named_with_the_fix(tmp_path, tiny_bert_dir, content, message, capsys):
    path = tmp_path / "task.yaml"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "out"
    rc = main(["rank", str(RECIPE), *recipe_overrides(tiny_bert_dir), "--candidates", str(path),
               "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"--candidates '{path}'" in err and message in err
    assert not out.exists()  # checked before anything was computed or written


@pytest.mark.parametrize("spec", ["./no/such/model", "runs/missing/run"])
def test_an_unknown_candidate_path_is_named(tmp_path, tiny_bert_dir, spec, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"--candidates '.*': no such file or folder\. Pass a run directory"):
        textransfer.rank(RECIPE, [tiny_bert_dir, spec], tmp_path / "out", overrides=recipe_overrides(tiny_bert_dir))
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_no_model_and_a_repeated_candidate_are_refused(tmp_path, tiny_bert_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has neither config.json"):
        textransfer.rank(RECIPE, [str(tmp_path / "empty")], tmp_path / "out", overrides=recipe_overrides(tiny_bert_dir))
    with pytest.raises(ConfigError, match="given twice"):
        textransfer.rank(RECIPE, [tiny_bert_dir, tiny_bert_dir], tmp_path / "out",
                         overrides=recipe_overrides(tiny_bert_dir))


def test_rank_help_lists_every_option_without_loading_torch():
    import dataclasses
    import subprocess
    import sys

    code = ("import sys\nfrom textransfer.cli import main\ntry:\n    main(['rank', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "HEAVY []" in shown.stdout
    for f in dataclasses.fields(RankConfig):
        assert "--" + f.name.replace("_", "-") in shown.stdout


def test_rank_and_its_options_are_public_names():
    assert textransfer.rank is rank_module.rank and textransfer.RankConfig is RankConfig
    assert "rank" in textransfer.__all__


def test_rank_options_are_checked():
    with pytest.raises(ConfigError, match="`max_examples` must be >= 4"):
        RankConfig(max_examples=2)
    with pytest.raises(ConfigError, match="`tune_steps` must be >= 1"):
        RankConfig(tune_steps=0)
