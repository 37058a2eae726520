"""A whole transfer run: source, target, baseline, results.json, the saved model, the entry points."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from conftest import REPO
from textransfer import RunConfig, run_transfer
from textransfer.publish.report import results_table

METRICS = {"accuracy", "f1", "precision", "recall"}


def _check_results(results, out):
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert set(results["source"]["metrics"]) == METRICS
    assert set(results["target"]["transfer"]["metrics"]) == METRICS
    assert set(results["target"]["baseline"]["metrics"]) == METRICS
    for k in METRICS:
        t = results["target"]["transfer"]["metrics"][k]
        b = results["target"]["baseline"]["metrics"][k]
        assert results["gain"][k] == pytest.approx(t - b)
        ci = results["gain_ci"][k]
        assert ci["low"] <= ci["high"]
    assert isinstance(results["negative_transfer"], bool)
    assert results["negative_transfer"] == (results["gain_ci"]["accuracy"]["high"] < 0)
    assert {"source", "target", "baseline"} <= set(results["train_samples_per_s"])
    assert all(v > 0 for v in results["train_samples_per_s"].values())
    assert {"load_data_s", "tokenize_s", "source_s", "target_s", "baseline_s", "total_s"} <= set(results["timings"])
    assert results["target"]["label_names"] == ["negative", "positive"]
    assert results["source"]["label_names"] == ["world", "sports", "business", "tech"]
    params = results["target"]["transfer"]["parameters"]
    assert 0 < params["trainable_parameters"] <= params["total_parameters"]
    for png in ("learning_curves.png", "transfer_gain.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["target"]["name"] == "reviews"
    assert RunConfig.from_dict(resolved).target.label_names == ["negative", "positive"]


def test_library_run_end_to_end(sample_run_config, tmp_path):
    out = tmp_path / "run"
    results = run_transfer(sample_run_config, output_dir=out)
    _check_results(results, out)
    # the sample corpus splits: 400 rows, 30% test for the target
    assert results["target"]["test_rows"] == 120
    assert results["target"]["data"]["rows"]["test"] == 120

    # plain transformers loads the saved model and speaks the target labels
    clf = pipeline("text-classification", model=str(out / "model"), device=-1)
    preds = clf(["A wonderful little gadget.", "Broke after a day."])
    assert {p["label"] for p in preds} <= {"negative", "positive"}

    # ... with the same predictions as the model the run trained (re-evaluated here)
    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    enc = tok(["A wonderful little gadget.", "Broke after a day."], padding=True, return_tensors="pt")
    with torch.no_grad():
        ids = model(**enc).logits.argmax(-1).tolist()
    assert [model.config.id2label[i] for i in ids] == [p["label"] for p in preds]
    table = results_table(results)
    assert "transfer" in table and "baseline" in table and "gain" in table


def test_same_seed_same_results(sample_run_config, tmp_path):
    a = run_transfer(sample_run_config, output_dir=tmp_path / "a")
    b = run_transfer(sample_run_config, output_dir=tmp_path / "b")
    assert a["target"]["transfer"]["metrics"] == b["target"]["transfer"]["metrics"]
    assert a["target"]["baseline"]["metrics"] == b["target"]["baseline"]["metrics"]
    assert a["source"]["history"] == b["source"]["history"]
    wa = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a" / "model").state_dict()
    wb = AutoModelForSequenceClassification.from_pretrained(tmp_path / "b" / "model").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_transfer_really_starts_from_the_source_encoder(sample_run_config, tmp_path, monkeypatch):
    """The target stage's encoder is the source-tuned one; the baseline's is the pretrained one."""
    import textransfer.strategies.base as tr

    seen = {}
    real_train_stage = tr.train_stage

    def spy(name, model, *args, **kwargs):
        seen[name] = {k: v.clone() for k, v in model.base_model.state_dict().items()}
        out = real_train_stage(name, model, *args, **kwargs)
        seen[name + "_after"] = {k: v.clone() for k, v in out[0].base_model.state_dict().items()}
        return out

    monkeypatch.setattr(tr, "train_stage", spy)
    run_transfer(sample_run_config, output_dir=tmp_path / "r")
    keys = list(seen["source"])
    assert all(torch.equal(seen["source_after"][k], seen["target"][k]) for k in keys)
    assert all(torch.equal(seen["source"][k], seen["baseline"][k]) for k in keys)
    assert any(not torch.equal(seen["source"][k], seen["target"][k]) for k in keys)


def test_k_per_class_and_freezing_reach_the_run(sample_run_config, tmp_path):
    cfg = sample_run_config
    cfg.target.k_per_class = 8
    cfg.target_training.freeze_embeddings = True
    cfg.target_training.freeze_layers = 1
    results = run_transfer(cfg, output_dir=tmp_path / "k")
    assert results["target"]["data"]["class_counts"]["train"] == [8, 8]
    p = results["target"]["transfer"]["parameters"]
    assert p["trainable_parameters"] < p["total_parameters"]
    assert results["target"]["baseline"]["parameters"] == p


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _overrides(tiny_bert_dir):
    return [f"model.name_or_path={tiny_bert_dir}", "model.max_length=32", "source_training.num_epochs=1",
            "target_training.num_epochs=1", "noise_resamples=50"]


@pytest.mark.parametrize("entry", ["cli", "recipe", "accelerate"])
def test_entry_points(entry, tiny_bert_dir, tmp_path):
    out = tmp_path / entry
    cfg = str(REPO / "recipes" / "news_to_sentiment.yaml")
    if entry == "cli":
        cmd = [sys.executable, "-m", "textransfer.cli", "run", cfg, "--output-dir", str(out)]
    elif entry == "recipe":
        cmd = [sys.executable, str(REPO / "recipes" / "news_to_sentiment.py"), "--config", cfg,
               "--output-dir", str(out)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
               str(REPO / "recipes" / "news_to_sentiment.py"), "--config", cfg, "--output-dir", str(out)]
    cmd += _overrides(tiny_bert_dir)
    # one override the --flag way, to prove both spellings work
    cmd += ["--target.k_per_class", "10"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gain" in proc.stdout and "baseline" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["target"]["data"]["class_counts"]["train"] == [10, 10]
    assert results["world_size"] == 1


@pytest.mark.parametrize("strategy", [
    ["strategy.name=l2sp", "strategy.alpha=0.5"],
    ["strategy.name=features", "strategy.head=mlp"],
    ["strategy.name=dann", "strategy.lambda_max=0.3"],
])
def test_recipe_runs_the_strategy_it_is_given(strategy, tiny_bert_dir, tmp_path):
    # the recipe script, not the library: a strategy and its options chosen on its command line
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "recipes" / "news_to_sentiment.py"), "--config",
           str(REPO / "recipes" / "news_to_sentiment.yaml"), "--output-dir", str(out),
           *_overrides(tiny_bert_dir), *strategy]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    name, option = strategy[0].split("=")[1], strategy[1].split("=")[0].split(".")[1]
    assert results["strategy"]["name"] == name
    assert str(results["strategy"][option]).lower() == strategy[1].split("=")[1]
    assert yaml.safe_load((out / "config.yaml").read_text())["strategy"]["name"] == name
    if name == "dann":  # the source stage also saw the target's text, without its labels
        assert results["source"]["unlabelled_target_examples"] > 0


@pytest.mark.slow
def test_embedded_default_with_minilm(tmp_path):
    """The README's demo: the real MiniLM encoder on the shipped sample corpus."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "textransfer.cli", "run", str(REPO / "recipes" / "news_to_sentiment.yaml"),
         "--output-dir", str(out)],
        capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    _check_results(results, out)
    # the news topics are learnt well; sentiment far above chance for both target models
    assert results["source"]["metrics"]["accuracy"] > 0.85
    assert results["target"]["baseline"]["metrics"]["accuracy"] > 0.75
    assert results["target"]["transfer"]["metrics"]["accuracy"] > 0.65
    clf = pipeline("text-classification", model=str(out / "model"), device=-1)
    labels = [p["label"] for p in clf(["I loved every minute of it, brilliant.", "Awful. It broke at once."])]
    assert labels == ["positive", "negative"]


def test_run_on_every_architecture(model_type, tmp_path, pad_tokenizer, sample_run_config):
    """Source -> target -> baseline end to end for each supported encoder family (tiny, random)."""
    from transformers import AutoModel

    from conftest import ARCHITECTURES

    cfg_kwargs = dict(ARCHITECTURES[model_type], vocab_size=pad_tokenizer.vocab_size)
    from transformers import AutoConfig

    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(model_type, **cfg_kwargs)).save_pretrained(tmp_path / "enc")
    pad_tokenizer.save_pretrained(tmp_path / "enc")
    cfg = sample_run_config
    cfg.model.name_or_path = str(tmp_path / "enc")
    cfg.source.max_train_samples = cfg.target.max_train_samples = 64
    cfg.target_training.freeze_layers = 1
    results = run_transfer(cfg, output_dir=tmp_path / "out")
    assert set(results["target"]["transfer"]["metrics"]) == METRICS
    assert isinstance(results["negative_transfer"], bool)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model")
    assert reloaded.config.model_type == model_type
    assert reloaded.config.id2label == {0: "negative", 1: "positive"}
