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

from .scores import AVERAGED


def _scores(pred: np.ndarray, ref: np.ndarray, num_labels: int) -> Dict[str, np.ndarray]:
    """Accuracy and macro P/R/F1 for each row of (resamples, n) arrays, vectorised."""
    correct = pred == ref
    out = {"accuracy": correct.mean(axis=1)}
    precision, recall = [], []
    for c in range(num_labels):
        tp = (correct & (ref == c)).sum(axis=1).astype(np.float64)
        pp = (pred == c).sum(axis=1)
        tt = (ref == c).sum(axis=1)
        precision.append(np.divide(tp, pp, out=np.zeros_like(tp), where=pp > 0))
        recall.append(np.divide(tp, tt, out=np.zeros_like(tp), where=tt > 0))
    p, r = np.stack(precision), np.stack(recall)
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    out.update({"precision": p.mean(axis=0), "recall": r.mean(axis=0), "f1": f1.mean(axis=0)})
    return out


def paired_bootstrap(
    transfer_pred: Sequence[int],
    baseline_pred: Sequence[int],
    references: Sequence[int],
    num_labels: int,
    resamples: int = 1000,
    seed: int = 0,
    chunk: int = 200,
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
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(m, n))
        st, sb = _scores(t[idx], y[idx], num_labels), _scores(b[idx], y[idx], num_labels)
        for k in diffs:
            diffs[k].append(st[k] - sb[k])
    out = {}
    for k, parts in diffs.items():
        d = np.concatenate(parts)
        out[k] = {"low": float(np.percentile(d, 2.5)), "high": float(np.percentile(d, 97.5)), "std": float(d.std())}
    return out
