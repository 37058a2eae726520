"""Is the transfer gain beyond noise? A paired bootstrap over the target test examples.

Transfer and baseline are scored on the same test examples, so the right question is about
the *paired* difference: resample test examples with replacement (the same indices for both
models), recompute each metric for both, and take the 2.5 / 97.5 percentiles of the
difference. Negative transfer is flagged when the whole interval is below zero, i.e. the
transfer model is worse than the baseline beyond what resampling the test set explains.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from .confusion import confusion_matrix, macro_average, per_class
from .scores import AVERAGED


# Resamples drawn and scored at once: a (chunk, n) index array bounds memory on large test
# sets. The draws are made a chunk at a time, so this is part of what a seed reproduces.
RESAMPLES_PER_CHUNK = 200
# the two-sided 95% interval of the paired difference
INTERVAL_PERCENTILES = (2.5, 97.5)


def _scores(pred: np.ndarray, ref: np.ndarray, num_labels: int) -> Dict[str, np.ndarray]:
    """Accuracy and macro P/R/F1 for each row of (resamples, n) arrays, vectorised."""
    scores = per_class(confusion_matrix(pred, ref, num_labels))
    out = {"accuracy": (pred == ref).mean(axis=1)}
    out.update({name: macro_average(getattr(scores, name)) for name in AVERAGED})
    return out


def paired_bootstrap(
    transfer_pred: Sequence[int],
    baseline_pred: Sequence[int],
    references: Sequence[int],
    num_labels: int,
    resamples: int = 1000,
    seed: int = 0,
) -> Dict[str, Dict[str, float]]:
    """95% intervals of ``metric(transfer) - metric(baseline)`` for accuracy and macro P/R/F1.

    Returns ``{metric: {"low": ..., "high": ..., "std": ...}}``.
    """
    t = np.asarray(transfer_pred)
    b = np.asarray(baseline_pred)
    y = np.asarray(references)
    n = len(y)
    if n == 0 or resamples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    diffs: Dict[str, list] = {k: [] for k in ("accuracy",) + AVERAGED}
    for start in range(0, resamples, RESAMPLES_PER_CHUNK):
        m = min(RESAMPLES_PER_CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(m, n))
        st, sb = _scores(t[idx], y[idx], num_labels), _scores(b[idx], y[idx], num_labels)
        for k in diffs:
            diffs[k].append(st[k] - sb[k])
    out = {}
    for k, parts in diffs.items():
        d = np.concatenate(parts)
        low, high = (float(np.percentile(d, q)) for q in INTERVAL_PERCENTILES)
        out[k] = {"low": low, "high": high, "std": float(d.std())}
    return out
