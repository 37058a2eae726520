"""The run ships the better arm, chosen on validation: ``model/`` is that arm's model, the other is in
``models/<arm>/``, each with its card; ``test_predictions.jsonl`` holds both arms' test predictions;
a finished run removes its checkpoints unless asked to keep them."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from textransfer import ConfigError, OutputDirError, RunConfig, load_task, run_transfer
from textransfer.publish.report import results_table
from textransfer.run.outputs import arm_by_row
from textransfer.run.shipping import select_arm
from textransfer.training.checkpointing import check_resumable
from textransfer.training.results import RunResults, TestPredictions
from textransfer.training.trainer import StageTrainer

MAX_LENGTH = 32


@pytest.fixture
def fast_config(sample_run_config):
    """The sample run, smaller: a few source steps and one target epoch."""
    cfg = sample_run_config
    cfg.source_training.max_steps = 3
    cfg.target_training.num_epochs = 1
    cfg.target.k_per_class = 24
    return cfg


def scripted_validation(monkeypatch, scores):
    """Each stage's validation accuracy is ``scores[stage]`` (the stage's trainer is named after it);
    the test split is predicted for real. So the validation, and only it, decides."""
    real = StageTrainer._evaluate_loader

    def evaluate(self, model, loader):
        metrics, preds, refs = real(self, model, loader)
        if self.desc in scores:
            metrics = dict(metrics, accuracy=scores[self.desc])
        return metrics, preds, refs

    monkeypatch.setattr(StageTrainer, "_evaluate_loader", evaluate)


def predict(folder: Path, texts):
    """Plain transformers on a saved model folder: label names and class probabilities."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        enc = tok(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
        probs = model(**enc).logits.softmax(-1)
    labels = [model.config.id2label[i] for i in probs.argmax(-1).tolist()]
    return labels, probs.tolist(), [model.config.id2label[i] for i in range(probs.shape[1])]


def check_arm_folder(folder: Path, lines, arm: str, shipped: str):
    """The folder holds ``arm``'s model (it reproduces that arm's recorded test predictions) and a
    card that says which arm it is and which one the run shipped."""
    labels, probs, names = predict(folder, [line["text"] for line in lines])
    assert labels == [line[arm]["label"] for line in lines]
    for p, line in zip(probs, lines):
        assert p == pytest.approx([line[arm]["scores"][n] for n in names], abs=1e-5)
    meta = ModelCard.load(folder / "README.md").data.to_dict()["textransfer"]
    assert meta["arm"] == arm and meta["shipped"] == shipped
    assert set(meta["metrics"]) == {"transfer", "baseline"}


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@pytest.mark.parametrize("favoured, other, keep", [("baseline", "transfer", False), ("transfer", "baseline", True)])
def test_validation_chooses_the_shipped_arm(fast_config, tmp_path, monkeypatch, favoured, other, keep):
    stage = {"transfer": "target", "baseline": "baseline"}  # the stages' (trainers') names
    scripted_validation(monkeypatch, {stage[favoured]: 0.9, stage[other]: 0.6})
    fast_config.keep_checkpoints = keep
    out = tmp_path / "run"
    results = run_transfer(fast_config, output_dir=out)
    assert results["selected"]["arm"] == favoured
    assert results["selected"]["validation"] == {favoured: 0.9, other: 0.6}
    assert f"the {favoured} " in results["selected"]["reason"] and "validation accuracy" in results["selected"]["reason"]
    assert json.loads((out / "results.json").read_text())["selected"] == results["selected"]
    table = results_table(results)
    assert f"Shipped as model/: the {favoured} model" in table and f"The {other} model is in models/{other}/." in table

    # model/ is the favoured arm, models/<other>/ the other: each reproduces its own column of test_predictions
    lines = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    check_arm_folder(out / "model", lines, favoured, shipped=favoured)
    check_arm_folder(out / "models" / other, lines, other, shipped=favoured)
    assert not (out / "models" / favoured).exists()
    assert f"the run shipped the **{favoured}** model" in (out / "models" / other / "README.md").read_text()

    # the choice reads validation only: swap the arms' test metrics and it stays
    typed = RunResults.from_dict(results)
    t, b = typed.target.transfer, typed.target.baseline
    typed.target.transfer, typed.target.baseline = (dataclasses.replace(t, metrics=b.metrics),
                                                    dataclasses.replace(b, metrics=t.metrics))
    assert select_arm(typed, fast_config, "target").arm == favoured

    # disk: checkpoints are gone once the run finished, unless kept; each model is stored once
    assert (out / "checkpoints").is_dir() == keep
    if keep:  # kept checkpoints keep the baseline's record whole: it was copied, not moved
        assert (out / "checkpoints" / "baseline" / "model" / "config.json").is_file()
    else:
        assert folder_size(out) <= 2.5 * folder_size(out / "model")


def test_test_predictions_follow_the_dataset_rows(fast_config, tmp_path):
    out = tmp_path / "run"
    results = run_transfer(fast_config, output_dir=out)
    test = load_task(fast_config.target).splits["test"]
    lines = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines()]
    names = results["target"]["label_names"]
    assert [line["row"] for line in lines] == test["row"]  # every test row once, in the split's order
    assert [line["text"] for line in lines] == test["text"]
    assert [line["label"] for line in lines] == [names[i] for i in test["labels"]]
    for line in lines:
        for arm in ("transfer", "baseline"):
            scores = line[arm]["scores"]
            assert set(scores) == set(names) and sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
            assert line[arm]["label"] == max(scores, key=scores.get)
    # the file's predictions give the run's test metrics
    for arm in ("transfer", "baseline"):
        accuracy = sum(line[arm]["label"] == line["label"] for line in lines) / len(lines)
        assert accuracy == pytest.approx(results["target"][arm]["metrics"]["accuracy"])
    assert "scores" not in json.dumps(results) and "rows" not in results["target"]["transfer"]  # not in results.json


def test_rows_come_from_the_length_order_when_a_strategy_records_none():
    """A strategy's predictions without row ids are in the test split's length-sorted order."""
    from datasets import Dataset

    ds = Dataset.from_dict({"row": [1, 2, 3, 4], "length": [3, 9, 5, 9]})  # sorted: rows 2, 4, 3, 1
    test = TestPredictions({}, predictions=[1, 0, 1, 0], references=[0, 0, 0, 0])
    assert {row: e["label"] for row, e in arm_by_row(test, ds, ["no", "yes"]).items()} == \
        {2: "yes", 4: "no", 3: "yes", 1: "no"}
    recorded = dataclasses.replace(test, rows=[4, 3, 2, 1], scores=[[0.2, 0.8], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    mapped = arm_by_row(recorded, ds, ["no", "yes"])
    assert mapped[4] == {"label": "yes", "scores": {"no": 0.2, "yes": 0.8}} and mapped[1]["label"] == "no"


def _results(transfer_val, baseline_val, kind="target"):
    def stage(value):
        history = [] if value is None else [{"epoch": 1, "eval_accuracy": value - 0.1}, {"epoch": 2, "eval_accuracy": value}]
        return {"task": "t", "metrics": {"accuracy": 0.5}, "history": history, "best_epoch": 2, "stopped_early": False,
                "parameters": {}, "kind": kind}

    return RunResults.from_dict({"model": "m", "seed": 1, "strategy": {"name": "x"},
                                 "target": {"task": "t", "label_names": ["a", "b"], "test_rows": 4,
                                            "transfer": stage(transfer_val), "baseline": stage(baseline_val)}})


def test_ship_overrides_and_unsupervised_adaptation(sample_run_config):
    cfg = sample_run_config
    assert select_arm(_results(0.6, 0.9), cfg, "target").arm == "baseline"
    cfg.ship = "transfer"  # forced, whatever validation says; the reason says so
    forced = select_arm(_results(0.6, 0.9), cfg, "target")
    assert forced.arm == "transfer" and "`ship: transfer`" in forced.reason and forced.validation["baseline"] == 0.9
    # unsupervised adaptation: no target label may choose; the adapted model ships unless `ship` says otherwise
    cfg.ship = "best"
    adapted = select_arm(_results(None, 0.9, kind="source_only"), cfg, "source_only")
    assert adapted.arm == "transfer" and "unsupervised adaptation" in adapted.reason and adapted.validation == {}
    cfg.ship = "baseline"
    assert select_arm(_results(None, 0.9, kind="source_only"), cfg, "source_only").arm == "baseline"
    # the last epoch's score counts when the best weights are not restored
    cfg.ship = "best"
    cfg.target_training.load_best_model_at_end = False
    assert select_arm(_results(0.9, 0.85), cfg, "target").validation == {"transfer": 0.9, "baseline": 0.85}


def test_ship_baseline_without_a_baseline_fails_before_training(sample_run_config, tmp_path):
    sample_run_config.ship = "baseline"
    sample_run_config.baseline = False
    with pytest.raises(ConfigError, match="`ship: baseline` but this run trains no baseline"):
        run_transfer(sample_run_config, output_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_resume_of_a_finished_run_says_it_is_finished(sample_run_config, tmp_path):
    out = tmp_path / "done"
    out.mkdir()
    (out / "config.yaml").write_text(sample_run_config.to_yaml())
    (out / "results.json").write_text("{}")
    with pytest.raises(OutputDirError, match="has finished .* nothing to resume"):
        check_resumable(out, out / "checkpoints" / "config.yaml", sample_run_config)
    other = RunConfig.from_dict(dict(sample_run_config.to_dict(), seed=7))
    with pytest.raises(ConfigError, match="seed: 42 -> 7"):  # a changed config is still named first
        check_resumable(out, out / "checkpoints" / "config.yaml", other)
