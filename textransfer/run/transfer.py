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
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import datasets

from ..config import RunConfig
from ..data.loading import TaskData, load_task
from ..data.tokenization import check_max_length, tokenize_splits
from ..files import atomic_write_text, check_output_dir, write_json
from ..metrics.significance import paired_bootstrap
from ..modeling.loading import load_model_config, load_tokenizer, save_model_atomically
from ..publish.card import write_card
from ..publish.hub import check_push, push_run
from ..publish.report import plot_confusion_matrix, plot_learning_curves, plot_transfer_gain
from ..strategies import Baseline, RunContext, Strategy, TransferOutcome, get_strategy, train_baseline
from ..training.checkpointing import prepare_checkpoint_root
from ..training.results import (DataSummary, NoiseTest, RunResults, StageSummary, TargetResults, TestPredictions,
                                Verdict)
from ..training.accelerator import make_accelerator

# the baselines `compare` shares across its runs: baseline kind -> the baseline trained for it
BaselineCache = Dict[str, Baseline]


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
                 baseline_cache: Optional[BaselineCache] = None, resume: Optional[bool] = None) -> Dict[str, Any]:
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
        The ``results.json`` content as a dict (`RunResults.to_dict`).
    """
    cfg = with_overrides(cfg, output_dir, overwrite, resume)
    # resuming writes into the run's own (non-empty) folder; prepare_checkpoint_root checks it is one
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir or cfg.resume)
    if cfg.push_to_hub:  # fail before training, not after it, when the push cannot happen
        check_push(cfg.hub_repo_id, out)
    strategy = get_strategy(cfg.strategy)
    clock = Timings()
    run = prepare_run(cfg, out, clock)
    outcome = train_transfer_arm(strategy, run, clock)
    results = RunResults(model=cfg.model.name_or_path, seed=cfg.seed, strategy=dataclasses.asdict(strategy.config),
                         target=target_results(run.tasks["target"], outcome),
                         source=source_results(outcome.source, run.tasks), extra=dict(outcome.extra))
    if cfg.baseline and ("source" in run.tasks or not strategy.needs_source):
        baseline, results.baseline_reused = baseline_for(strategy, run, baseline_cache, clock)
        results.target.baseline = dataclasses.replace(baseline.summary, kind=strategy.baseline_kind)
        results.verdict = judge_transfer(outcome.test, baseline.test, cfg, run.tasks["target"].num_labels)
    clock.stop()
    results.timings = clock.rounded()
    results.train_samples_per_s = samples_per_second(results)
    results.world_size = run.accelerator.num_processes
    if out is not None:
        finish_run(out, cfg, run, results, outcome)
    return results.to_dict()


def with_overrides(cfg: RunConfig, output_dir, overwrite: Optional[bool], resume: Optional[bool]) -> RunConfig:
    """A copy of ``cfg`` with ``run_transfer``'s arguments applied (the caller's config stays as it is)."""
    cfg = copy.deepcopy(cfg)
    if output_dir is not None:
        cfg.output_dir = str(output_dir)
    if overwrite is not None:
        cfg.overwrite_output_dir = overwrite
    if resume is not None:
        cfg.resume = resume
    return cfg


class Timings:
    """Wall-clock seconds of a run's phases, in the order they ran (``results.json``'s ``timings``)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds: Dict[str, float] = {}

    def since(self, name: str, t0: float) -> None:
        self.seconds[name] = time.perf_counter() - t0

    def stop(self) -> None:
        self.since("total_s", self.start)

    def rounded(self) -> Dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def prepare_run(cfg: RunConfig, out: Optional[Path], clock: Timings) -> RunContext:
    """Load, check and tokenize the tasks; only then, with every input checked, is the output folder written."""
    accelerator = make_accelerator(cfg.mixed_precision)
    t0 = time.perf_counter()
    with accelerator.main_process_first():
        tokenizer, tasks = prepare(cfg)
    clock.since("load_data_s", t0)
    t0 = time.perf_counter()
    with accelerator.main_process_first():
        tokenized = {name: tokenize_splits(task.splits, tokenizer, cfg.model.max_length) for name, task in tasks.items()}
    clock.since("tokenize_s", t0)
    checkpoint_root = prepare_checkpoint_root(out, cfg, accelerator) if out is not None else None
    return RunContext(cfg, accelerator, tokenizer, tasks, tokenized, checkpoint_root)


def train_transfer_arm(strategy: Strategy, run: RunContext, clock: Timings) -> TransferOutcome:
    """The strategy's transfer arm (``finetune``: source stage, head swap, target stage)."""
    t0 = time.perf_counter()
    outcome = strategy.train_transfer(run)
    source_s = outcome.source.train_time_s if outcome.source is not None else 0.0
    if outcome.source is not None:
        clock.seconds["source_s"] = source_s
    # the arm's time less the source stage's training is the target's (with any evaluation)
    clock.seconds["target_s"] = time.perf_counter() - t0 - source_s
    return outcome


def source_results(summary: Optional[StageSummary], tasks: Dict[str, TaskData]) -> Optional[StageSummary]:
    """The source stage's record with its task's labels and rows."""
    if summary is None:
        return None
    task = tasks["source"]
    labels = task.label_names if summary.label_names is None else summary.label_names
    return dataclasses.replace(summary, label_names=labels, data=DataSummary.from_task_info(task.info))


def target_results(target: TaskData, outcome: TransferOutcome) -> TargetResults:
    return TargetResults(task=target.name, label_names=target.label_names, test_rows=len(outcome.test.references),
                         data=DataSummary.from_task_info(target.info), transfer=outcome.transfer)


def baseline_for(strategy: Strategy, run: RunContext, cache: Optional[BaselineCache],
                 clock: Timings) -> Tuple[Baseline, bool]:
    """The no-transfer baseline the strategy's gain is measured against (the same target training
    from the pretrained encoder, or for unsupervised adaptation the source model without it),
    trained once per ``cache``; and whether it came from the cache."""
    t0 = time.perf_counter()
    kind = strategy.baseline_kind
    cache = {} if cache is None else cache
    reused = kind in cache
    if not reused:
        cache[kind] = train_baseline(run, kind)
    clock.since("baseline_s", t0)
    return cache[kind], reused


def judge_transfer(transfer: TestPredictions, baseline: TestPredictions, cfg: RunConfig, num_labels: int) -> Verdict:
    """The gain over the baseline per metric, its paired-bootstrap 95% interval, and the verdict on
    the primary metric (``metric_for_best_model``): negative transfer when the interval is below 0."""
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
    return Verdict(gain=gain, gain_ci=gain_ci, negative_transfer=bool(negative),
                   text=verdict_text(primary, value, negative, positive),
                   noise_test=NoiseTest(metric=primary, resamples=cfg.noise_resamples))


def verdict_text(metric: str, gain: float, negative: bool, positive: bool) -> str:
    if negative:
        return (f"NEGATIVE TRANSFER: {metric} {gain:+.4f} vs the no-transfer baseline, "
                f"beyond noise (95% CI entirely below 0).")
    if positive:
        return f"Transfer helped: {metric} {gain:+.4f} vs the no-transfer baseline (95% CI above 0)."
    return f"No significant difference: {metric} {gain:+.4f} vs the no-transfer baseline (95% CI spans 0)."


def samples_per_second(results: RunResults) -> Dict[str, float]:
    """Training throughput per stage, named as ``results.json`` names it (the transfer stage is ``target``)."""
    stages = (("source", results.source), ("target", results.target.transfer), ("baseline", results.target.baseline))
    return {name: stage.train_samples_per_s for name, stage in stages if stage is not None}


def finish_run(out: Path, cfg: RunConfig, run: RunContext, results: RunResults, outcome: TransferOutcome) -> None:
    """Write the outputs on the main process, then push them when asked."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_outputs(out, cfg, results, outcome, run.tokenizer)
    accelerator.wait_for_everyone()
    # after the barrier: a failed push raises on the main process alone, and the other
    # processes, past every collective call, exit instead of waiting for it
    if cfg.push_to_hub and accelerator.is_main_process:
        push_run(out, cfg.hub_repo_id, private=cfg.hub_private, revision=cfg.hub_revision)


def write_outputs(out: Path, cfg: RunConfig, results: RunResults, outcome: TransferOutcome, tokenizer) -> None:
    """``model/`` (with its card), ``config.yaml``, the plots and ``results.json``."""
    out.mkdir(parents=True, exist_ok=True)
    # With the model card; a card already in model/ (user edits outside the markers) is updated.
    final = out / "model"
    save_model_atomically(outcome.model, tokenizer, final,
                          finish=lambda tmp: write_card(tmp, results, cfg.to_dict(), previous=final / "README.md"))
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    plots = {}
    if plot_learning_curves(results, out / "learning_curves.png", metric=cfg.target_training.metric_for_best_model):
        plots["learning_curves"] = "learning_curves.png"
    if plot_transfer_gain(results, out / "transfer_gain.png"):
        plots["transfer_gain"] = "transfer_gain.png"
    target = results.target
    plot_confusion_matrix(outcome.test.predictions, outcome.test.references, target.label_names,
                          out / "confusion_matrix.png", title=f"{target.task}: transfer model, test split")
    plots["confusion_matrix"] = "confusion_matrix.png"
    results.plots = plots
    write_json(out / "results.json", results.to_dict())


__all__ = ["run_transfer", "prepare", "check_output_dir"]
