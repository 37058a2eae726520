"""The verdict on the transfer arm: its gain over the no-transfer baseline, and what could hide a loss.

Two things can make a one-line verdict mislead, and both are said out loud here:

* **metrics that disagree**: on an imbalanced target, accuracy can rise beyond noise while
  macro-F1 falls beyond noise (the transfer model learned to favour the frequent classes).
  When one metric's gain interval lies wholly above 0 and another's wholly below, the verdict
  names both, whatever the primary metric says.
* **accuracy on an imbalanced test split**: when the largest class has more than
  ``IMBALANCE_RATIO`` times the rows of the smallest, a model that predicts the frequent classes
  scores well on accuracy. A run that chooses (best epoch, early stopping, the shipped arm) and
  judges on accuracy there gets a warning saying so.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence

from ..config import RunConfig
from ..metrics.significance import paired_bootstrap
from ..training.results import NoiseTest, TestPredictions, Verdict

logger = logging.getLogger(__name__)

# A test split whose largest class has more than this many times the rows of its smallest is
# imbalanced enough that always answering a frequent class earns a high accuracy: at 3x on two
# classes, answering the majority alone scores 75%. (The case, 10 classes with 8 labels
# each, had accuracy up while macro-F1 fell beyond noise.)
IMBALANCE_RATIO = 3.0
# the metric that weighs each class alike, suggested in place of accuracy
MACRO_METRIC = "f1"


def judge_transfer(transfer: TestPredictions, baseline: TestPredictions, cfg: RunConfig, num_labels: int) -> Verdict:
    """The gain over the baseline per metric, its paired-bootstrap 95% interval, and the verdict on
    the primary metric (``metric_for_best_model``): negative transfer when the interval is below 0;
    metrics whose intervals disagree in sign are named in the verdict."""
    t, b = transfer.metrics, baseline.metrics
    gain = {k: t[k] - b[k] for k in t if isinstance(t[k], float) and isinstance(b.get(k), float)}
    assert transfer.references == baseline.references, "transfer and baseline saw different test sets"
    ci = paired_bootstrap(transfer.predictions, baseline.predictions, transfer.references, num_labels,
                          resamples=cfg.noise_resamples, seed=cfg.seed)
    gain_ci = {k: v for k, v in ci.items() if k in gain}
    primary = cfg.target_training.metric_for_best_model
    interval, value = gain_ci.get(primary), gain.get(primary, 0.0)
    if interval is not None:
        negative, positive = interval["high"] < 0, interval["low"] > 0
    else:  # a metric without a bootstrap: fall back to the sign alone
        negative, positive = value < 0, value > 0
    verdict = Verdict(gain=gain, gain_ci=gain_ci, negative_transfer=bool(negative),
                      noise_test=NoiseTest(metric=primary, resamples=cfg.noise_resamples))
    verdict.text = verdict_text(primary, value, negative, positive)
    conflict = disagreement_text(verdict)
    if conflict:
        verdict.text += " " + conflict
    return verdict


def verdict_text(metric: str, gain: float, negative: bool, positive: bool) -> str:
    if negative:
        return (f"NEGATIVE TRANSFER: {metric} {gain:+.4f} vs the no-transfer baseline, "
                f"beyond noise (95% CI entirely below 0).")
    if positive:
        return f"Transfer helped: {metric} {gain:+.4f} vs the no-transfer baseline (95% CI above 0)."
    return f"No significant difference: {metric} {gain:+.4f} vs the no-transfer baseline (95% CI spans 0)."


def _named(verdict: Verdict, metrics: List[str]) -> str:
    ci = verdict.gain_ci or {}
    return ", ".join(f"{m} {verdict.gain.get(m, 0.0):+.4f} [{ci[m]['low']:+.4f}, {ci[m]['high']:+.4f}]"
                     for m in metrics)


def disagreement_text(verdict: Verdict) -> Optional[str]:
    """A sentence naming the metrics whose gain intervals lie on opposite sides of 0, or None."""
    above, below = verdict.disagreement()
    if not (above and below):
        return None
    return (f"BUT THE METRICS DISAGREE: the transfer model is better beyond noise on {_named(verdict, above)} "
            f"and worse beyond noise on {_named(verdict, below)} (95% CIs); it trades one for the other, so "
            f"check the per-class results before relying on one number.")


def class_imbalance(class_counts: Sequence[int]) -> Optional[float]:
    """The largest class's rows over the smallest's (``inf`` when a class has none); None without counts."""
    counts = [int(c) for c in class_counts or []]
    if len(counts) < 2:
        return None
    return float("inf") if min(counts) == 0 else max(counts) / min(counts)


def imbalance_warning(class_counts: Optional[Sequence[int]], label_names: Sequence[str], metric: str,
                      metrics: Sequence[str] = (MACRO_METRIC,)) -> Optional[str]:
    """Why accuracy misleads on this test split, or None (balanced enough, or another metric chosen).

    Why a warning rather than switching ``metric_for_best_model`` to macro-F1 ourselves: the
    config cannot tell an ``accuracy`` the user chose from the default, and quietly choosing
    the best epoch, the early stop and the shipped model on another metric than the one the
    config (and ``config.yaml``) names would make a run do what nobody asked. The warning names
    the override that makes the switch.
    """
    ratio = class_imbalance(class_counts or [])
    if metric != "accuracy" or ratio is None or ratio <= IMBALANCE_RATIO:
        return None
    counts = list(class_counts)
    big, small = counts.index(max(counts)), counts.index(min(counts))
    times = "the smallest has none" if ratio == float("inf") else f"{ratio:.1f}x the smallest"
    fix = f"target_training.metric_for_best_model={MACRO_METRIC}"
    if MACRO_METRIC not in metrics:
        fix += f"` and add `{MACRO_METRIC}` to `metrics"
    return (f"The target test split is imbalanced ('{label_names[big]}' has {counts[big]} rows, "
            f"'{label_names[small]}' {counts[small]}: {times}, over the {IMBALANCE_RATIO:g}x limit), so accuracy "
            f"mostly measures the frequent classes: a model that favours them can gain accuracy while it loses "
            f"the rare ones. This run chooses its best epochs and shipped model, and judges the transfer, on "
            f"accuracy; set `{fix}` (macro-F1 weighs every class alike) to choose and judge on all classes.")


def warn_if_imbalanced(cfg: RunConfig, class_counts: Optional[Sequence[int]], label_names: Sequence[str],
                       main_process: bool = True) -> Optional[str]:
    """:func:`imbalance_warning` for the run's target, logged once (main process) before training."""
    warning = imbalance_warning(class_counts, label_names, cfg.target_training.metric_for_best_model, cfg.metrics)
    if warning and main_process:
        logger.warning(warning)
    return warning
