"""Every strategy trains end to end (library and CLI); compare writes its three outputs; UDA."""

import json

import pytest

from conftest import REPO
from textransfer import RunConfig, run_transfer
from textransfer.cli import main
from textransfer.strategies import features as features_module

TINY = ["source_training.num_epochs=1", "target_training.num_epochs=1", "source.max_train_samples=64",
        "target.max_train_samples=64", "noise_resamples=100"]


def test_compare_every_strategy_through_the_cli(sample_run_config, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    names = ["finetune", "scratch", "features", "l2sp", "joint", "dann", "mmd", "coral"]
    argv = ["compare", str(REPO / "recipes" / "news_to_sentiment.yaml"), "--strategies", ",".join(names),
            "--output-dir", str(out), f"model.name_or_path={tiny_bert_dir}", "model.max_length=32", *TINY]
    assert main(argv) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison["strategies"]) == names
    base = comparison["baselines"]["target"]
    for name in names:
        row = comparison["strategies"][name]
        results = json.loads((out / name / "results.json").read_text())
        assert results["strategy"]["name"] == name
        assert row["metrics"] == results["target"]["transfer"]["metrics"]
        assert 0.0 <= row["metrics"]["accuracy"] <= 1.0
        assert row["gain"]["accuracy"] == pytest.approx(row["metrics"]["accuracy"] - base["accuracy"])
        assert isinstance(row["negative_transfer"], bool)
        assert row["train_time_s"] > 0
        assert (out / name / "model").is_dir()
    # the baseline trained once: every later strategy reused it
    reused = [json.loads((out / n / "results.json").read_text()).get("baseline_reused", False) for n in names]
    assert reused == [False] + [True] * (len(names) - 1)
    md = (out / "comparison.md").read_text()
    assert all(f"| {n} |" in md for n in names) and "baseline (target)" in md
    assert f"{comparison['strategies']['l2sp']['metrics']['accuracy']:.4f}" in md
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert "| features |" in capsys.readouterr().out
    # a non-empty output directory is refused without --overwrite
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err


def test_features_are_computed_once(sample_run_config, tmp_path, monkeypatch):
    calls = {"forward": 0, "encode": 0}
    real = features_module.encode

    def counting(encoder, ds, *a, **kw):
        calls["encode"] += 1
        handle = encoder.register_forward_hook(lambda *_: calls.__setitem__("forward", calls["forward"] + 1))
        try:
            return real(encoder, ds, *a, **kw)
        finally:
            handle.remove()

    monkeypatch.setattr(features_module, "encode", counting)
    cfg = RunConfig.from_dict({**sample_run_config.to_dict(), "baseline": False})
    cfg.strategy = features_module.FeaturesConfig(name="features", head="mlp", encoder="pretrained")
    cfg.target_training.num_epochs = 5
    cfg.target_training.eval_batch_size = 16
    results = run_transfer(cfg, output_dir=tmp_path / "f")
    transfer = results["target"]["transfer"]
    assert len(transfer["history"]) == 5
    rows = results["target"]["data"]["rows"]
    expected = sum(-(-rows[s] // 16) for s in ("train", "validation", "test"))
    assert calls == {"encode": 3, "forward": expected}  # one pass per split, not per epoch
    assert transfer["parameters"]["trainable_parameters"] < transfer["parameters"]["total_parameters"]
    # a standard classifier folder with the target's labels (no separate feature head to load)
    assert not list((tmp_path / "f" / "model").glob("feature_head*"))
    assert json.loads((tmp_path / "f" / "model" / "config.json").read_text())["id2label"] == {"0": "negative",
                                                                                            "1": "positive"}


@pytest.mark.parametrize("head", ["linear", "logistic"])
def test_features_heads_learn(sample_run_config, tmp_path, head):
    cfg = RunConfig.from_dict({**sample_run_config.to_dict(), "baseline": False, "source": None})
    cfg.strategy = features_module.FeaturesConfig(name="features", head=head, encoder="pretrained")
    cfg.target_training.num_epochs = 3
    results = run_transfer(cfg)
    history = results["target"]["transfer"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"] or head == "logistic"
    assert results["target"]["transfer"]["optimizer_steps"] >= 3


def test_unsupervised_adaptation_uses_no_target_label(sample_run_config, tmp_path):
    """target_labels: false: the adapted source model is tested on the target against source-only."""
    data = sample_run_config.to_dict()
    data["source"] = dict(data["target"], name="reviews_a", split_seed=1)
    data["strategy"] = {"name": "coral", "target_labels": False, "weight": 10.0}
    data["source_training"]["num_epochs"] = 1
    cfg = RunConfig.from_dict(data)
    results = run_transfer(cfg, output_dir=tmp_path / "uda")
    assert results["target"]["baseline"]["kind"] == "source_only"
    assert results["target"]["transfer"]["optimizer_steps"] == 0  # no target stage
    assert results["source"]["unlabelled_target_examples"] > 0
    assert isinstance(results["negative_transfer"], bool)
    bad = RunConfig.from_dict({**sample_run_config.to_dict(), "strategy": {"name": "dann", "target_labels": False}})
    from textransfer import ConfigError

    with pytest.raises(ConfigError, match="same `label_names`"):
        run_transfer(bad)


def test_unlabelled_files(sample_run_config, tmp_path):
    texts = tmp_path / "unlabelled.csv"
    texts.write_text("review\n" + "\n".join(f"an unlabelled review number {i}" for i in range(40)) + "\n")
    data = sample_run_config.to_dict()
    data["strategy"] = {"name": "mmd", "unlabelled_files": [str(texts)], "unlabelled_text_column": "review"}
    data["baseline"] = False
    results = run_transfer(RunConfig.from_dict(data), output_dir=tmp_path / "u")
    assert results["source"]["unlabelled_target_examples"] == 40
    data["strategy"]["unlabelled_text_column"] = "text"
    from textransfer import DataError

    with pytest.raises(DataError, match="no column 'text'"):
        run_transfer(RunConfig.from_dict(data))


def test_unlabelled_files_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "unlabelled.csv").write_text("text\nsome text\n")
    (folder / "recipe.yaml").write_text(
        "target: {name: t, data_files: textransfer:sample_data/reviews.csv, text_columns: [text]}\n"
        "strategy: {name: coral, unlabelled_files: [data/unlabelled.csv]}\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder: the relative path must still find the file
    cfg = RunConfig.from_yaml(folder / "recipe.yaml")
    assert cfg.strategy.unlabelled_files == [str(folder / "data" / "unlabelled.csv")]
