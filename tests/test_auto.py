"""The automatic choice (``strategy: auto``, ``compare --select``): every candidate strategy and the
no-transfer baseline are trained, and the one with the best validation score is shipped; the test
split is reported for every candidate and never chooses."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import REPO
from textransfer import ConfigError, RunConfig, get_strategy, run_transfer
from textransfer.cli import main
from textransfer.publish.hub import arm_location
from textransfer.publish.report import results_table
from textransfer.run import transfer as transfer_module
from textransfer.run.auto import pick
from textransfer.run.compare import strategy_configs
from textransfer.training.results import RunResults
from textransfer.training.trainer import StageTrainer

RECIPE = REPO / "recipes" / "news_to_sentiment.yaml"
MAX_LENGTH = 32
# small and quick, with a learning rate high enough that the tiny models give different answers
FAST = [f"model.max_length={MAX_LENGTH}", "source_training.max_steps=3", "target_training.num_epochs=2",
        "target_training.learning_rate=3e-3", "target_training.early_stopping_patience=null",
        "target.k_per_class=24", "noise_resamples=50"]
AUTO = ["strategy.name=auto", "strategy.candidates=[finetune,l2sp]"]


def auto_config(tiny_bert_dir, *extra) -> RunConfig:
    return RunConfig.from_yaml(RECIPE, overrides=[f"model.name_or_path={tiny_bert_dir}", *FAST, *AUTO, *extra])


def scripted_validation(monkeypatch, scores):
    """Each candidate's validation accuracy is ``scores[its strategy]``, the baseline's
    ``scores["baseline"]``; training and the test split run for real. So validation, and only it, differs."""
    current = {}
    real_arm, real_evaluate = transfer_module.train_transfer_arm, StageTrainer._evaluate_loader

    def arm(strategy, run, clock):  # the candidate whose transfer arm is training now
        current["name"] = strategy.name
        try:
            return real_arm(strategy, run, clock)
        finally:
            current.pop("name")

    def evaluate(self, model, loader):
        metrics, preds, refs = real_evaluate(self, model, loader)
        name = {"target": current.get("name"), "baseline": "baseline"}.get(self.desc)
        return (dict(metrics, accuracy=scores[name]) if name in scores else metrics), preds, refs

    monkeypatch.setattr(transfer_module, "train_transfer_arm", arm)
    monkeypatch.setattr(StageTrainer, "_evaluate_loader", evaluate)


def recorded(run: Path):
    return [json.loads(line) for line in (run / "test_predictions.jsonl").read_text().splitlines()]


def assert_answers_as_recorded(folder: Path, lines, column: str):
    """Plain transformers on ``folder`` gives the labels and scores recorded in ``column``."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        enc = tok([line["text"] for line in lines], truncation=True, max_length=MAX_LENGTH, padding=True,
                  return_tensors="pt")
        probs = model(**enc).logits.softmax(-1).tolist()
    names = [model.config.id2label[i] for i in range(len(probs[0]))]
    for p, line in zip(probs, lines):
        assert names[p.index(max(p))] == line[column]["label"]
        assert p == pytest.approx([line[column]["scores"][n] for n in names], abs=1e-5)


def accuracy_of(lines, column):
    return sum(line[column]["label"] == line["label"] for line in lines) / len(lines)


@pytest.mark.parametrize("scores, chosen", [
    ({"finetune": 0.9, "l2sp": 0.7, "baseline": 0.6}, "finetune"),
    ({"finetune": 0.7, "l2sp": 0.9, "baseline": 0.6}, "l2sp"),  # other validation scores: another choice
    ({"finetune": 0.6, "l2sp": 0.7, "baseline": 0.8}, "baseline"),  # the baseline ships when it is best
])
def test_validation_chooses_and_every_candidate_is_recorded(tiny_bert_dir, tmp_path, monkeypatch, scores, chosen):
    scripted_validation(monkeypatch, scores)
    out = tmp_path / "auto"
    results = run_transfer(auto_config(tiny_bert_dir), output_dir=out)
    auto = results["auto"]
    assert auto["chosen"] == chosen and auto["metric"] == "accuracy"
    assert list(auto["candidates"]) == ["finetune", "l2sp", "baseline"]
    assert {n: c["validation"] for n, c in auto["candidates"].items()} == scores
    assert f"validation accuracy (finetune {scores['finetune']:.4f}, l2sp {scores['l2sp']:.4f}, " \
           f"baseline {scores['baseline']:.4f})" in auto["reason"]
    assert json.loads((out / "results.json").read_text()) == results
    assert RunResults.from_dict(results).to_dict() == results  # typed round trip

    # the results are the best strategy's against the baseline, in the two-arm terms of any run
    best = max(("finetune", "l2sp"), key=scores.get)
    assert results["strategy"]["name"] == best
    assert results["selected"]["arm"] == ("baseline" if chosen == "baseline" else "transfer")
    assert results["selected"]["validation"] == {"transfer": scores[best], "baseline": scores["baseline"]}

    # model/ is the chosen model, every other candidate is in models/<name>/; each answers as recorded,
    # and each candidate's recorded test figures are its model's real ones
    lines = recorded(out)
    assert {"transfer", "baseline", "finetune", "l2sp"} <= set(lines[0])
    for name, candidate in auto["candidates"].items():
        folder = out / ("model" if name == chosen else f"models/{name}")
        assert candidate["model"] == ("model" if name == chosen else f"models/{name}")
        assert_answers_as_recorded(folder, lines, name)
        assert candidate["test"]["accuracy"] == pytest.approx(accuracy_of(lines, name))
        meta = ModelCard.load(folder / "README.md").data.to_dict()["textransfer"]
        assert meta["candidate"] == name and meta["shipped"] == chosen
        assert {n: c["validation"] for n, c in meta["candidates"].items()} == scores
        assert meta["candidates"][name]["test"]["accuracy"] == round(candidate["test"]["accuracy"], 4)
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(set(auto["candidates"]) - {chosen})
    assert not (out / "checkpoints").exists()  # the candidates' runs are gone once the choice is placed
    assert {"config.yaml", "confusion_matrix.png", "learning_curves.png"} <= {p.name for p in out.iterdir()}

    card = (out / "model" / "README.md").read_text()
    assert f"This is the **{chosen}** model, shipped as" in card
    assert "| candidate | validation accuracy | test accuracy | model |" in card
    assert f"| baseline{' (shipped)' if chosen == 'baseline' else ''} | {scores['baseline']:.4f} |" in card
    table = results_table(results)
    assert f"Shipped as model/: {chosen}. Why: " in table and "never used to choose" in table
    # `push --arm transfer` finds the best transfer candidate wherever the choice put it
    assert Path(arm_location(str(out), "transfer").path) == out / ("model" if chosen == best else f"models/{best}")


def split_files(folder: Path, flip_test: bool):
    """The sample reviews as train / validation / test files; ``flip_test`` swaps every test label."""
    rows = pd.read_csv(REPO / "textransfer" / "sample_data" / "reviews.csv").sample(frac=1.0, random_state=0)
    parts = {"train": rows[:200], "validation": rows[200:280], "test": rows[280:].copy()}
    if flip_test:
        parts["test"]["label"] = parts["test"]["label"].map({"positive": "negative", "negative": "positive"})
    folder.mkdir(parents=True)
    for split, frame in parts.items():
        frame.to_csv(folder / f"{split}.csv", index=False)
    return {split: str(folder / f"{split}.csv") for split in parts}


def weights(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_the_test_labels_never_choose(tiny_bert_dir, tmp_path):
    """Flip every test label: the test scores change, the choice and every shipped weight do not."""
    runs = {}
    for flip in (False, True):
        data = auto_config(tiny_bert_dir, "target.k_per_class=null", "target_training.num_epochs=4",
                           "strategy.candidates=[finetune,scratch]")
        data = data.to_dict()
        data["target"]["data_files"] = split_files(tmp_path / f"data-{flip}", flip)
        cfg = RunConfig.from_dict(data)
        out = tmp_path / f"auto-{flip}"
        runs[flip] = (out, run_transfer(cfg, output_dir=out)["auto"])
    (plain, straight), (flipped_dir, flipped) = runs[False], runs[True]
    assert flipped["chosen"] == straight["chosen"] and flipped["reason"] == straight["reason"]
    for name, candidate in straight["candidates"].items():
        other = flipped["candidates"][name]
        assert other["validation"] == candidate["validation"]
        assert other["test"]["accuracy"] == pytest.approx(1.0 - candidate["test"]["accuracy"])  # the flip took
        folder = candidate["model"]
        assert other["model"] == folder
        ours, theirs = weights(plain / folder), weights(flipped_dir / folder)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # the test ranking reverses under the flip, so a choice that read it would have moved
    tests = [c["test"]["accuracy"] for c in straight["candidates"].values()]
    assert len(set(tests)) > 1, f"every candidate scored the same on test ({tests}); the check would prove nothing"


def _results(scores, tests):
    """A candidate's results: its validation history and test metrics (every run shares the baseline)."""
    def stage(value, test):
        history = [] if value is None else [{"epoch": 1, "eval_accuracy": value}]
        return {"task": "t", "metrics": {"accuracy": test}, "history": history, "best_epoch": 1,
                "stopped_early": False, "parameters": {}}

    return {name: RunResults.from_dict({
        "model": "m", "seed": 1, "strategy": {"name": name},
        "target": {"task": "t", "label_names": ["a", "b"], "test_rows": 4,
                   "transfer": stage(value, tests[name]), "baseline": stage(scores["baseline"], tests["baseline"])}})
        for name, value in scores.items() if name != "baseline"}


def test_ties_ship_the_first_strategy_and_ship_overrides(sample_run_config):
    from textransfer.run.auto import choose, validation_scores

    cfg = sample_run_config
    tied = {"finetune": 0.8, "l2sp": 0.8, "baseline": 0.8}
    assert pick(tied, "best", "accuracy")[0] == "finetune"  # first listed; a strategy over the baseline
    assert pick({"l2sp": 0.8, "finetune": 0.8, "baseline": 0.5}, "best", "accuracy")[0] == "l2sp"
    assert pick({"finetune": None, "l2sp": 0.6, "baseline": 0.5}, "best", "accuracy")[0] == "l2sp"
    chosen, why = pick({"finetune": None, "l2sp": None, "baseline": 0.9}, "best", "accuracy")
    assert chosen == "finetune" and "no candidate strategy has a validation accuracy" in why
    assert pick({"finetune": 0.9, "baseline": 0.5}, "baseline", "accuracy")[0] == "baseline"
    assert pick({"finetune": 0.6, "l2sp": 0.7, "baseline": 0.9}, "transfer", "accuracy")[0] == "l2sp"
    # the choice reads validation only: the best test score changes nothing
    scores = {"finetune": 0.7, "l2sp": 0.9, "baseline": 0.8}
    runs = _results(scores, {"finetune": 0.99, "l2sp": 0.1, "baseline": 0.5})
    assert validation_scores(runs, cfg) == scores
    selection = choose(runs, cfg, lambda name, chosen: name)
    assert selection.chosen == "l2sp" and selection.candidates["finetune"].test == {"accuracy": 0.99}


@pytest.mark.parametrize("candidates, message", [
    ("[finetune,l2sq]", r"unknown strategy `l2sq`\. Did you mean `l2sp`\?"),
    ("[]", r"`strategy.candidates` is empty"),
    ("[finetune,auto]", r"names `auto`: .* cannot be one of them"),
    ("[l2sp,l2sp]", r"names `l2sp` twice"),
    ("[finetune,baseline]", r"the no-transfer baseline is always a candidate"),
    ("[{name: dann, target_labels: false}]", r"`target_labels: false`"),
])
def test_candidate_errors_come_before_anything_runs(candidates, message, tmp_path, capsys):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_yaml(RECIPE, overrides=["strategy.name=auto", f"strategy.candidates={candidates}"])
    out = tmp_path / "o"
    assert main(["run", str(RECIPE), "--output-dir", str(out), "strategy.name=auto",
                 f"strategy.candidates={candidates}"]) == 2
    assert f"command-line override `strategy.candidates={candidates}`" in capsys.readouterr().err
    assert not out.exists()


def test_auto_needs_the_baseline_and_a_target_baseline_for_each_candidate(tiny_bert_dir, tmp_path):
    with pytest.raises(ConfigError, match="always counts the no-transfer baseline"):
        RunConfig.from_yaml(RECIPE, overrides=[*AUTO, "baseline=false"])
    assert RunConfig.from_yaml(RECIPE, overrides=["strategy.name=auto", "strategy.candidates=finetune,l2sp"]) \
        .strategy.candidates == ["finetune", "l2sp"]  # the command line's comma list
    with_options = RunConfig.from_yaml(RECIPE, overrides=["strategy.name=auto",
                                                          "strategy.candidates=[finetune, {name: l2sp, alpha: 0.5}]"])
    assert with_options.strategy.candidate_configs()["l2sp"].alpha == 0.5
    assert RunConfig.from_dict(with_options.to_dict()).strategy == with_options.strategy  # config.yaml round trip
    no_source = RunConfig.from_dict({**auto_config(tiny_bert_dir).to_dict(), "source": None,
                                     "strategy": {"name": "auto", "candidates": ["scratch", "dann"]}})
    with pytest.raises(ConfigError, match="`dann` cannot be chosen on validation: it has no target baseline"):
        run_transfer(no_source, output_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()  # refused before any training or writing
    with pytest.raises(ConfigError, match="`--resume` does not continue a `strategy: auto` run"):
        run_transfer(auto_config(tiny_bert_dir), output_dir=tmp_path / "r", resume=True)
    with pytest.raises(ConfigError, match="`auto` is not a strategy that trains by itself"):
        get_strategy({"name": "auto"})
    with pytest.raises(ConfigError, match="add --select"):
        strategy_configs(auto_config(tiny_bert_dir), ["finetune", "auto"])


def test_dry_run_checks_every_candidate_and_writes_nothing(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "dry"
    argv = ["run", str(RECIPE), "--output-dir", str(out), "--dry-run", f"model.name_or_path={tiny_bert_dir}", *AUTO]
    assert main(argv) == 0
    assert "candidates:" in capsys.readouterr().out and not out.exists()
    assert main([*argv, "source=null"]) == 2  # l2sp needs the source task: said before anything runs
    assert "`l2sp` cannot be chosen on validation" in capsys.readouterr().err and not out.exists()


def test_compare_select_through_the_cli(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    scores = {"finetune": 0.6, "l2sp": 0.8, "baseline": 0.7}
    scripted_validation(monkeypatch, scores)
    out = tmp_path / "cmp"
    argv = ["compare", str(RECIPE), "--strategies", "finetune,l2sp", "--select", "--output-dir", str(out),
            f"model.name_or_path={tiny_bert_dir}", *FAST]
    assert main(argv) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    selected = comparison["selected"]
    assert selected["chosen"] == "l2sp" and "l2sp scored best on validation accuracy" in selected["reason"]
    assert {n: c["validation"] for n, c in selected["candidates"].items()} == scores
    for name in ("finetune", "l2sp"):  # each strategy's run stays whole; its test figures are reported
        assert selected["candidates"][name]["test"] == comparison["strategies"][name]["metrics"]
        assert (out / selected["candidates"][name]["model"] / "config.json").is_file()
    assert selected["candidates"]["baseline"]["test"] == comparison["baselines"]["target"]
    # D/model/ is a copy of the chosen model, answering as its run recorded it
    assert_answers_as_recorded(out / "model", recorded(out / "l2sp"), "transfer")
    assert ModelCard.load(out / "model" / "README.md").data.to_dict()["textransfer"]["candidate"] == "l2sp"
    md = (out / "comparison.md").read_text()
    assert "Selected (`--select`, on validation accuracy only" in md and "**l2sp**, copied to `model/`" in md
    assert "| l2sp (shipped) | 0.8000 |" in md
    assert "selected model (l2sp)" in capsys.readouterr().out
