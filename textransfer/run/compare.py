"""``textransfer compare``: several strategies on the same split and seed, side by side.

Every strategy runs through :func:`run_transfer` with the same config (only ``strategy``
changes; the config's own strategy keeps its options), writing its results to
``D/<strategy>/``. The no-transfer baselines are trained once and shared (one per kind:
target-only, or source-only for unsupervised adaptation). Then ``D/comparison.json``,
``D/comparison.md`` and ``D/comparison.png`` (accuracy and macro-F1 per strategy, the
baseline as a line). With ``select=True`` (``--select``), the automatic choice of
``strategy: auto`` (``auto.py``) on top: the strategy (or the baseline) with the best validation
score is named, with why, in ``comparison.json``'s ``selected`` and ``comparison.md``, and its
model is copied to ``D/model/``.

```python
from textransfer import RunConfig
from textransfer.run.compare import compare_strategies
cfg = RunConfig.from_yaml("recipes/news_to_sentiment.yaml")
table = compare_strategies(cfg, ["finetune", "features", "l2sp"], "runs/compare")
picked = compare_strategies(cfg, ["finetune", "l2sp"], "runs/pick", select=True)["selected"]["chosen"]
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from accelerate import PartialState

from ..config import RunConfig, StrategyConfig
from ..config.strategies import AUTO
from ..errors import ConfigError
from ..files import atomic_write_text, check_output_dir, write_json
from ..publish.report import candidate_rows
from ..strategies import available_strategies, strategy_config
from ..training.results import AutoSelection, RunResults
from .auto import select_comparison, with_strategy
from .transfer import BaselineCache, check_candidates, train_candidates


def comparison_row(name: str, results: RunResults) -> Dict[str, Any]:
    """One strategy's entry in ``comparison.json``."""
    transfer, baseline = results.target.transfer, results.target.baseline
    timings = results.timings
    return {
        "strategy": name,
        "metrics": transfer.metrics,
        "baseline_kind": baseline.kind if baseline else None,
        "baseline_metrics": baseline.metrics if baseline else None,
        "gain": results.verdict.gain,
        "gain_ci": results.verdict.gain_ci or {},
        "negative_transfer": results.verdict.negative_transfer,
        "verdict": results.verdict.text,
        "shipped": results.shipped_arm,  # the arm in <strategy>/model/ (chosen on validation)
        "train_time_s": round(timings.get("source_s", 0.0) + timings.get("target_s", 0.0), 3),
        "target_train_time_per_epoch_s": transfer.train_time_per_epoch_s if transfer.trained else None,
        "results": f"{name}/results.json",
    }


def comparison_markdown(rows: List[Dict[str, Any]], baselines: Dict[str, Dict[str, float]],
                        selected: Optional[AutoSelection] = None) -> str:
    lines = ["| strategy | accuracy | macro-F1 | gain (acc) | 95% CI | negative transfer | train time (s) |",
             "|---|---|---|---|---|---|---|"]
    for kind, m in baselines.items():
        lines.append(f"| baseline ({kind}) | {m.get('accuracy', float('nan')):.4f} | {m.get('f1', float('nan')):.4f} "
                     f"| | | | |")
    for r in rows:
        ci = r["gain_ci"].get("accuracy")
        gain = r["gain"].get("accuracy")
        ci_text = "" if ci is None else f"[{ci['low']:+.4f}, {ci['high']:+.4f}]"
        lines.append(
            f"| {r['strategy']} | {r['metrics'].get('accuracy', float('nan')):.4f} | {r['metrics'].get('f1', float('nan')):.4f} "
            f"| {'' if gain is None else f'{gain:+.4f}'} | {ci_text} "
            f"| {'' if r['negative_transfer'] is None else ('yes' if r['negative_transfer'] else 'no')} "
            f"| {r['train_time_s']:.1f} |")
    return "\n".join(lines + (selection_markdown(selected) if selected is not None else [])) + "\n"


def selection_markdown(selected: AutoSelection) -> List[str]:
    """``--select``: the chosen candidate, why, and every candidate's validation and test scores."""
    return ["", f"Selected (`--select`, on validation {selected.metric} only; the test scores are reported, never "
                f"used to choose): **{selected.chosen}**, copied to `model/`. Why: {selected.reason}.", "",
            f"| candidate | validation {selected.metric} | test {selected.metric} | model |", "|---|---|---|---|",
            *[f"| {c} | {v} | {t} | `{m}` |" for c, v, t, m in candidate_rows(selected)]]


def plot_comparison(rows, baselines, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["strategy"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names) + 2), 4))
    for offset, (metric, label) in zip((-0.2, 0.2), (("accuracy", "accuracy"), ("f1", "macro-F1"))):
        ax.bar(x + offset, [r["metrics"].get(metric, 0.0) for r in rows], width=0.4, label=label)
    styles = iter(["--", ":", "-."])
    for kind, m in baselines.items():
        style = next(styles, "--")
        ax.axhline(m.get("accuracy", 0.0), color="black", linestyle=style, linewidth=1, label=f"baseline ({kind}) accuracy")
        ax.axhline(m.get("f1", 0.0), color="grey", linestyle=style, linewidth=1, label=f"baseline ({kind}) macro-F1")
    ax.set_xticks(x, names)
    ax.set_ylabel("target test score")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Strategies on the target task")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def compare_strategies(cfg: RunConfig, strategies: List[str], output_dir, overwrite: bool = False,
                       select: bool = False) -> Dict[str, Any]:
    """Run each strategy in ``strategies`` on ``cfg``'s split and seed; write the comparison.

    With ``select``, also choose among the strategies and the baseline on validation only (as
    ``strategy: auto`` does, ``auto.py``): ``comparison.json``'s ``selected`` says which and why,
    and the chosen model is copied to ``D/model/``. Returns the ``comparison.json`` content.
    """
    configs = {name: with_strategy(cfg, s) for name, s in strategy_configs(cfg, strategies).items()}
    if select:  # every strategy must be judged against the target baseline, said before any training
        check_candidates(configs)
    out = check_output_dir(str(output_dir), overwrite)
    out.mkdir(parents=True, exist_ok=True)
    cache: BaselineCache = {}
    runs = train_candidates(configs, out, cache)
    rows = [comparison_row(name, results) for name, results in runs.items()]
    baselines = {kind: shared.baseline.summary.metrics for kind, shared in cache.items()}
    comparison = {"model": cfg.model.name_or_path, "seed": cfg.seed, "source": cfg.source.name if cfg.source else None,
                  "target": cfg.target.name, "baselines": baselines,
                  "strategies": {r["strategy"]: r for r in rows}}
    selected = select_comparison(out, cfg, runs, cache["target"]) if select else None
    if selected is not None:
        comparison["selected"] = selected.to_dict()
    if PartialState().is_main_process:
        write_json(out / "comparison.json", comparison)
        atomic_write_text(out / "comparison.md", comparison_markdown(rows, baselines, selected))
        plot_comparison(rows, baselines, out / "comparison.png")
    return comparison


def strategy_configs(cfg: RunConfig, strategies: List[str]) -> Dict[str, StrategyConfig]:
    """Each named strategy's config, in order: the run config's own keeps its options, the others
    their defaults."""
    names = [s.strip() for s in strategies if s.strip()]
    if not names:
        raise ConfigError(f"--strategies is empty; name some of {', '.join(available_strategies())}.")
    if len(set(names)) != len(names):
        raise ConfigError(f"--strategies names one strategy twice: {names}.")
    if AUTO in names:
        raise ConfigError("--strategies names `auto`, which chooses among strategies rather than being one; list "
                          "the strategies to compare and add --select to choose among them on validation.")
    return {name: cfg.strategy if cfg.strategy.name == name else strategy_config({"name": name}) for name in names}
