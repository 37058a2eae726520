"""What each subcommand does once its arguments are parsed.

The heavy layers (run, inference, publish; and so torch) are imported inside each command:
a command imports only what it needs, and ``--help`` or a bad config answers before any of it.
"""

from __future__ import annotations

import argparse
import gc
import shlex
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from ..config import AutoConfig, RunConfig
from ..errors import TextransferError


def resume_hint(config: str, output_dir: str, overrides: List[str]) -> str:
    """What to type to continue an interrupted run (the same config and overrides, plus --resume)."""
    cmd = ["textransfer", "run", config, "--output-dir", output_dir, *overrides, "--resume"]
    return ("\ninterrupted: the last complete checkpoint is kept in "
            f"{output_dir}/checkpoints. Continue with:\n  {' '.join(shlex.quote(c) for c in cmd)}")


def run_config(args: argparse.Namespace) -> Tuple[str, List[str], RunConfig, str]:
    """``(config path, overrides, RunConfig, output dir)`` from ``run``/``compare`` arguments."""
    overrides = list(args.overrides)
    if args.seed is not None:  # --seed N is seed=N, after the others so that it wins
        overrides.append(f"seed={args.seed}")
    if args.no_cache:
        overrides.append("stage_cache=false")
    if args.config_opt and args.config:  # with --config, the first positional is an override
        overrides.insert(0, args.config)
    config = args.config_opt or args.config
    if not config:
        raise TextransferError("no config given: pass a recipe YAML, e.g. recipes/news_to_sentiment.yaml")
    cfg = RunConfig.from_yaml(config, overrides=overrides)
    output_dir = args.output_dir or cfg.output_dir
    if output_dir is None:
        raise TextransferError("no output directory: pass --output-dir DIR (or set `output_dir` in the config)")
    return config, overrides, cfg, output_dir


@contextmanager
def imports_frozen() -> Iterator[None]:
    """A block whose garbage collections skip every object alive at its start (after a
    command's imports): ``gc.freeze``, and ``gc.unfreeze`` at the end.

    Why: a full collection walks every tracked object, and once torch and transformers are
    imported that takes 0.2 s; a ``compare`` makes a dozen or more (Accelerate's ``free_memory``
    collects at each stage's start and end). Measured on the demo ``compare`` at a smoke budget:
    full collections 3.2-3.6 s without, 1.1 s with, and the command 22.5-26.5 s against 19.1-20.7.
    What the imports made (modules, functions, classes) lives as long as the process anyway. The
    unfreeze gives a caller that runs the command in its own process (a test, a notebook calling
    ``main``) its collector back as it was: whatever was frozen is collectable again after.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def run_command(args: argparse.Namespace) -> int:
    config, overrides, cfg, output_dir = run_config(args)  # a config error stops here, before torch loads
    if args.dry_run:
        return dry_run(cfg, output_dir, overwrite=args.overwrite, resume=args.resume)
    from ..publish.report import results_table
    from ..run.transfer import run_transfer

    try:
        with imports_frozen():
            results = run_transfer(cfg, output_dir=output_dir, overwrite=args.overwrite or cfg.overwrite_output_dir,
                                   resume=args.resume or cfg.resume)
    except KeyboardInterrupt:
        if is_main_process():
            print(resume_hint(config, output_dir, overrides), file=sys.stderr)
        raise
    if is_main_process():
        print()
        print(results_table(results))
        print(f"\nResults: {output_dir}/results.json   model: {output_dir}/model")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    _, _, cfg, output_dir = run_config(args)
    from ..run.compare import compare_strategies, comparison_markdown, strategy_configs
    from ..training.results import AutoSelection

    if args.dry_run:
        strategies = strategy_configs(cfg, args.strategies.split(","))
        return dry_run(cfg, output_dir, overwrite=args.overwrite, strategies=list(strategies.values()))
    with imports_frozen():
        comparison = compare_strategies(cfg, args.strategies.split(","), output_dir,
                                        overwrite=args.overwrite or cfg.overwrite_output_dir, select=args.select)
    if is_main_process():
        selected = AutoSelection.from_dict(comparison.get("selected"))
        print()
        print(comparison_markdown(list(comparison["strategies"].values()), comparison["baselines"], selected))
        print(f"Comparison: {output_dir}/comparison.json, comparison.md, comparison.png"
              + (f"; selected model ({selected.chosen}): {output_dir}/model" if selected else ""))
    return 0


# the order a data summary lists splits in (the order a run uses them)
SPLIT_ORDER = ("train", "validation", "test")


def dry_run(cfg: RunConfig, output_dir: str, overwrite: bool = False, resume: bool = False,
            strategies: Optional[List[Any]] = None) -> int:
    """``--dry-run``: every check a run makes before training (output folder, Hub push, strategy,
    mixed precision, trackers, model id, tokenizer, ``max_length``, data files, columns, labels,
    splits), then the resolved config and each task's rows and class counts per split.

    Nothing is trained and nothing is written (the output folder is not created); tokenizing,
    which only reads what the checks have read, is left to the run.
    """
    from ..files import check_output_dir
    from ..publish.hub import check_push
    from ..run.auto import candidate_config
    from ..run.transfer import check_candidates, prepare, with_overrides
    from ..strategies import get_strategy
    from ..training.accelerator import make_accelerator

    cfg = with_overrides(cfg, output_dir, overwrite or cfg.overwrite_output_dir, resume or cfg.resume)
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir or cfg.resume)
    if cfg.push_to_hub:
        check_push(cfg.hub_repo_id, out)
    if strategies is None and isinstance(cfg.strategy, AutoConfig):  # it trains its candidates
        check_candidates({name: candidate_config(cfg, s) for name, s in cfg.strategy.candidate_configs().items()})
    else:
        for strategy in strategies or [cfg.strategy]:
            get_strategy(strategy)
    make_accelerator(cfg.mixed_precision, report_to=cfg.report_to, output_dir=out)
    _, tasks = prepare(cfg)
    if is_main_process():
        print(f"# resolved config (as {out}/config.yaml would record it)")
        print(cfg.to_yaml())
        print(data_summary({role: (task.name, task.label_names, task.info) for role, task in tasks.items()}))
        print(f"\ndry run: every input checked; nothing trained, {out} not written.")
    return 0


def data_summary(tasks: Mapping[str, Tuple[str, List[str], Mapping[str, Any]]]) -> str:
    """Rows and class counts per split of each task (``role -> (name, label names, TaskData.info)``)."""
    lines = ["# data"]
    for role, (name, labels, info) in tasks.items():
        lines.append(f"{role}: {name} ({len(labels)} labels)")
        counts: Dict[str, List[int]] = info.get("class_counts") or {}
        rows_per_split = info.get("rows") or {}
        for split in sorted(rows_per_split, key=lambda s: (SPLIT_ORDER + (s,)).index(s)):
            rows = rows_per_split[split]
            per_class = counts.get(split)
            classes = ", ".join(f"{label} {n}" for label, n in zip(labels, per_class)) if per_class else ""
            size = "streamed" if rows is None else f"{rows} rows"
            lines.append(f"  {split:<10} {size:>10}{': ' + classes if classes else ''}")
        for split, dropped in (info.get("dropped_empty") or {}).items():
            lines.append(f"  ({dropped} rows with empty text dropped from {split})")
        if info.get("carved"):
            lines.append(f"  (carved out of the training split: {', '.join(info['carved'])})")
    return "\n".join(lines)


def push_command(args: argparse.Namespace) -> int:
    from ..publish.hub import command

    return command(args)


def predict_command(args: argparse.Namespace) -> int:
    from ..inference.predict import command

    return command(args)


def evaluate_command(args: argparse.Namespace) -> int:
    from ..inference.evaluation import command

    return command(args)


def rank_command(args: argparse.Namespace) -> int:
    import dataclasses

    from ..config.rank import RankConfig
    from ..publish.ranking import rank_table
    from ..run.rank import PLOT_FILE, RANK_FILE, rank

    # `--candidates a b x.y=1`: argparse hands the override to --candidates; an entry that is no
    # file and looks like `section.option=value` is an override
    overrides = list(args.overrides) + [c for c in args.candidates if is_override(c)]
    candidates = [c for c in args.candidates if not is_override(c)]
    options = RankConfig(**{f.name: getattr(args, f"rank_{f.name}") for f in dataclasses.fields(RankConfig)})
    report = rank(args.config, candidates, args.output_dir, options=options, overrides=overrides)
    print(rank_table(report.to_dict()))
    print(f"\nScores: {args.output_dir}/{RANK_FILE}   plot: {args.output_dir}/{PLOT_FILE}")
    return 0


def cache_command(args: argparse.Namespace) -> int:
    from ..training.stage_cache import StageCache

    cache = StageCache(args.cache_dir)
    if args.action == "clear":
        print(f"stage cache {cache.root}: removed, {megabytes(cache.clear())} freed")
        return 0
    entries = cache.entries()
    print(f"stage cache {cache.root}: {len(entries)} stage(s), {megabytes(sum(e.bytes for e in entries))}")
    for e in entries:
        print(f"  {e.key[:16]}  {e.stored}  {e.role:<6} {e.task:<20} {e.model}  {megabytes(e.bytes)}")
    return 0


def megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def is_override(arg: str) -> bool:
    from pathlib import Path

    key = arg.split("=", 1)[0]
    return "=" in arg and "." in key and "/" not in key and not Path(arg).exists()


COMMANDS = {"run": run_command, "compare": compare_command, "push": push_command, "predict": predict_command,
            "evaluate": evaluate_command, "rank": rank_command, "cache": cache_command}
