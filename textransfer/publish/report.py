"""Reading a run: the results table, learning curves, confusion matrix and transfer-gain plots.

Each takes a run's results as a `RunResults` or as the ``results.json`` dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..training.results import AutoSelection, RunResults, as_run_results

Results = Union[RunResults, Mapping[str, Any]]

# top of the score axis: scores end at 1, and the legend sits above the bars
SCORE_AXIS_TOP = 1.25
# room above and below the gain intervals, as a share of their span
GAIN_AXIS_PAD = 0.15
# learning curves: one marker shape per stage (source, transfer, baseline, ...), the first drawn
# this large and each later one 3 points smaller, so stages on the same point stay visible
STAGE_MARKERS = ("o", "s", "^", "D", "v")
MARKER_SIZE = 13
# at most about this many epoch ticks, so long runs keep a readable axis
MAX_EPOCH_TICKS = 12


def format_score(value: Any, signed: bool = False) -> str:
    """A metric value to four decimals (with its sign for a gain); ``-`` when there is none."""
    if not isinstance(value, (int, float)):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_interval(interval: Optional[Dict[str, float]]) -> str:
    """A gain's interval as ``[low, high]``; ``-`` when there is none."""
    return f"[{interval['low']:+.4f}, {interval['high']:+.4f}]" if interval else "-"


def results_table(results: Results) -> str:
    """A plain-text table: target metrics for transfer and baseline, the gain and its interval."""
    results = as_run_results(results)
    target = results.target
    transfer = target.transfer.metrics
    baseline = target.baseline.metrics if target.baseline else {}
    gains, intervals = results.verdict.gain, results.verdict.gain_ci or {}
    rows = [("metric", "transfer", "baseline", "gain", "gain 95% CI")]
    rows += [(k, format_score(transfer.get(k)), format_score(baseline.get(k)), format_score(gains.get(k), signed=True),
              format_interval(intervals.get(k))) for k in transfer]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = [f"Target task '{target.task}' ({'?' if target.test_rows is None else target.test_rows} test rows)"]
    if results.source is not None and results.source.metrics:
        sm = results.source.metrics
        head.insert(0, f"Source task '{results.source.task}': test accuracy {format_score(sm.get('accuracy'))}, "
                       f"macro-F1 {format_score(sm.get('f1'))}")
    verdict = results.verdict.text
    return "\n".join(head + lines + ([verdict] if verdict else []) + shipped_lines(results))


def shipped_lines(results: RunResults) -> List[str]:
    """Which arm the run shipped as ``model/`` and why, and where the other one is."""
    if results.auto is not None:
        return auto_lines(results.auto)
    selected = results.selected
    if selected is None:
        return []
    lines = [f"Shipped as model/: the {selected.arm} model. Why: {selected.reason}."]
    lines += [f"The {arm} model is in {selected.folder(arm)}/." for arm in ("transfer", "baseline")
              if arm != selected.arm and results.arm_stage(arm) is not None]
    return lines


def candidate_rows(auto: AutoSelection) -> List[Tuple[str, str, str, str]]:
    """``(candidate, validation score, test score, model folder)`` per candidate of an automatic
    choice, on its metric; the shipped one is marked."""
    return [(name + (" (shipped)" if name == auto.chosen else ""), format_score(c.validation),
             format_score(c.test.get(auto.metric)), auto.folder(name) + "/") for name, c in auto.candidates.items()]


def auto_lines(auto: AutoSelection) -> List[str]:
    """The automatic choice (``strategy: auto``): every candidate's scores, and what was shipped and why."""
    rows = [("candidate", f"validation {auto.metric}", f"test {auto.metric}", "model")] + candidate_rows(auto)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return ["", "Automatic choice, on validation only (test scores are reported, never used to choose):", *lines,
            f"Shipped as model/: {auto.chosen}. Why: {auto.reason}."]


def plot_learning_curves(results: Results, path: Path, metric: str = "accuracy") -> Optional[Path]:
    """Validation metric and training loss per epoch for every stage.

    Built to read with one epoch too, where each curve is a single point: every stage has its own
    marker shape, drawn largest first so that stages at the same value show as nested shapes rather
    than hiding each other; a lone point is labelled with its value; the epoch axis has whole-epoch
    ticks and half an epoch of room on each side.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = {name: stage.history for name, stage in as_run_results(results).stages().items() if stage.history}
    if not stages:
        return None
    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (name, history) in enumerate(stages.items()):
        style = dict(marker=STAGE_MARKERS[i % len(STAGE_MARKERS)], markersize=MARKER_SIZE - 3 * i, label=name,
                     markerfacecolor="none" if i < len(stages) - 1 else None, markeredgewidth=2)
        epochs = [h["epoch"] for h in history]
        if any(f"eval_{metric}" in h for h in history):
            _curve(ax_m, epochs, [h.get(f"eval_{metric}") for h in history], style)
        _curve(ax_l, epochs, [h["train_loss"] for h in history], style)
    last = max(h["epoch"] for history in stages.values() for h in history)
    ax_m.set_title(f"validation {metric}")
    ax_m.set_ylabel(metric)
    ax_l.set_title("training loss")
    ax_l.set_ylabel("mean training loss of the epoch")
    for ax in (ax_m, ax_l):
        ax.set_xlim(0.5, last + 0.5)
        ax.set_xticks(range(1, last + 1, max(1, last // MAX_EPOCH_TICKS)))
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curve(ax, epochs: List[int], values: List[Optional[float]], style: Dict[str, Any]) -> None:
    """One stage's curve; a single point gets its value written beside it."""
    ax.plot(epochs, values, **style)
    if len(values) == 1 and isinstance(values[0], (int, float)):
        ax.annotate(f"{values[0]:.3f}", (epochs[0], values[0]), xytext=(10, 0), textcoords="offset points",
                    va="center", fontsize=8)


def plot_transfer_gain(results: Results, path: Path) -> Optional[Path]:
    """Left: transfer and baseline test scores per metric. Right: the gain (transfer - baseline) per
    metric with its paired-bootstrap 95% interval as error bars, and the zero line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    results = as_run_results(results)
    transfer = results.target.transfer.metrics
    baseline = results.target.baseline.metrics if results.target.baseline else None
    if not baseline:
        return None
    names = [k for k in transfer if isinstance(transfer[k], float) and k in baseline]
    x = np.arange(len(names))
    fig, (ax_s, ax_g) = plt.subplots(1, 2, figsize=(11, 4))
    ax_s.bar(x - 0.2, [transfer[k] for k in names], 0.4, label="transfer")
    ax_s.bar(x + 0.2, [baseline[k] for k in names], 0.4, label="baseline (no transfer)")
    ax_s.set_xticks(x, names)
    ax_s.set_ylim(0, SCORE_AXIS_TOP)
    ax_s.set_xlabel("metric (macro average for f1, precision, recall)")
    ax_s.set_ylabel("target test score")
    ax_s.set_title("target test scores")
    ax_s.legend(loc="upper center", ncol=2)
    _gain_bars(ax_g, results, names)
    title = "transfer vs no-transfer baseline"
    if results.verdict.negative_transfer:
        title += " - NEGATIVE TRANSFER"
    if results.selected is not None:
        title += f" (shipped: {results.selected.arm})"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _gain_bars(ax, results: RunResults, names: List[str]) -> None:
    """The gain per metric as bars, its 95% interval as error bars (none where there is no interval)."""
    import numpy as np

    gains = [results.verdict.gain.get(k, 0.0) for k in names]
    intervals = results.verdict.gain_ci or {}
    # error bars are distances below and above the bar's top; a metric without an interval gets none
    below = [g - intervals[k]["low"] if k in intervals else 0.0 for k, g in zip(names, gains)]
    above = [intervals[k]["high"] - g if k in intervals else 0.0 for k, g in zip(names, gains)]
    colours = ["tab:green" if g >= 0 else "tab:red" for g in gains]
    x = np.arange(len(names))
    width = 0.5
    ax.bar(x, gains, width, color=colours, yerr=[below, above], capsize=6, ecolor="black")
    for i, g in enumerate(gains):  # the value beside its bar, clear of the error bar on the bar's centre
        ax.annotate(f"{g:+.3f}", (i + width / 2, g), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=8)
    # zero always in view, with room around the intervals (an axis ending exactly at 0 hides the line)
    low = min([0.0] + [g - b for g, b in zip(gains, below)])
    high = max([0.0] + [g + a for g, a in zip(gains, above)])
    pad = GAIN_AXIS_PAD * max(high - low, 1e-3)
    ax.set_ylim(low - pad, high + pad)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, names)
    ax.set_xlabel("metric")
    ax.set_ylabel("gain: transfer - baseline")
    ax.set_title("gain with its 95% interval (paired bootstrap)")


def plot_confusion_matrix(predictions: List[int], references: List[int], label_names: List[str], path: Path,
                          title: str = "confusion matrix") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..metrics.confusion import confusion_matrix

    n = len(label_names)
    cm = confusion_matrix(predictions, references, n)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.2 * n + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(n), label_names, rotation=45, ha="right")
    ax.set_yticks(range(n), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
