"""Reading a run: the results table, learning curves, confusion matrix and transfer-gain plots."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temp file and rename, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _fmt(v: Optional[float], signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def results_table(results: Dict[str, Any]) -> str:
    """A plain-text table: target metrics for transfer and baseline, the gain and its interval."""
    target = results["target"]
    transfer = target["transfer"]["metrics"]
    baseline = target.get("baseline", {}).get("metrics", {})
    gains = results.get("gain", {})
    ci = results.get("gain_ci", {})
    names = list(transfer)
    rows = [("metric", "transfer", "baseline", "gain", "gain 95% CI")]
    for k in names:
        interval = ci.get(k)
        rows.append((
            k,
            _fmt(transfer.get(k)),
            _fmt(baseline.get(k)),
            _fmt(gains.get(k), signed=True),
            f"[{interval['low']:+.4f}, {interval['high']:+.4f}]" if interval else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = [f"Target task '{results['target']['task']}' ({results['target'].get('test_rows', '?')} test rows)"]
    if "source" in results and results["source"].get("metrics"):
        sm = results["source"]["metrics"]
        head.insert(0, f"Source task '{results['source']['task']}': test accuracy {_fmt(sm.get('accuracy'))}, "
                       f"macro-F1 {_fmt(sm.get('f1'))}")
    verdict = results.get("verdict", "")
    return "\n".join(head + lines + ([verdict] if verdict else []))


def plot_learning_curves(results: Dict[str, Any], path: Path, metric: str = "accuracy") -> Optional[Path]:
    """Validation metric and training loss per epoch for every stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [("source", results.get("source", {})),
              ("transfer", results["target"].get("transfer", {})),
              ("baseline", results["target"].get("baseline", {}))]
    stages = [(n, s) for n, s in stages if s.get("history")]
    if not stages:
        return None
    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(10, 4))
    for name, stage in stages:
        epochs = [h["epoch"] for h in stage["history"]]
        if any(f"eval_{metric}" in h for h in stage["history"]):
            ax_m.plot(epochs, [h.get(f"eval_{metric}") for h in stage["history"]], marker="o", label=name)
        ax_l.plot(epochs, [h["train_loss"] for h in stage["history"]], marker="o", label=name)
    ax_m.set_title(f"validation {metric}")
    ax_l.set_title("training loss")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_m, ax_l):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_transfer_gain(results: Dict[str, Any], path: Path) -> Optional[Path]:
    """Bars of transfer vs baseline per metric, with the gain's 95% interval written above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    transfer = results["target"]["transfer"]["metrics"]
    baseline = results["target"].get("baseline", {}).get("metrics")
    if not baseline:
        return None
    names = [k for k in transfer if isinstance(transfer[k], float) and k in baseline]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, [transfer[k] for k in names], 0.4, label="transfer")
    ax.bar(x + 0.2, [baseline[k] for k in names], 0.4, label="baseline (no transfer)")
    for i, k in enumerate(names):
        gain = results["gain"].get(k)
        if gain is not None:
            ax.annotate(f"{gain:+.3f}", (i, max(transfer[k], baseline[k])), ha="center", va="bottom")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.08)
    title = "target test metrics"
    if results.get("negative_transfer"):
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
    import numpy as np

    n = len(label_names)
    cm = np.zeros((n, n), dtype=int)
    for p, r in zip(predictions, references):
        cm[r, p] += 1
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
