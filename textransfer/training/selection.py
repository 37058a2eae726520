"""Which validation score is the better one: the rule that early stopping, the best weights of a
stage and the feature heads (``strategies/features.py``) share."""

from __future__ import annotations

from typing import Optional

# A metric whose name contains one of these measures an error ("loss", "eval_loss"): lower is
# better. Every other metric (accuracy, f1, ...) is a score: higher is better.
LOWER_IS_BETTER_MARKERS = ("loss",)


def lower_is_better(metric: str) -> bool:
    return any(marker in metric for marker in LOWER_IS_BETTER_MARKERS)


def is_better(value: float, best: Optional[float], metric: str) -> bool:
    """True when ``value`` beats ``best`` on ``metric`` (any value beats ``best=None``)."""
    if best is None:
        return True
    return value < best if lower_is_better(metric) else value > best
