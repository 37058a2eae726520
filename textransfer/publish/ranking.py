"""What ``textransfer rank`` shows: the table of scores per candidate, and ``rank.png``.

Both read the ``rank.json`` content (``run/rank.py``'s ``RankReport.to_dict()``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from ..metrics.transferability import SCORES

RankDict = Dict[str, Any]


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def shown_scores(report: RankDict) -> List[str]:
    """The score names any candidate has, in :data:`SCORES`' order."""
    return [s for s in SCORES if any(s in c["scores"] for c in report["candidates"])]


def rank_table(report: RankDict) -> str:
    """A fixed-width table: one row per candidate, one column per score, its predicted rank."""
    target = report["target"]
    scores = shown_scores(report)
    header = ["candidate", "kind"] + [SCORES[s][0] for s in scores] + ["rank"]
    rows = [[c["name"], c["kind"]] + [_cell(c["scores"].get(s)) for s in scores]
            + [f"{c['rank']} by {SCORES[c['ranked_by']][0]}"] for c in report["candidates"]]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = [f"Target task '{target['name']}': {target['rows']} train rows scored "
             f"({len(target['labels'])} labels); task similarity with {report['embedding_model']}",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines += [f"  {c['name']}: {'; '.join(c['notes'])}" for c in report["candidates"] if c.get("notes")]
    lines.append("Higher is better for every score except PAD (proxy A-distance: 0 = domains indistinguishable, "
                 "2 = separable).")
    for group in report["order"]:
        lines.append(f"Predicted order by {SCORES[group['by']][0]}: {' > '.join(group['candidates'])}")
    if len(report["order"]) > 1:
        lines.append("(models and source tasks without --tune-sources are on different scales: pass --tune-sources "
                     "to score the tasks' tuned encoders by LogME too)")
    return "\n".join(lines)


def plot_rank(report: RankDict, path: Path) -> Path:
    """One bar chart per score, candidates in their predicted order (best first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [name for group in report["order"] for name in group["candidates"]]
    by_name = {c["name"]: c for c in report["candidates"]}
    scores = shown_scores(report)
    fig, axes = plt.subplots(1, len(scores), figsize=(max(4.0, 0.6 * len(order) + 2) * len(scores), 4.2),
                             squeeze=False)
    for ax, score in zip(axes[0], scores):
        names = [n for n in order if score in by_name[n]["scores"]]
        values = [by_name[n]["scores"][score] for n in names]
        ax.bar(range(len(names)), values, color=["C0" if by_name[n]["kind"] == "model" else "C1" for n in names])
        ax.set_xticks(range(len(names)), [f"{by_name[n]['rank']}. {n}" for n in names], rotation=30, ha="right",
                      fontsize=8)
        label, higher = SCORES[score]
        ax.set_title(f"{label} ({'higher' if higher else 'lower'} is better)")
        ax.axhline(0, color="grey", linewidth=0.8)
    groups = "; ".join(f"by {SCORES[g['by']][0]}: {' > '.join(g['candidates'])}" for g in report["order"])
    fig.suptitle(f"Target '{report['target']['name']}': predicted order {groups}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
