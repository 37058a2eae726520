"""report_to and logging_steps: Accelerate's trackers, read back from TensorBoard's own event files."""

import importlib.util

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from textransfer import ConfigError, run_transfer
from textransfer.training.accelerator import (PROJECT_NAME, flat_config, make_accelerator, start_tracking,
                                               tracker_names)


def scalars(run_dir):
    """``{tag: [(step, value), ...]}`` from the run's TensorBoard event files."""
    events = EventAccumulator(str(run_dir / "logs" / PROJECT_NAME))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_logs_loss_learning_rate_and_eval_metrics_per_stage(sample_run_config, tmp_path):
    sample_run_config.report_to = ["tensorboard"]
    sample_run_config.logging_steps = 2
    out = tmp_path / "run"
    results = run_transfer(sample_run_config, output_dir=out)
    logged = scalars(out)
    stages = {"source": results["source"], "target": results["target"]["transfer"],
              "baseline": results["target"]["baseline"]}
    start = 0  # the stages share one step axis, one after the other (wandb drops steps that go back)
    for name, stage in stages.items():
        steps = stage["optimizer_steps"]
        assert steps >= 4
        loss, lr = logged[f"{name}/train_loss"], logged[f"{name}/learning_rate"]
        # one point every logging_steps optimiser steps
        assert [s for s, _ in loss] == [start + k for k in range(2, steps + 1, 2)]
        assert [s for s, _ in lr] == [s for s, _ in loss]
        assert all(v > 0 for _, v in loss)
        assert lr[0][1] > 0 and all(a >= b for (_, a), (_, b) in zip(lr, lr[1:]))  # linear decay, past the warmup
        # the validation metrics after each epoch, as results.json's history has them
        history = stage["history"]
        evals = logged[f"{name}/eval_accuracy"]
        assert [s for s, _ in evals] == [start + h["step"] for h in history]
        assert [v for _, v in evals] == pytest.approx([h["eval_accuracy"] for h in history])
        start += steps


def test_logged_loss_is_the_mean_of_the_batches_since_the_last_log(sample_run_config, tmp_path):
    """logging_steps=1 logs every batch's loss; an epoch's points average to its train_loss."""
    sample_run_config.report_to = ["tensorboard"]
    sample_run_config.logging_steps = 1
    sample_run_config.baseline = False
    sample_run_config.source_training.num_epochs = 2
    results = run_transfer(sample_run_config, output_dir=tmp_path / "run")
    loss = [v for _, v in scalars(tmp_path / "run")["source/train_loss"]]
    history = results["source"]["history"]
    first = history[0]["step"]
    assert len(loss) == history[-1]["step"]
    assert sum(loss[:first]) / first == pytest.approx(history[0]["train_loss"], rel=1e-5)
    assert sum(loss[first:]) / (len(loss) - first) == pytest.approx(history[1]["train_loss"], rel=1e-5)


def test_no_report_to_starts_no_tracker_and_writes_no_logs(tmp_path):
    acc = make_accelerator(output_dir=tmp_path)
    start_tracking(acc, {"seed": 1}, run_name="run")
    assert acc.trackers == [] and not (tmp_path / "logs").exists()


def test_unknown_tracker_fails_before_anything_with_did_you_mean(sample_run_config, tmp_path):
    sample_run_config.report_to = ["tensorbord"]
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'. Did you mean 'tensorboard'") as err:
        run_transfer(sample_run_config, output_dir=tmp_path / "run")
    assert err.value.option == "report_to"
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("comet_ml") is not None, reason="comet_ml is installed")
def test_a_tracker_not_installed_names_its_pip_package():
    with pytest.raises(ConfigError, match="comet_ml is not installed; `pip install comet-ml`"):
        tracker_names(["comet_ml"])


def test_all_is_every_installed_tracker_and_none_is_none(tmp_path):
    assert "tensorboard" in tracker_names(["all"], tmp_path)
    assert tracker_names(["none"]) == []
    assert tracker_names("tensorboard", tmp_path) == ["tensorboard"]  # a YAML scalar instead of a list


def test_tensorboard_needs_an_output_directory():
    with pytest.raises(ConfigError, match="under the output directory"):
        make_accelerator(report_to=["tensorboard"])


def test_config_is_flattened_to_what_tensorboard_hparams_take():
    flat = flat_config({"seed": 1, "target": {"name": "t", "label_names": ["a", "b"], "k_per_class": None}})
    assert flat == {"seed": 1, "target.name": "t", "target.label_names": '["a", "b"]', "target.k_per_class": "null"}
