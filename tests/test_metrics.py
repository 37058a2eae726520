"""Metrics: the offline evaluate.Metric fallbacks agree with scikit-learn and keep the keys."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

import evaluate
from textransfer import ConfigError, compute_metrics
from textransfer.metrics.scores import OFFLINE_METRICS, load_metric


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_offline_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 4, 200)
    preds = np.where(rng.random(200) < 0.6, refs, rng.integers(0, 4, 200))
    if seed == 2:
        preds[preds == 3] = 0  # a class never predicted: zero precision for it
    out = compute_metrics(preds.tolist(), refs.tolist(), ["accuracy", "f1", "precision", "recall"])
    assert set(out) == {"accuracy", "f1", "precision", "recall"}
    assert out["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert out["f1"] == pytest.approx(f1_score(refs, preds, average="macro", zero_division=0))
    assert out["precision"] == pytest.approx(precision_score(refs, preds, average="macro", zero_division=0))
    assert out["recall"] == pytest.approx(recall_score(refs, preds, average="macro", zero_division=0))


def test_offline_fallbacks_are_evaluate_metrics():
    for name, cls in OFFLINE_METRICS.items():
        metric = load_metric(name)
        assert isinstance(metric, evaluate.Metric) and isinstance(metric, cls)
        metric.add_batch(predictions=[0, 1], references=[0, 0])
        assert name in metric.compute(**({"average": "macro"} if name != "accuracy" else {}))


def test_unknown_metric_offline_is_a_clear_error():
    with pytest.raises(ConfigError, match="metrics.*'no_such_metric_xyz'"):
        compute_metrics([0], [0], ["no_such_metric_xyz"])
