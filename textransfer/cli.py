"""The ``textransfer`` command.

```
textransfer run recipes/news_to_sentiment.yaml --output-dir runs/demo target.k_per_class=16
textransfer push runs/demo --repo-id me/news-to-reviews
textransfer predict runs/demo --input reviews.csv --text-column text --output predictions.csv
textransfer evaluate runs/demo --data labelled.csv
```

Each subcommand is a recipe's ``main``/``make_parser`` (trl's pattern), so
``python recipes/news_to_sentiment.py ...``, ``accelerate launch recipes/news_to_sentiment.py ...``
and ``textransfer run ...`` are the same code path.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .errors import TextransferError


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("config", nargs="?", help="recipe YAML file (e.g. recipes/news_to_sentiment.yaml)")
    parser.add_argument("--config", dest="config_opt", help="recipe YAML file (same as the positional argument)")
    parser.add_argument("--output-dir", help="where results.json, config.yaml and model/ go")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --output-dir")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output-dir from its last complete checkpoint (after a kill or Ctrl-C)")
    parser.add_argument("overrides", nargs="*", metavar="section.option=value",
                        help="override any config field, e.g. target.k_per_class=16 target_training.num_epochs=2")
    return parser


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textransfer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run", help="run a transfer recipe (source, target, baseline)"))
    compare = add_run_arguments(sub.add_parser("compare", help="run several strategies on one split and seed"))
    compare.add_argument("--strategies", required=True,
                         help="comma-separated strategy names, e.g. finetune,features,l2sp,dann,mmd,coral")
    # Publish and use: each module owns its arguments and its command (args.func).
    from .inference import evaluation, predict
    from .publish import hub

    hub.add_arguments(sub.add_parser("push", help="push a run's model, tokenizer and card to the Hub"))
    predict.add_arguments(sub.add_parser("predict", help="label every row of a csv/tsv/jsonl/parquet file"))
    evaluation.add_arguments(sub.add_parser("evaluate", help="metrics, per-class report, confusion matrix"))
    return parser


def split_overrides(argv: List[str]) -> List[str]:
    """Turn ``--section.option value`` / ``--section.option=value`` into ``section.option=value``."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "." in arg.split("=", 1)[0]:
            if "=" in arg:
                out.append(arg[2:])
            elif i + 1 < len(argv):
                out.append(f"{arg[2:]}={argv[i + 1]}")
                i += 1
            else:
                raise TextransferError(f"option {arg} needs a value")
        else:
            out.append(arg)
        i += 1
    return out


def resume_hint(config: str, output_dir: str, overrides: List[str]) -> str:
    """What to type to continue an interrupted run (the same config and overrides, plus --resume)."""
    import shlex

    cmd = ["textransfer", "run", config, "--output-dir", output_dir, *overrides, "--resume"]
    return ("\ninterrupted: the last complete checkpoint is kept in "
            f"{output_dir}/checkpoints. Continue with:\n  {' '.join(shlex.quote(c) for c in cmd)}")


def _run_config(args: argparse.Namespace):
    """``(config path, overrides, RunConfig, output dir)`` from ``run``/``compare`` arguments."""
    from .config import RunConfig

    overrides = list(args.overrides)
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


def run_command(args: argparse.Namespace) -> int:
    from .publish.report import results_table
    from .run.transfer import run_transfer

    config, overrides, cfg, output_dir = _run_config(args)
    try:
        results = run_transfer(cfg, output_dir=output_dir, overwrite=args.overwrite or cfg.overwrite_output_dir,
                               resume=args.resume or cfg.resume)
    except KeyboardInterrupt:
        from accelerate import PartialState

        if PartialState().is_main_process:
            print(resume_hint(config, output_dir, overrides), file=sys.stderr)
        raise
    from accelerate import PartialState

    if PartialState().is_main_process:
        print()
        print(results_table(results))
        print(f"\nResults: {output_dir}/results.json   model: {output_dir}/model")
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from .run.compare import compare_strategies, comparison_markdown

    _, _, cfg, output_dir = _run_config(args)
    comparison = compare_strategies(cfg, args.strategies.split(","), output_dir,
                                    overwrite=args.overwrite or cfg.overwrite_output_dir)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print()
        print(comparison_markdown(list(comparison["strategies"].values()), comparison["baselines"]))
        print(f"Comparison: {output_dir}/comparison.json, comparison.md, comparison.png")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = split_overrides(list(sys.argv[1:] if argv is None else argv))
    parser = make_parser()
    # parse_known_args: argparse cannot take positionals after options under a subcommand,
    # so overrides that follow --output-dir come back as extras.
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if "=" not in a or a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (overrides look like section.option=value)")
    if hasattr(args, "overrides"):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "run":
            return run_command(args)
        if args.command == "compare":
            return compare_command(args)
        if hasattr(args, "func"):
            return args.func(args)
    except TextransferError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
