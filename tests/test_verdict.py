"""The verdict does not hide a loss: metrics whose gain intervals disagree in sign are named, and
accuracy on an imbalanced test split comes with a warning saying why it misleads."""

import logging

import pytest
from huggingface_hub import ModelCard

from textransfer import RunConfig
from textransfer.publish.card import render_card
from textransfer.publish.report import results_table
from textransfer.run.verdict import (IMBALANCE_RATIO, class_imbalance, imbalance_warning, judge_transfer,
                                     warn_if_imbalanced)
from textransfer.training.results import (DataSummary, RunResults, StageSummary, TargetResults, TestPredictions,
                                          Verdict)

from conftest import REPO


def _config(**overrides) -> RunConfig:
    cfg = RunConfig.from_yaml(REPO / "recipes" / "news_to_sentiment.yaml")
    cfg.noise_resamples = 400
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _predictions(preds, refs) -> TestPredictions:
    from textransfer.metrics.scores import compute_metrics

    return TestPredictions(compute_metrics(preds, refs, ["accuracy", "f1", "precision", "recall"]), preds, refs)


def favour_the_majority():
    """900 rows of class 0 and 100 of class 1. The transfer model answers 0 every time (accuracy
    0.90, macro-F1 0.47); the baseline finds every 1 but misses 180 of the 0s (accuracy 0.82,
    macro-F1 0.71): accuracy rises beyond noise while macro-F1 falls beyond noise."""
    refs = [0] * 900 + [1] * 100
    transfer = [0] * 1000
    baseline = [0] * 720 + [1] * 180 + [1] * 100
    return _predictions(transfer, refs), _predictions(baseline, refs)


def test_disagreeing_intervals_are_named_in_the_verdict():
    transfer, baseline = favour_the_majority()
    verdict = judge_transfer(transfer, baseline, _config(), num_labels=2)
    assert verdict.gain_ci["accuracy"]["low"] > 0 and verdict.gain_ci["f1"]["high"] < 0  # the constructed case
    assert verdict.text.startswith("Transfer helped: accuracy +0.0800")  # the primary metric, as before
    assert "METRICS DISAGREE" in verdict.text
    better, worse = verdict.text.split("better beyond noise on ")[1].split(" and worse beyond noise on ")
    assert better.startswith("accuracy +0.0800 [")  # both are named, each with its gain and interval
    assert "f1 -0.2" in worse and "recall" in worse
    assert verdict.disagreement() == (["accuracy"], ["f1", "precision", "recall"])
    assert verdict.negative_transfer is False  # the flag stays the primary metric's


def test_agreeing_intervals_say_nothing_more():
    refs = [0] * 50 + [1] * 50
    better = _predictions(refs[:90] + [1 - r for r in refs[90:]], refs)  # 90% right
    worse = _predictions(refs[:60] + [1 - r for r in refs[60:]], refs)  # 60% right
    verdict = judge_transfer(better, worse, _config(), num_labels=2)
    assert verdict.text.startswith("Transfer helped") and "DISAGREE" not in verdict.text
    assert verdict.disagreement()[1] == []


def _results(verdict: Verdict) -> RunResults:
    stage = StageSummary(task="t", metrics={"accuracy": 0.9, "f1": 0.47}, history=[], parameters={})
    base = StageSummary(task="t", metrics={"accuracy": 0.82, "f1": 0.71}, history=[], parameters={})
    return RunResults(model="m", seed=1, strategy={"name": "finetune"}, verdict=verdict,
                      target=TargetResults("t", ["a", "b"], 1000, DataSummary(), stage, base))


def test_the_card_and_the_table_say_the_metrics_disagree():
    transfer, baseline = favour_the_majority()
    results = _results(judge_transfer(transfer, baseline, _config(), num_labels=2))
    card = ModelCard(render_card(results, {}))
    assert "**Mixed result**" in card.text and "gains beyond noise on accuracy but loses beyond noise on f1" in card.text
    assert "METRICS DISAGREE" in card.text and "METRICS DISAGREE" in results_table(results)


@pytest.mark.parametrize("counts, imbalanced", [([90, 10], True), ([31, 10], True), ([30, 10], False),
                                                ([40, 40, 12], True), ([50, 50], False), ([20, 0], True)])
def test_the_imbalance_rule(counts, imbalanced):
    """Over IMBALANCE_RATIO (3x) between the largest and the smallest class is imbalanced; exactly 3x is not."""
    assert IMBALANCE_RATIO == 3.0
    names = [f"class{i}" for i in range(len(counts))]
    warning = imbalance_warning(counts, names, "accuracy")
    assert (warning is not None) == imbalanced
    assert (class_imbalance(counts) > IMBALANCE_RATIO) == imbalanced
    if imbalanced:  # it names the classes, says why accuracy misleads, and the override that fixes it
        big, small = counts.index(max(counts)), counts.index(min(counts))
        assert f"'class{big}' has {counts[big]} rows" in warning and f"'class{small}' {counts[small]}" in warning
        assert "accuracy mostly measures the frequent classes" in warning
        assert "`target_training.metric_for_best_model=f1`" in warning


def test_no_warning_when_the_run_chooses_on_macro_f1():
    assert imbalance_warning([90, 10], ["a", "b"], "f1") is None
    # accuracy chosen and f1 not computed: the fix says to add it too
    assert "add `f1` to `metrics`" in imbalance_warning([90, 10], ["a", "b"], "accuracy", metrics=["accuracy"])


def test_the_run_logs_the_warning_before_training(caplog):
    cfg = _config()
    with caplog.at_level(logging.WARNING, logger="textransfer"):
        warning = warn_if_imbalanced(cfg, [100, 10], ["negative", "positive"])
    assert warning and warning in caplog.text
    cfg.target_training.metric_for_best_model = "f1"
    assert warn_if_imbalanced(cfg, [100, 10], ["negative", "positive"]) is None
