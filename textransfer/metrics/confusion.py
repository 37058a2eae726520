"""The one confusion-matrix and per-class-scores kernel (numpy).

Everything that reports per-class numbers goes through here: the offline macro metrics
(``scores``), the paired bootstrap (``significance``, on a stack of resampled test sets at
once), ``evaluate``'s per-class report and the confusion-matrix plot. One formula, so the
numbers agree wherever they are shown.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ClassScores(NamedTuple):
    """Per-class scores, indexed by class id along the last axis."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # true examples of each class (ints)


def confusion_matrix(predictions, references, num_labels: int) -> np.ndarray:
    """Counts ``[..., true, predicted]`` of class ids ``0 .. num_labels - 1``.

    ``predictions`` and ``references`` are of shape ``(n,)``, or ``(m, n)`` for ``m``
    resamples at once, which gives ``m`` matrices, shape ``(m, num_labels, num_labels)``.
    """
    p = np.asarray(predictions, dtype=np.int64)
    r = np.asarray(references, dtype=np.int64)
    for name, ids in (("prediction", p), ("reference", r)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_labels):
            raise ValueError(f"{name} ids must lie in 0..{num_labels - 1}; got {ids.min()}..{ids.max()}.")
    cells = num_labels * num_labels
    # One bincount over every matrix of the stack: cell (true, predicted) of matrix i is
    # i * cells + true * num_labels + predicted.
    flat = r * num_labels + p
    stacks = int(np.prod(flat.shape[:-1], dtype=np.int64))
    offsets = (np.arange(stacks, dtype=np.int64) * cells).reshape(flat.shape[:-1] + (1,))
    counts = np.bincount((flat + offsets).ravel(), minlength=stacks * cells)
    return counts.reshape(flat.shape[:-1] + (num_labels, num_labels))


def per_class(conf: np.ndarray) -> ClassScores:
    """Precision, recall, F1 and support of every class from a confusion matrix (or a stack).

    A class never predicted (or never present) scores 0, as scikit-learn's ``zero_division``
    does, so offline numbers agree with the Hub metrics.
    """
    conf = np.asarray(conf)
    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(np.float64)
    predicted = conf.sum(axis=-2)
    support = conf.sum(axis=-1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return ClassScores(precision, recall, f1, support)


def macro_average(values: np.ndarray) -> np.ndarray:
    """The mean over classes (the last axis): a float for one matrix, an array for a stack.

    A stack is summed class after class (a contiguous ``(classes, ...)`` array reduced over its
    first axis), the order the bootstrap has always summed in, so its seeded intervals are bit
    for bit those of earlier runs.
    """
    values = np.asarray(values)
    if values.ndim == 1:
        return values.mean()
    return np.ascontiguousarray(np.moveaxis(values, -1, 0)).mean(axis=0)
