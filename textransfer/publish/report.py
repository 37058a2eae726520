"""Reading a run: the results table, learning curves, confusion matrix and transfer-gain plots.

Each takes a run's results as a `RunResults` or as the ``results.json`` dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from ..training.results import RunResults, as_run_results

Results = Union[RunResults, Mapping[str, Any]]


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
    return "\n".join(head + lines + ([verdict] if verdict else []))


def plot_learning_curves(results: Results, path: Path, metric: str = "accuracy") -> Optional[Path]:
    """Validation metric and training loss per epoch for every stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    stages = {name: stage.history for name, stage in as_run_results(results).stages().items() if stage.history}
    if not stages:
        return None
    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    for name, history in stages.items():
        epochs = [h["epoch"] for h in history]
        if any(f"eval_{metric}" in h for h in history):
            ax_m.plot(epochs, [h.get(f"eval_{metric}") for h in history], marker="o", label=name)
        ax_l.plot(epochs, [h["train_loss"] for h in history], marker="o", label=name)
    ax_m.set_title(f"validation {metric}")
    ax_l.set_title("training loss")
    for ax in (ax_m, ax_l):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_transfer_gain(results: Results, path: Path) -> Optional[Path]:
    """Bars of transfer vs baseline per metric, with the gain's 95% interval written above."""
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
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, [transfer[k] for k in names], 0.4, label="transfer")
    ax.bar(x + 0.2, [baseline[k] for k in names], 0.4, label="baseline (no transfer)")
    for i, k in enumerate(names):
        gain = results.verdict.gain.get(k)
        if gain is not None:
            ax.annotate(f"{gain:+.3f}", (i, max(transfer[k], baseline[k])), ha="center", va="bottom")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.08)
    title = "target test metrics"
    if results.verdict.negative_transfer:
        title += " - NEGATIVE TRANSFER"
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
