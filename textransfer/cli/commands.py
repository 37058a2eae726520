"""What each subcommand does once its arguments are parsed.

The heavy layers (run, inference, publish; and so torch) are imported inside each command:
a command imports only what it needs, and ``--help`` or a bad config answers before any of it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import List, Tuple

from ..config import RunConfig
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


def is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def run_command(args: argparse.Namespace) -> int:
    config, overrides, cfg, output_dir = run_config(args)  # a config error stops here, before torch loads
    from ..publish.report import results_table
    from ..run.transfer import run_transfer

    try:
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
    from ..run.compare import compare_strategies, comparison_markdown

    comparison = compare_strategies(cfg, args.strategies.split(","), output_dir,
                                    overwrite=args.overwrite or cfg.overwrite_output_dir)
    if is_main_process():
        print()
        print(comparison_markdown(list(comparison["strategies"].values()), comparison["baselines"]))
        print(f"Comparison: {output_dir}/comparison.json, comparison.md, comparison.png")
    return 0


def push_command(args: argparse.Namespace) -> int:
    from ..publish.hub import command

    return command(args)


def predict_command(args: argparse.Namespace) -> int:
    from ..inference.predict import command

    return command(args)


def evaluate_command(args: argparse.Namespace) -> int:
    from ..inference.evaluation import command

    return command(args)


COMMANDS = {"run": run_command, "compare": compare_command, "push": push_command, "predict": predict_command,
            "evaluate": evaluate_command}
