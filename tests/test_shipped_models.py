"""What a run ships reloads as trained: every strategy's ``model/`` is a plain
``AutoModelForSequenceClassification`` with the target's labels, on which plain ``pipeline`` gives
the run's recorded test predictions and ``textransfer predict`` the same labels and scores; the
saved tokenizer truncates at the run's ``max_length`` and carries nothing of this machine."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

from conftest import REPO, tiny_model, token_dataset
from published_run import trained_run
from textransfer import ConfigError, RunConfig, available_strategies
from textransfer.cli import main
from textransfer.run.compare import compare_strategies
from textransfer.strategies import features

# every strategy on one split and seed, sharing one baseline: the learning rate is high so the
# tiny models learn enough to give confident, different labels (an exact label match then means something)
OVERRIDES = ["model.max_length=32", "source_training.num_epochs=1", "target_training.num_epochs=2",
             "source_training.batch_size=32", "target_training.batch_size=16", "target_training.learning_rate=3e-3",
             "target_training.early_stopping_patience=null", "source.max_train_samples=96", "noise_resamples=100"]
SCORE_TOLERANCE = 1e-5  # predict's scores against the run's recorded ones (float32 softmax, other batch shapes)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, _tiny_bert_dir):
    cfg = RunConfig.from_yaml(REPO / "recipes" / "news_to_sentiment.yaml",
                              overrides=[f"model.name_or_path={_tiny_bert_dir}", *OVERRIDES])
    out = tmp_path_factory.mktemp("shipped") / "cmp"
    compare_strategies(cfg, available_strategies(), out)
    return out


def recorded(run: Path):
    """The run's test rows and the arm shipped as ``model/``."""
    lines = [json.loads(line) for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    return lines, json.loads((run / "results.json").read_text())["selected"]["arm"]


def arm_folders(run: Path, lines, shipped: str):
    """``{arm: its model folder}``: the shipped one in ``model/``, the others in ``models/<arm>/``."""
    arms = [a for a in ("transfer", "baseline") if a in lines[0]]
    return {arm: run / "model" if arm == shipped else run / "models" / arm for arm in arms}


def assert_standard_model(folder: Path, label_names):
    """A plain sequence-classification folder: the target's labels, exactly the standard weights
    (no domain classifier, second head or feature head), and nothing missing when it loads."""
    config = AutoConfig.from_pretrained(folder)
    assert config.id2label == dict(enumerate(label_names))
    assert config.architectures == ["BertForSequenceClassification"]
    assert not list(folder.glob("feature_head*"))
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    standard = set(AutoModelForSequenceClassification.from_config(config).state_dict())
    assert saved <= standard and not {k for k in standard - saved if "position_ids" not in k}
    _, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.parametrize("strategy", available_strategies())
def test_every_strategy_ships_a_model_that_answers_as_recorded(compared, strategy, tmp_path):
    run = compared / strategy
    lines, shipped = recorded(run)
    texts = [line["text"] for line in lines]
    label_names = json.loads((run / "results.json").read_text())["target"]["label_names"]
    src = tmp_path / "test.csv"
    pd.DataFrame({"text": texts}).to_csv(src, index=False)
    folders = arm_folders(run, lines, shipped)
    assert shipped in folders
    for arm, folder in folders.items():
        assert_standard_model(folder, label_names)
        want = [line[arm]["label"] for line in lines]
        clf = pipeline("text-classification", model=str(folder), device=-1)
        assert [r["label"] for r in clf(texts, truncation=True)] == want, (strategy, arm)
        out = tmp_path / f"{arm}.csv"
        assert main(["predict", str(run if arm == shipped else folder), "--input", str(src), "--output", str(out),
                     "--all-scores"]) == 0
        got = pd.read_csv(out)
        assert got["label"].tolist() == want, (strategy, arm)
        scores = np.array([[line[arm]["scores"][n] for n in label_names] for line in lines])
        assert np.abs(got[[f"score_{n}" for n in label_names]].to_numpy() - scores).max() < SCORE_TOLERANCE


# ---------------------------------------------------------------------------- features: the head is the model's
@pytest.mark.parametrize("head", ["mlp", "logistic"])
def test_features_heads_ship_as_recorded(sample_run_config, tmp_path, head):
    """The other feature heads (the default, linear, is in the test above), from the pretrained encoder."""
    from textransfer import run_transfer

    cfg = RunConfig.from_dict({**sample_run_config.to_dict(), "baseline": False, "source": None,
                               "strategy": {"name": "features", "head": head, "encoder": "pretrained"}})
    run_transfer(cfg, output_dir=tmp_path / "run")
    lines, shipped = recorded(tmp_path / "run")
    assert shipped == "transfer"
    assert_standard_model(tmp_path / "run" / "model", ["negative", "positive"])
    clf = pipeline("text-classification", model=str(tmp_path / "run" / "model"), device=-1)
    got = clf([line["text"] for line in lines], truncation=True)
    assert [r["label"] for r in got] == [line["transfer"]["label"] for line in lines]
    want = [line["transfer"]["scores"][line["transfer"]["label"]] for line in lines]
    assert np.abs(np.array([r["score"] for r in got]) - want).max() < SCORE_TOLERANCE


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_features_head_reproduces_every_architecture(model_type, pad_tokenizer, kind):
    """The features the head trains on, put through the head, give the whole model's logits: for
    ``linear``/``logistic`` the final linear layer's input, for ``mlp`` the first token's state
    through the architecture's own head."""
    model = tiny_model(model_type, num_labels=3)
    head, source, which = features.model_head(model, kind)
    cached = features.encode(model, token_dataset(24, num_labels=3), pad_tokenizer, 8, "cpu", source, which)
    features.check_head_reproduces(head, cached, model_type, kind)
    with torch.no_grad():
        assert torch.allclose(head.eval()(cached["features"]), cached["logits"], atol=1e-5)
    trainable = {id(p) for p in head.parameters()}
    assert trainable <= {id(p) for p in model.parameters()}  # the head *is* part of the model, not a copy
    if kind == "linear":
        assert head is features.final_linear(model) and head.out_features == 3


def test_final_layer_found_when_labels_match_the_hidden_size():
    model = tiny_model("roberta", num_labels=32)  # the head's dense layer maps 32 -> 32 too
    assert features.final_linear(model) is model.classifier.out_proj


def test_features_refuses_a_head_it_cannot_reproduce(monkeypatch, pad_tokenizer):
    model = tiny_model("bert")
    wrong = features.HeadLayout(features.HEAD_LAYOUTS["bert"].parts, lambda parts, states: parts["classifier"](states))
    monkeypatch.setitem(features.HEAD_LAYOUTS, "bert", wrong)  # skips BERT's pooler
    head, source, which = features.model_head(model, "mlp")
    cached = features.encode(model, token_dataset(16), pad_tokenizer, 8, "cpu", source, which)
    with pytest.raises(ConfigError, match=r"does not reproduce the model's own output.*`strategy.head`"):
        features.check_head_reproduces(head, cached, "bert", "mlp")
    monkeypatch.delitem(features.HEAD_LAYOUTS, "bert")
    with pytest.raises(ConfigError, match=r"not bert; use `strategy.head=linear`"):
        features.model_head(model, "mlp")


# ---------------------------------------------------------------------------- the saved tokenizer
@pytest.fixture
def run_dir(tmp_path_factory, tiny_bert_dir):
    return trained_run(tmp_path_factory, tiny_bert_dir)


def test_saved_tokenizer_truncates_as_trained_and_is_portable(run_dir, tiny_bert_dir, tmp_path, capsys):
    base = json.loads((Path(tiny_bert_dir) / "tokenizer_config.json").read_text())
    assert base["model_max_length"] == 512 and base.get("max_length") == 128  # what the base model brings
    saved = json.loads((run_dir / "model" / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == 32  # the run's model.max_length
    assert not {"local_files_only", "is_local", "max_length", "name_or_path"} & set(saved)
    assert not [v for v in saved.values() if isinstance(v, str) and os.path.isabs(v)]  # no path of this machine
    backend = json.loads((run_dir / "model" / "tokenizer.json").read_text())
    assert backend["truncation"]["max_length"] == 32 and backend["padding"] is None

    long_text = "this gadget is wonderful and it broke " * 700  # 5,000 tokens and more
    clf = pipeline("text-classification", model=str(run_dir / "model"), device=-1)
    assert len(clf.tokenizer(long_text)["input_ids"]) > 5000
    plain = clf(long_text, truncation=True)[0]
    src = tmp_path / "long.csv"
    pd.DataFrame({"text": [long_text]}).to_csv(src, index=False)
    assert main(["predict", str(run_dir), "--input", str(src), "--output", str(tmp_path / "p.csv")]) == 0
    got = pd.read_csv(tmp_path / "p.csv").iloc[0]
    assert got["label"] == plain["label"] and abs(got["score"] - plain["score"]) < SCORE_TOLERANCE
