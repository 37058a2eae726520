"""Metrics through ``evaluate``, with offline fallbacks for the defaults.

``evaluate.load("accuracy")`` fetches the metric's script from the Hub. Where the Hub cannot
be reached and nothing is cached, the default metrics (accuracy and macro F1 / precision /
recall) fall back to the ``evaluate.Metric`` subclasses below, which report the same keys, so
an offline run and an online run produce the same ``results.json`` layout. We write these
four ourselves (in numpy) only because they cannot be fetched; every other metric name is
passed to ``evaluate.load`` as it is.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Sequence

import datasets
import evaluate
import numpy as np

from ..errors import ConfigError
from .confusion import ClassScores, confusion_matrix, macro_average, per_class

logger = logging.getLogger(__name__)

# Metrics averaged over classes: macro averaging treats every class alike, which is what
# a shifted or imbalanced target task needs (evaluate's own default for f1 is "binary").
AVERAGED = ("f1", "precision", "recall")


def _present_class_scores(predictions, references) -> ClassScores:
    """Per-class scores over the labels that occur in either list, as scikit-learn counts them
    (an offline metric is not told how many classes there are)."""
    p = np.asarray(predictions, dtype=np.int64)
    r = np.asarray(references, dtype=np.int64)
    labels = np.union1d(p, r)
    conf = confusion_matrix(np.searchsorted(labels, p), np.searchsorted(labels, r), len(labels))
    return per_class(conf)


def _info(name: str, description: str) -> evaluate.MetricInfo:
    return evaluate.MetricInfo(
        description=description,
        citation="",
        inputs_description="predictions: list of int class ids; references: list of int class ids.",
        features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        module_name=name,
    )


class Accuracy(evaluate.Metric):
    """Offline stand-in for ``evaluate.load("accuracy")``."""

    def _info(self):
        return _info("accuracy", "Share of predictions equal to the reference.")

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        correct = np.asarray(predictions) == np.asarray(references)
        return {"accuracy": float(correct.mean() if normalize else correct.sum())}


class _Averaged(evaluate.Metric):
    key = ""  # the ClassScores field it averages, and the key it reports

    def _info(self):
        return _info(self.key, f"{self.key} averaged over classes (macro by default).")

    def _compute(self, predictions, references, average="macro", **_):
        scores = _present_class_scores(predictions, references)
        values = getattr(scores, self.key)
        if average == "macro":
            return {self.key: float(macro_average(values))}
        if average is None:
            return {self.key: values.tolist()}
        if average == "micro":
            return {self.key: float(np.mean(np.asarray(predictions) == np.asarray(references)))}
        if average == "weighted":
            support = scores.support.astype(np.float64)
            return {self.key: float((values * support).sum() / support.sum())}
        raise ValueError(f"average={average!r} is not supported by the offline {self.key} metric.")


class Precision(_Averaged):
    key = "precision"


class Recall(_Averaged):
    key = "recall"


class F1(_Averaged):
    key = "f1"


OFFLINE_METRICS = {"accuracy": Accuracy, "f1": F1, "precision": Precision, "recall": Recall}


def _hub_unreachable() -> bool:
    flags = ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(f, "0").lower() in ("1", "true", "yes", "on") for f in flags)


_cache: Dict[str, evaluate.EvaluationModule] = {}


def load_metric(name: str) -> evaluate.EvaluationModule:
    """``evaluate.load(name)``, or the offline implementation for the default metrics."""
    if name in _cache:
        return _cache[name]
    module = None
    if not (_hub_unreachable() and name in OFFLINE_METRICS):
        try:
            module = evaluate.load(name)
        except Exception as err:  # network, missing script, import errors: all mean "not available"
            if name not in OFFLINE_METRICS:
                raise ConfigError(
                    f"`metrics`: cannot load metric '{name}' with evaluate ({type(err).__name__}: {err}). "
                    f"Offline, only {sorted(OFFLINE_METRICS)} are available."
                ) from None
            logger.info("evaluate.load(%r) failed (%s); using the offline implementation.", name, type(err).__name__)
    if module is None:
        module = OFFLINE_METRICS[name]()
    _cache[name] = module
    return module


def compute_metrics(predictions: Sequence[int], references: Sequence[int], names: List[str]) -> Dict[str, float]:
    """Compute each metric in ``names``; class-averaged ones use ``average="macro"``."""
    out: Dict[str, float] = {}
    for name in names:
        metric = load_metric(name)
        kwargs = {"average": "macro"} if name in AVERAGED else {}
        result = metric.compute(predictions=list(map(int, predictions)), references=list(map(int, references)), **kwargs)
        for key, value in result.items():
            out[key] = float(value) if np.ndim(value) == 0 else value
    return out
