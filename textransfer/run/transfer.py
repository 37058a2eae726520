"""A transfer run: source stage, target stage, and the no-transfer baseline, side by side.

1. **Source**: the pretrained encoder with a head for the source labels, fine-tuned on the
   source task.
2. **Target (transfer)**: the source head is dropped, a head for the target labels is attached
   to the source-tuned encoder, and it is fine-tuned on the target task.
3. **Baseline**: the same target training (same budget, freezing, seed) from the original
   pretrained encoder.

The run reports both target results, the gain with a paired-bootstrap 95% interval, and flags
negative transfer when the transfer model is worse than the baseline beyond that noise.

Everything that can be wrong with the inputs (config, files, columns, labels, splits, model
id, ``max_length``, output directory) is checked before the first training step.

Example:

```python
import textransfer
cfg = textransfer.RunConfig.from_yaml("recipes/news_to_sentiment.yaml")
results = textransfer.run_transfer(cfg, output_dir="runs/demo")
print(results["gain"]["accuracy"], results["negative_transfer"])
```
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

import datasets
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..publish.card import write_card
from ..training.checkpointing import StageCheckpoints, load_stage_model, prepare_checkpoint_root, record_stage, stage_done
from ..config import RunConfig, TrainingConfig
from ..data.loading import TaskData, load_task
from ..errors import OutputDirError
from ..modeling.freezing import freeze
from ..modeling.loading import head_parameter_names, load_model_config, load_tokenizer, save_model_atomically
from ..publish.report import plot_confusion_matrix, plot_learning_curves, plot_transfer_gain, results_table
from ..files import atomic_write_text, write_json
from ..metrics.significance import paired_bootstrap
from ..data.tokenization import check_max_length, tokenize_splits
from ..training.trainer import StageTrainer, make_accelerator

logger = logging.getLogger(__name__)


def check_output_dir(output_dir: Optional[str], overwrite: bool) -> Optional[Path]:
    """Refuse a non-empty output directory unless ``overwrite`` is set."""
    if output_dir is None:
        return None
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"--output-dir '{path}' is a file, not a directory. Choose another path.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputDirError(
            f"--output-dir '{path}' is not empty ({', '.join(sorted(p.name for p in path.iterdir())[:5])}); "
            f"nothing was run and nothing was overwritten. Choose a new directory, or pass --overwrite "
            f"(`overwrite_output_dir: true`) to replace its results."
        )
    return path


def prepare(cfg: RunConfig):
    """Load and check everything a run needs; raises before any training on bad input."""
    tokenizer = load_tokenizer(cfg.model)
    model_config = load_model_config(cfg.model)
    check_max_length(cfg.model.max_length, tokenizer, model_config)
    tasks: Dict[str, TaskData] = {}
    # Loading runs several small datasets steps (filters, label maps, casts); their progress
    # bars say nothing useful, so they are hidden here. Tokenization keeps its bar.
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        if cfg.source is not None:
            tasks["source"] = load_task(cfg.source, cache_dir=cfg.cache_dir)
        tasks["target"] = load_task(cfg.target, cache_dir=cfg.cache_dir)
    finally:
        if bars:
            datasets.enable_progress_bars()
    return tokenizer, tasks


def run_transfer(cfg: RunConfig, output_dir: Optional[str] = None, overwrite: Optional[bool] = None,
                 baseline_cache: Optional[Dict[str, Any]] = None, resume: Optional[bool] = None) -> Dict[str, Any]:
    """Run source training, target transfer and the baseline; write and return the results.

    Args:
        cfg (`RunConfig`): the run's configuration.
        output_dir (`str`, *optional*): overrides ``cfg.output_dir``.
        overwrite (`bool`, *optional*): overrides ``cfg.overwrite_output_dir``.
        baseline_cache (`dict`, *optional*): baselines already trained under the same config
            (``compare`` shares one dict across strategies so the baseline trains once).
        resume (`bool`, *optional*): overrides ``cfg.resume``: continue a killed or interrupted
            run in ``output_dir`` from its last complete checkpoint, skipping finished stages.

    Returns:
        The ``results.json`` content as a dict.
    """
    cfg = copy.deepcopy(cfg)
    if output_dir is not None:
        cfg.output_dir = str(output_dir)
    if overwrite is not None:
        cfg.overwrite_output_dir = overwrite
    if resume is not None:
        cfg.resume = resume
    # resuming writes into the run's own (non-empty) folder; prepare_checkpoint_root checks it is one
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir or cfg.resume)
    if cfg.push_to_hub:  # fail before training, not after it, when the push cannot happen
        from ..publish.hub import check_push

        check_push(cfg.hub_repo_id, out)
    from ..strategies import RunContext, get_strategy, train_baseline

    strategy = get_strategy(cfg.strategy)

    timings: Dict[str, float] = {}
    t_start = time.perf_counter()
    accelerator = make_accelerator(cfg.mixed_precision)

    t0 = time.perf_counter()
    with accelerator.main_process_first():
        tokenizer, tasks = prepare(cfg)
    timings["load_data_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with accelerator.main_process_first():
        tokenized = {name: tokenize_splits(task.splits, tokenizer, cfg.model.max_length) for name, task in tasks.items()}
    timings["tokenize_s"] = time.perf_counter() - t0
    # only now, with every input checked, is anything written to the output folder
    checkpoint_root = prepare_checkpoint_root(out, cfg, accelerator) if out is not None else None

    results: Dict[str, Any] = {"model": cfg.model.name_or_path, "seed": cfg.seed,
                               "strategy": dataclasses.asdict(strategy.config)}
    target = tasks["target"]
    run = RunContext(cfg, accelerator, tokenizer, tasks, tokenized, checkpoint_root)

    # 1-2. The strategy's transfer arm (finetune: source stage, head swap, target stage)
    t0 = time.perf_counter()
    outcome = strategy.train_transfer(run)
    transfer_model, transfer_summary, transfer_test = outcome.model, outcome.transfer, outcome.test
    if outcome.source is not None:
        outcome.source.setdefault("label_names", tasks["source"].label_names)
        outcome.source["data"] = _data_info(tasks["source"])
        results["source"] = outcome.source
        timings["source_s"] = outcome.source["train_time_s"] + outcome.source.get("eval_time_s", 0.0)
    results.update(outcome.extra)
    timings["target_s"] = time.perf_counter() - t0 - timings.get("source_s", 0.0)
    results["target"] = {"task": target.name, "label_names": target.label_names,
                         "test_rows": len(transfer_test["references"]), "data": _data_info(target),
                         "transfer": transfer_summary}

    # 3. Baseline: the same target training from the original pretrained encoder (or, for
    # unsupervised adaptation, the source model without adaptation); trained once per cache
    if cfg.baseline and ("source" in tasks or not strategy.needs_source):
        t0 = time.perf_counter()
        kind = strategy.baseline_kind
        cache = {} if baseline_cache is None else baseline_cache
        if kind not in cache:
            cache[kind] = train_baseline(run, kind)
        else:
            results["baseline_reused"] = True
        baseline_summary, baseline_test = cache[kind]
        timings["baseline_s"] = time.perf_counter() - t0
        results["target"]["baseline"] = dict(baseline_summary, kind=kind)
        _compare(results, cfg, transfer_test, baseline_test, target.num_labels)
    else:
        results["gain"] = {}
        results["negative_transfer"] = None
        results["verdict"] = "No baseline was trained (baseline: false or no source task); gain unknown."

    timings["total_s"] = time.perf_counter() - t_start
    results["timings"] = {k: round(v, 3) for k, v in timings.items()}
    results["train_samples_per_s"] = {
        stage: summary["train_samples_per_s"]
        for stage, summary in (("source", results.get("source")), ("target", transfer_summary),
                               ("baseline", results["target"].get("baseline")))
        if summary
    }
    results["world_size"] = accelerator.num_processes

    if out is not None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_outputs(out, cfg, results, transfer_model, tokenizer, transfer_test, target)
        accelerator.wait_for_everyone()
        # after the barrier: a failed push raises on the main process alone, and the other
        # processes, past every collective call, exit instead of waiting for it
        if cfg.push_to_hub and accelerator.is_main_process:
            from ..publish.hub import push_run

            push_run(out, cfg.hub_repo_id, private=cfg.hub_private, revision=cfg.hub_revision)
    return results


def _data_info(task: TaskData) -> Dict[str, Any]:
    info = {"rows": task.info.get("rows"), "class_counts": task.info.get("class_counts")}
    if task.info.get("dropped_empty"):
        info["dropped_empty_text"] = task.info["dropped_empty"]
    if task.info.get("carved"):
        info["carved_splits"] = task.info["carved"]
    return info


def _compare(results, cfg: RunConfig, transfer_test, baseline_test, num_labels: int) -> None:
    t, b = transfer_test["metrics"], baseline_test["metrics"]
    results["gain"] = {k: t[k] - b[k] for k in t if isinstance(t[k], float) and isinstance(b.get(k), float)}
    assert transfer_test["references"] == baseline_test["references"], "transfer and baseline saw different test sets"
    ci = paired_bootstrap(transfer_test["predictions"], baseline_test["predictions"], transfer_test["references"],
                          num_labels, resamples=cfg.noise_resamples, seed=cfg.seed)
    results["gain_ci"] = {k: v for k, v in ci.items() if k in results["gain"]}
    primary = cfg.target_training.metric_for_best_model
    interval = results["gain_ci"].get(primary)
    if interval is not None:
        negative = interval["high"] < 0
        positive = interval["low"] > 0
    else:  # a metric without a bootstrap: fall back to the sign alone
        negative = results["gain"].get(primary, 0.0) < 0
        positive = results["gain"].get(primary, 0.0) > 0
    results["negative_transfer"] = bool(negative)
    results["noise_test"] = {"method": "paired bootstrap over test examples", "resamples": cfg.noise_resamples,
                             "confidence": 0.95, "metric": primary}
    gain = results["gain"].get(primary, 0.0)
    if negative:
        verdict = (f"NEGATIVE TRANSFER: {primary} {gain:+.4f} vs the no-transfer baseline, "
                   f"beyond noise (95% CI entirely below 0).")
    elif positive:
        verdict = f"Transfer helped: {primary} {gain:+.4f} vs the no-transfer baseline (95% CI above 0)."
    else:
        verdict = f"No significant difference: {primary} {gain:+.4f} vs the no-transfer baseline (95% CI spans 0)."
    results["verdict"] = verdict


def _write_outputs(out: Path, cfg: RunConfig, results, model, tokenizer, transfer_test, target: TaskData) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # With the model card; a card already in model/ (user edits outside the markers) is updated.
    final = out / "model"
    save_model_atomically(model, tokenizer, final,
                          finish=lambda tmp: write_card(tmp, results, cfg.to_dict(), previous=final / "README.md"))
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    plots = {}
    metric = cfg.target_training.metric_for_best_model
    if plot_learning_curves(results, out / "learning_curves.png", metric=metric):
        plots["learning_curves"] = "learning_curves.png"
    if plot_transfer_gain(results, out / "transfer_gain.png"):
        plots["transfer_gain"] = "transfer_gain.png"
    plot_confusion_matrix(transfer_test["predictions"], transfer_test["references"], target.label_names,
                          out / "confusion_matrix.png", title=f"{target.name}: transfer model, test split")
    plots["confusion_matrix"] = "confusion_matrix.png"
    results["plots"] = plots
    write_json(out / "results.json", results)


__all__ = ["run_transfer", "prepare", "check_output_dir", "results_table"]
