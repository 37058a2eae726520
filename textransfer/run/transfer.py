"""A transfer run: source stage, target stage, and the no-transfer baseline, side by side.

1. **Source**: the pretrained encoder with a head for the source labels, fine-tuned on the
   source task.
2. **Target (transfer)**: the source head is dropped, a head for the target labels is attached
   to the source-tuned encoder, and it is fine-tuned on the target task.
3. **Baseline**: the same target training (same budget, freezing, seed) from the original
   pretrained encoder.

The run reports both target results, the gain with a paired-bootstrap 95% interval, and flags
negative transfer when the transfer model is worse than the baseline beyond that noise
(``verdict.py``). It ships the arm with the better validation score as ``model/`` and keeps the
other in ``models/<arm>/`` (``shipping.py``, ``outputs.py``).

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
from typing import Any, Dict, Optional, Tuple

import datasets
from accelerate import PartialState

from ..config import AutoConfig, RunConfig
from ..data.loading import TaskData, load_task
from ..data.overlap import seen_test_rows
from ..data.tokenization import check_max_length, tokenize_splits
from ..errors import ConfigError
from ..files import check_output_dir
from ..modeling.loading import load_model_config, load_tokenizer
from ..publish.hub import check_push, push_run
from ..strategies import RunContext, Strategy, TransferOutcome, get_strategy, train_baseline
from ..strategies.base import check_adaptive_pretraining, pretraining_results
from ..training.checkpointing import prepare_checkpoint_root, stage_model_dir
from ..training.stage_cache import StageCache
from ..training.results import DataSummary, RunResults, StageSummary, TargetResults
from ..training.accelerator import end_tracking, make_accelerator, start_tracking
from .auto import CANDIDATES_FOLDER, candidate_config, finish_auto
from .outputs import finish_run
from .shipping import SharedBaseline, select_arm
from .verdict import judge_transfer, warn_if_imbalanced

logger = logging.getLogger(__name__)

# the baselines `compare` shares across its runs: baseline kind -> the baseline trained for it
BaselineCache = Dict[str, SharedBaseline]


def prepare(cfg: RunConfig):
    """Load and check everything a run needs; raises before any training on bad input."""
    tokenizer = load_tokenizer(cfg.model)
    model_config = load_model_config(cfg.model)
    buckets = {"target_training": cfg.target_training.pad_to_multiple_of}
    if cfg.source is not None:
        buckets["source_training"] = cfg.source_training.pad_to_multiple_of
    check_max_length(cfg.model.max_length, tokenizer, model_config, buckets)
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
    if isinstance(cfg.strategy, AutoConfig):
        return run_auto(cfg, baseline_cache)
    # resuming writes into the run's own (non-empty) folder; prepare_checkpoint_root checks it is one
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir or cfg.resume)
    if cfg.push_to_hub:  # fail before training, not after it, when the push cannot happen
        check_push(cfg.hub_repo_id, out)
    strategy = get_strategy(cfg.strategy)
    check_ship(cfg, strategy)
    check_adaptive_pretraining(cfg, strategy)
    clock = Timings()
    run = prepare_run(cfg, out, clock)
    target = run.tasks["target"]
    imbalance = warn_if_imbalanced(cfg, (target.info.get("class_counts") or {}).get("test"), target.label_names,
                                   main_process=run.accelerator.is_main_process)
    overlap = seen_test_rows(run.tasks)
    leak = overlap.warning() if overlap is not None else None
    if leak and run.accelerator.is_main_process:
        logger.warning(leak)
    outcome = train_transfer_arm(strategy, run, clock)
    results = RunResults(model=cfg.model.name_or_path, seed=cfg.seed, strategy=dataclasses.asdict(strategy.config),
                         target=target_results(target, outcome),
                         source=source_results(outcome.source, run.tasks), extra=dict(outcome.extra))
    baseline = None
    if has_baseline(cfg, strategy):
        baseline, results.baseline_reused = baseline_for(strategy, run, baseline_cache, clock)
        results.target.baseline = dataclasses.replace(baseline.baseline.summary, kind=strategy.baseline_kind)
        results.verdict = judge_transfer(outcome.test, baseline.baseline.test, cfg, target.num_labels)
    if imbalance:
        results.verdict.text += f" Warning: {imbalance}"
    if overlap is not None:
        results.seen_test_rows = overlap.to_dict()
    if leak:
        results.verdict.text += f" Warning: {leak}"
    results.selected = select_arm(results, cfg, strategy.baseline_kind if baseline is not None else None)
    end_tracking(run.accelerator)  # every stage has logged
    clock.stop()
    results.timings = clock.rounded()
    results.train_samples_per_s = samples_per_second(results)
    results.world_size = run.accelerator.num_processes
    if out is not None:
        finish_run(out, cfg, run, results, outcome, baseline)
    return results.to_dict()


def run_auto(cfg: RunConfig, baseline_cache: Optional[BaselineCache] = None) -> Dict[str, Any]:
    """``strategy: auto``: every candidate trained as a run of its own (in ``checkpoints/candidates/``),
    sharing one baseline; the best on validation is shipped (``auto.py``). Returns ``results.json``'s content."""
    if cfg.resume:
        raise ConfigError("`--resume` does not continue a `strategy: auto` run; run it again with --overwrite "
                          "(or run the candidates one by one with `textransfer compare`).", option="resume")
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    if cfg.push_to_hub:  # the choice is pushed once, at the end
        check_push(cfg.hub_repo_id, out)
    configs = {name: candidate_config(cfg, strategy) for name, strategy in cfg.strategy.candidate_configs().items()}
    check_candidates(configs)
    cache: BaselineCache = {} if baseline_cache is None else baseline_cache
    work = None if out is None else out / CANDIDATES_FOLDER
    runs = train_candidates(configs, work, cache)
    results = finish_auto(out, cfg, runs, work, cache["target"])
    if cfg.push_to_hub and PartialState().is_main_process:
        push_run(out, cfg.hub_repo_id, private=cfg.hub_private, revision=cfg.hub_revision)
    return results.to_dict()


def check_candidates(configs: Dict[str, RunConfig]) -> None:
    """Before any training: every candidate can run and is judged against the target baseline (whose
    validation split, with the target's labels, makes the choice)."""
    for name, run_cfg in configs.items():
        strategy = get_strategy(run_cfg.strategy)
        if strategy.baseline_kind != "target" or not has_baseline(run_cfg, strategy):
            raise ConfigError(f"`{name}` cannot be chosen on validation: it has no target baseline to be chosen "
                              f"against (it needs a `source:` task, or uses no target label).",
                              option="strategy.candidates")
        check_ship(run_cfg, strategy)
        check_adaptive_pretraining(run_cfg, strategy)


def train_candidates(configs: Dict[str, RunConfig], folder: Optional[Path],
                     cache: BaselineCache) -> Dict[str, RunResults]:
    """Run each config (``compare``'s strategies, ``auto``'s candidates) into ``folder / name``
    (nothing written when ``folder`` is None), the baseline trained once per kind through ``cache``."""
    runs = {}
    for name, run_cfg in configs.items():
        run_cfg.output_dir = None if folder is None else str(Path(folder) / name)
        runs[name] = RunResults.from_dict(run_transfer(run_cfg, overwrite=True, baseline_cache=cache))
    return runs


def has_baseline(cfg: RunConfig, strategy: Strategy) -> bool:
    """Whether the run trains a no-transfer baseline (asked for, and it has the task it needs)."""
    return cfg.baseline and (cfg.source is not None or not strategy.needs_source)


def check_ship(cfg: RunConfig, strategy: Strategy) -> None:
    """``ship: baseline`` needs a baseline; said before any training."""
    if cfg.ship == "baseline" and not has_baseline(cfg, strategy):
        why = "`baseline: false`" if not cfg.baseline else "there is no source task, which its baseline needs"
        raise ConfigError(f"`ship: baseline` but this run trains no baseline ({why}). Set `ship: best` or "
                          f"`ship: transfer`, or train the baseline (`baseline: true`).", option="ship")


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
    # a precision this device cannot run, or an unknown or missing tracker, fails here, before loading
    accelerator = make_accelerator(cfg.mixed_precision, report_to=cfg.report_to, output_dir=out)
    t0 = time.perf_counter()
    with accelerator.main_process_first():
        tokenizer, tasks = prepare(cfg)
    clock.since("load_data_s", t0)
    t0 = time.perf_counter()
    with accelerator.main_process_first():
        tokenized = {name: tokenize_splits(task.splits, tokenizer, cfg.model.max_length) for name, task in tasks.items()}
    clock.since("tokenize_s", t0)
    checkpoint_root = prepare_checkpoint_root(out, cfg, accelerator) if out is not None else None
    start_tracking(accelerator, cfg.to_dict(), run_name=out.name if out is not None else "textransfer",
                   fresh=not cfg.resume)
    cache = StageCache(cfg.stage_cache_dir) if cfg.stage_cache else None
    return RunContext(cfg, accelerator, tokenizer, tasks, tokenized, checkpoint_root, stage_cache=cache)


def train_transfer_arm(strategy: Strategy, run: RunContext, clock: Timings) -> TransferOutcome:
    """The strategy's transfer arm (``finetune``: source stage, head swap, target stage), with its
    adaptive pretraining's records as ``results.json``'s ``adaptive_pretraining``."""
    t0 = time.perf_counter()
    outcome = strategy.train_transfer(run)
    # a source stage from the stage cache took this run no training time
    source_s = outcome.source.train_time_s if outcome.source is not None and not outcome.source.from_cache else 0.0
    if outcome.source is not None:
        clock.seconds["source_s"] = source_s
    pretraining = pretraining_results(run)
    pretraining_s = sum(record.train_time_s for record in run.pretraining.values())
    if pretraining is not None:
        clock.seconds["adaptive_pretraining_s"] = pretraining_s
        outcome.extra = {"adaptive_pretraining": pretraining, **outcome.extra}
    # the arm's time less the source stage's and adaptive pretraining's training is the target's (with any evaluation)
    clock.seconds["target_s"] = time.perf_counter() - t0 - source_s - pretraining_s
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
                 clock: Timings) -> Tuple[SharedBaseline, bool]:
    """The no-transfer baseline the strategy's gain is measured against (the same target training
    from the pretrained encoder, or for unsupervised adaptation the source model without it),
    trained once per ``cache``; and whether it came from the cache. A cached baseline whose model
    is on no disk (its run wrote no outputs) is trained again when this run has outputs to place it in."""
    t0 = time.perf_counter()
    kind = strategy.baseline_kind
    cache = {} if cache is None else cache
    cached = cache.get(kind)
    reused = cached is not None and (run.checkpoint_root is None or cached.model_dir is not None)
    if not reused:
        baseline = train_baseline(run, kind)
        # its stage record's model: moved (or copied) into the outputs when the run finishes
        recorded = stage_model_dir(run.checkpoint_root, "baseline") if run.checkpoint_root is not None else None
        cache[kind] = SharedBaseline(baseline, recorded)
    clock.since("baseline_s", t0)
    return cache[kind], reused


def samples_per_second(results: RunResults) -> Dict[str, float]:
    """Training throughput per stage, named as ``results.json`` names it (the transfer stage is ``target``)."""
    stages = (("source", results.source), ("target", results.target.transfer), ("baseline", results.target.baseline))
    return {name: stage.train_samples_per_s for name, stage in stages if stage is not None}


__all__ = ["run_transfer", "prepare", "check_output_dir"]
