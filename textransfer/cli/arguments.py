"""The ``textransfer`` command's arguments, for every subcommand.

Kept apart from the commands' code so that parsing (``--help``, a typo, a config error)
imports no torch, transformers, datasets, accelerate or evaluate: those load only once a
command runs (``commands.py``).
"""

from __future__ import annotations

import argparse
from typing import List

from .. import __version__
from ..config.reference import options_text
from ..errors import TextransferError
from ..formats import PREDICT_FORMATS
from ..inference.defaults import DEFAULT_BATCH_SIZE as DEFAULT_PREDICT_BATCH
from ..inference.defaults import BACKENDS, DEFAULT_BACKEND, DEFAULT_CHUNK_ROWS, DEFAULT_ENCODING, KEEP_ALL, QUANTIZE_MODES
from ..inference.defaults import DEFAULT_MAX_BATCH_TOKENS

DESCRIPTION = "textransfer: cross-domain text-classification transfer on the Hugging Face stack."


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``run``/``compare`` arguments: a recipe, the output folder, and ``section.option=value`` overrides."""
    parser.add_argument("config", nargs="?", help="recipe YAML file (e.g. recipes/news_to_sentiment.yaml)")
    parser.add_argument("--config", dest="config_opt", help="recipe YAML file (same as the positional argument)")
    parser.add_argument("--output-dir", help="where results.json, config.yaml and model/ go")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --output-dir")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output-dir from its last complete checkpoint (after a kill or Ctrl-C)")
    parser.add_argument("--seed", type=int, help="seed of init, shuffling and dropout (same as seed=N)")
    parser.add_argument("--no-cache", action="store_true",
                        help="train every stage, reusing none from the stage cache (same as stage_cache=false; "
                             "`textransfer cache info` shows the cache)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config, model, tokenizer and data as a run would, print the resolved config "
                             "and rows and class counts per split; train nothing, write nothing")
    parser.add_argument("overrides", nargs="*", metavar="section.option=value",
                        help="override any config field, e.g. target.k_per_class=16 target_training.num_epochs=2")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = options_text()
    return parser


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run directory (or a saved model folder) to push")
    parser.add_argument("--repo-id", required=True, help="user/name (or org/name) on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="branch to push to (created if missing; default: main)")
    parser.add_argument("--commit-message", help="commit message")
    parser.add_argument("--arm", choices=("transfer", "baseline"),
                        help="push this arm of the run instead of its shipped model/ (the other arm is kept in "
                             "RUN_DIR/models/ARM)")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--quantize``, shared by ``predict`` and ``evaluate``."""
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                        help="what runs the model: torch, or onnxruntime on an ONNX export stored in the model "
                             "folder (MODEL/onnx/model.onnx, made on first use; needs "
                             "`pip install \"textransfer[onnx]\"`) (default: torch)")
    parser.add_argument("--quantize", choices=QUANTIZE_MODES,
                        help="with --backend onnxruntime: run an int8 dynamic quantisation of the export "
                             "(onnx/model_quantized.onnx; faster, slightly different scores)")


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=DEFAULT_PREDICT_BATCH,
                        help=f"the most rows in one forward pass (default: {DEFAULT_PREDICT_BATCH})")
    parser.add_argument("--max-batch-tokens", type=max_batch_tokens_value, default=DEFAULT_MAX_BATCH_TOKENS,
                        metavar="N|none",
                        help=f"the most tokens (rows x padded length) in one forward pass: long texts go fewer "
                             f"at a time, faster on a CPU; `none`: --batch-size alone (default: {DEFAULT_MAX_BATCH_TOKENS})")


def max_batch_tokens_value(value: str):
    """``--max-batch-tokens 512``, or ``none`` (no token budget)."""
    return None if value.lower() in ("none", "null") else int(value)


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="run directory, saved model folder or Hub id")
    parser.add_argument("--input", required=True, help="csv, tsv, jsonl or parquet file")
    parser.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    parser.add_argument("--output", help="csv/tsv/jsonl/parquet file, by extension (default: csv on stdout)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--all-scores", action="store_true", help="also write each label's probability")
    add_batch_arguments(parser)
    parser.add_argument("--max-length", type=int, help="tokens kept per text (default: as trained)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_ROWS,
                        help=f"rows read, tokenized and length-sorted together; bounds memory (default: {DEFAULT_CHUNK_ROWS})")
    parser.add_argument("--input-format", choices=PREDICT_FORMATS, help="when the extension does not tell")
    parser.add_argument("--encoding", default=DEFAULT_ENCODING,
                        help=f"text encoding of a csv/tsv/jsonl input, e.g. latin-1, cp1252, utf-16 "
                             f"(default: {DEFAULT_ENCODING}; parquet is always UTF-8)")
    parser.add_argument("--keep-columns", metavar="all|COL[,COL...]",
                        help=f"copy input columns into the output, after `row`: `{KEEP_ALL}`, or a comma-separated "
                             f"list (one named like an output column is written as input_<name>)")
    parser.add_argument("--revision", help="Hub revision of MODEL")
    add_backend_arguments(parser)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="run directory, saved model folder or Hub id")
    parser.add_argument("--data", required=True, help="recipe YAML (its target test split) or a labelled data file")
    parser.add_argument("--text-column", default="text", help="text column of a data file (default: text)")
    parser.add_argument("--label-column", default="label", help="label column of a data file (default: label)")
    parser.add_argument("--output-dir", help="where evaluation.json, per_class.txt, confusion_matrix.png go "
                                             "(default: MODEL/evaluation for a run directory, else ./evaluation)")
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --output-dir")
    add_batch_arguments(parser)
    parser.add_argument("--max-length", type=int, help="tokens kept per text (default: as trained)")
    add_backend_arguments(parser)


def rank_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def max_examples_value(value: str):
    """``--max-examples 2000``, or ``all`` (every train row)."""
    return None if value.lower() in ("all", "null", "none") else int(value)


def add_rank_arguments(parser: argparse.ArgumentParser) -> None:
    """``rank``: a recipe, the candidates, the output folder; every ``RankConfig`` field as a flag
    (``max_examples`` -> ``--max-examples``), with the dataclass's help, so the two cannot drift."""
    import dataclasses

    from ..config.rank import RankConfig

    parser.add_argument("config", help="recipe YAML: its `target` task is scored for, its `model` embeds source tasks")
    parser.add_argument("--candidates", nargs="+", required=True, metavar="CANDIDATE",
                        help="models (Hub id, saved model folder, run directory) and source tasks (a YAML file "
                             "holding one task with the keys of a `source:` section)")
    parser.add_argument("--output-dir", required=True,
                        help="where rank.json, rank.png and the feature cache go (a second call reuses the cache)")
    parser.add_argument("overrides", nargs="*", metavar="section.option=value",
                        help="override the recipe's fields, e.g. model.max_length=64 (before --candidates)")
    for f in dataclasses.fields(RankConfig):
        flag, dest, helptext = rank_flag(f.name), f"rank_{f.name}", f"{f.metadata['help']} (default: {f.default})"
        if f.type in (bool, "bool"):
            parser.add_argument(flag, dest=dest, action="store_true", help=helptext)
            continue
        kind = {"max_examples": max_examples_value}.get(f.name, float if f.type in (float, "float") else int)
        parser.add_argument(flag, dest=dest, type=kind, default=f.default, metavar=f.name.upper(), help=helptext)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="textransfer", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"textransfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(sub.add_parser("run", help="run a transfer recipe (source, target, baseline)"))
    compare = add_run_arguments(sub.add_parser("compare", help="run several strategies on one split and seed"))
    compare.add_argument("--strategies", required=True,
                         help="comma-separated strategy names, e.g. finetune,features,l2sp,dann,mmd,coral")
    compare.add_argument("--select", action="store_true",
                         help="also choose among the strategies and the no-transfer baseline on validation only "
                              "(as `strategy: auto`): comparison.json/.md say which and why, and the chosen model "
                              "is copied to OUTPUT_DIR/model")
    add_push_arguments(sub.add_parser("push", help="push a run's model, tokenizer and card to the Hub"))
    add_predict_arguments(sub.add_parser("predict", help="label every row of a csv/tsv/jsonl/parquet file"))
    add_evaluate_arguments(sub.add_parser("evaluate", help="metrics, per-class report, confusion matrix"))
    add_rank_arguments(sub.add_parser("rank", help="will transfer help? score candidate models and source tasks "
                                                   "for a recipe's target, without training a run"))
    add_cache_arguments(sub.add_parser("cache", help="the stage cache: `info` (its folder, size and entries) or "
                                                     "`clear` (remove every entry)"))
    return parser


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("info", "clear"), help="info: folder, size, entries; clear: empty it")
    parser.add_argument("--cache-dir", help="the cache's folder (default: $TEXTRANSFER_CACHE, else "
                                            "~/.cache/textransfer; a run's `stage_cache_dir`)")


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
