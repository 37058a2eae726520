"""Unsupervised domain adaptation on the Amazon multi-domain reviews (Blitzer et al., 2007).

For each ordered pair of domains (books, dvd, electronics, kitchen): source-only fine-tuning
(train on the source reviews, test on the target's) against the methods that use unlabelled
target reviews besides the source labels (target labels never used in training):

* ``dann``, ``mmd``, ``coral``: feature alignment in the source stage;
* ``dapt``: adaptive pretraining (masked LM on the target's reviews) before source fine-tuning;
* ``udalm``: one encoder on ``lambda * L_cls(source) + (1 - lambda) * L_mlm(target)``;
* ``self_training``: the source model's confident, class-balanced pseudo-labels of the target's
  reviews, trained on with the source data;
* ``instance_weighting``: source reviews weighted by a domain classifier's p(target|x)/p(source|x);
* ``dapt_self_training``: the two that won most often, one after the other: ``dapt``'s masked LM
  on the target's reviews before the source stage, then ``self_training``'s round;
* ``dapt_self_training_2rounds``: the same with a second round (the first round's model labels
  the pool again, and the second round trains on its labels); ``dapt_self_training_3rounds``: a third;
* ``lpft``: source-only with LP-FT (Kumar et al., 2022) in the source stage: the head alone on the
  frozen encoder for the first quarter of the steps, then everything (no target text at all).

MiniLM-L6, one fixed seed. Each domain's 2,000 reviews are split (seeded, stratified) into train / 10%
validation / 20% test; the target's test reviews are held out of the unlabelled pool (the pool
is the target's train split, labels dropped). A source-only model is trained once per source
and tested on all three of its targets.

```
python benchmarks/domain_shift.py --data-dir ../shared/data --jobs 2 --out domain_shift.json   # ~1 h on 2 cores
python benchmarks/domain_shift.py --data-dir ../shared/data --pairs 'books->kitchen' 'dvd->electronics' --out two.json
python benchmarks/domain_shift.py --data-dir ../shared/data --smoke --out /tmp/smoke.json   # ~1 minute
```

Prints the per-pair table and the mean per method; writes
``{"pairs": {"books->kitchen": {"source_only": acc, "dann": acc, ...}}, "mean": {...}, "cost": {...}}``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DOMAINS = ["books", "dvd", "electronics", "kitchen"]
METHODS = ["dann", "mmd", "coral", "dapt", "udalm", "self_training", "instance_weighting", "lpft",
           "dapt_self_training", "dapt_self_training_2rounds", "dapt_self_training_3rounds"]


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="the shared corpora folder (holds amazon_multidomain/)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--pairs", nargs="*", help="subset of pairs such as books->kitchen (default: all 12)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated adaptation strategies")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--examples-per-domain", type=int, default=1400,
                   help="source training reviews per run (1,400: a domain's whole train split)")
    p.add_argument("--max-unlabelled", type=int, default=1400,
                   help="unlabelled target reviews per run (1,400: the target's whole train split)")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    # at 1.0 (the strategies' own default) dann and mmd fell to chance with 640 reviews; 0.1 worked
    p.add_argument("--alignment-weight", type=float, default=0.1,
                   help="dann's lambda_max and the mmd/coral weight (the strategies' own default is 1.0)")
    p.add_argument("--mlm-learning-rate", type=float, default=1e-4,
                   help="dapt: learning rate of the masked-LM stage (one pass over the unlabelled reviews)")
    p.add_argument("--lpft-head-lr", type=float, default=1e-3, help="lpft: the head's learning rate")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time, each in its own process with cpu_count/jobs torch threads")
    p.add_argument("--resume", action="store_true", help="go on from OUT.partial, left by a stopped run")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (64 reviews, 64 tokens), one pair: a check, not a result")
    return p


def task(data_dir: Path, domain: str, train_cap: int, eval_cap=None) -> dict:
    return {"name": domain, "data_files": str(data_dir / "amazon_multidomain" / "all.jsonl"), "format": "jsonl",
            "text_columns": ["text"], "label_column": "label", "label_names": ["negative", "positive"],
            "filters": [f"domain == '{domain}'"], "validation_fraction": 0.1, "test_fraction": 0.2,
            "split_seed": 0, "max_train_samples": train_cap, "max_eval_samples": eval_cap}


# the knob that sets how hard each method pulls the domains together
WEIGHT_OPTION = {"dann": "lambda_max", "mmd": "weight", "coral": "weight"}


def target_mlm_stage(args) -> dict:
    """``dapt``'s stage: one pass of masked LM over the target's unlabelled reviews, before the source stage."""
    return {"before": ["source"], "text": "target", "max_examples": args.max_unlabelled,
            "num_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.mlm_learning_rate}


def method_options(args, method: str) -> dict:
    """The run options of one method: its strategy, and for the ``dapt`` ones the adaptive-pretraining stage."""
    if method == "source_only":
        return {"strategy": {"name": "finetune"}}
    if method == "dapt":  # masked LM on the target's unlabelled reviews, then the source stage
        return {"strategy": {"name": "finetune", "target_labels": False}, "adaptive_pretraining": target_mlm_stage(args)}
    if method.startswith("dapt_self_training"):  # the same masked LM, then self_training's source stage and rounds
        rounds = int(method.rsplit("_", 1)[1].removesuffix("rounds")) if method.endswith("rounds") else 1
        return {"strategy": {"name": "self_training", "target_labels": False, "max_unlabelled": args.max_unlabelled,
                             "rounds": rounds},
                "adaptive_pretraining": target_mlm_stage(args)}
    if method == "lpft":  # the source stage's first quarter trains the head alone (see run_config)
        return {"strategy": {"name": "finetune", "target_labels": False}}
    strategy = {"name": method, "target_labels": False, "max_unlabelled": args.max_unlabelled}
    if method in WEIGHT_OPTION:
        strategy[WEIGHT_OPTION[method]] = args.alignment_weight
    return {"strategy": strategy}


def run_config(args, source: str, target: str, method: str):
    from textransfer import RunConfig

    eval_cap = 64 if args.smoke else None
    training = {"num_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                "eval_batch_size": 64}
    source_training = dict(training)
    if method == "lpft":  # a quarter of the source stage's optimiser steps (88 at the defaults: 22)
        steps = -(-args.examples_per_domain // args.batch_size) * args.epochs
        source_training.update(head_warmup_steps=max(1, steps // 4), head_learning_rate=args.lpft_head_lr)
    data_dir = Path(args.data_dir)
    return RunConfig.from_dict({
        "model": {"name_or_path": args.model, "max_length": args.max_length},
        "source": task(data_dir, source, args.examples_per_domain, eval_cap),
        "target": task(data_dir, target, args.examples_per_domain, eval_cap),
        "source_training": source_training, "target_training": training, "seed": args.seed, "baseline": False,
        **method_options(args, method)})


def run_unit(args, unit):
    """One unit of work: ``("source_only", source, [targets])`` or ``(method, source, target)``.

    Returns ``{pair: {column: accuracy}}`` and the unit's wall-clock seconds."""
    import torch

    from textransfer import run_transfer
    from textransfer.strategies import RunContext
    from textransfer.strategies.base import unwrap
    from textransfer.data.tokenization import tokenize_splits
    from textransfer.training.accelerator import make_accelerator
    from textransfer.run.transfer import prepare

    if args.jobs > 1:  # each worker gets its share of the cores; more threads than cores only thrash
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.jobs))

    def context(cfg):
        tokenizer, tasks = prepare(cfg)
        tokenized = {k: tokenize_splits(v.splits, tokenizer, cfg.model.max_length) for k, v in tasks.items()}
        return RunContext(cfg, make_accelerator(), tokenizer, tasks, tokenized)

    t0 = time.perf_counter()
    kind, source, target = unit
    if kind == "source_only":  # one model per source, tested on each of its targets
        runs = {t: context(run_config(args, source, t, "source_only")) for t in target}
        run = runs[target[0]]
        trained, _, _ = run.train_stage("source_only", run.pretrained("source"), "source", run.cfg.source_training)
        found = {}
        for t, target_run in runs.items():
            test = target_run.evaluate(unwrap(trained), "target", "test")
            found[f"{source}->{t}"] = {"source_only": test.metrics["accuracy"]}
    else:
        with tempfile.TemporaryDirectory(prefix="domain_shift_") as out:
            results = run_transfer(run_config(args, source, target, kind), output_dir=out, overwrite=True)
        found = {f"{source}->{target}": {kind: results["target"]["transfer"]["metrics"]["accuracy"]}}
    return found, round(time.perf_counter() - t0, 1)


def print_table(table, pairs, columns, mean, wins) -> None:
    print(f"\n| pair | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}")
    for p in pairs:
        print(f"| {p} | " + " | ".join(f"{100 * table[p][c]:.1f}" for c in columns) + " |")
    print("| **mean** | " + " | ".join(f"**{100 * mean[c]:.1f}**" for c in columns) + " |")
    print("| wins vs source-only | - | " + " | ".join(f"{wins[c]}/{len(pairs)}" for c in columns[1:]) + " |")


def goal(mean, wins, n_pairs) -> dict:
    """The issue's goal: the best method's mean >= source-only + 3.0 points, and it wins >= 9 of 12 pairs."""
    methods = [c for c in mean if c != "source_only"]
    if not methods:
        return {}
    best = max(methods, key=lambda c: mean[c])
    # rounded: accuracies are counts / 400, so a margin of exactly 3.0 points (144 of 4,800 test
    # reviews) must not read 2.9999999999999916 after the float sums of the means
    margin = round(100 * (mean[best] - mean["source_only"]), 6)
    met = margin >= 3.0 and wins[best] >= 0.75 * n_pairs
    print(f"best method: {best}, mean {100 * mean[best]:.1f} vs source-only {100 * mean['source_only']:.1f} "
          f"({margin:+.1f} points), wins on {wins[best]}/{n_pairs} pairs: goal (+3.0, >= 9/12) "
          f"{'met' if met else 'NOT met'}")
    return {"best": best, "margin_points": round(margin, 2), "wins": wins[best], "met": met}


def same_settings(previous: dict, now: dict, parser) -> bool:
    """Whether a partial file's settings are today's. An option added to the script since (such as
    ``--lpft-head-lr``) matches when it is at its default: the older runs did not depend on it."""
    defaults = vars(parser.parse_args(["--data-dir", "-", "--out", "-"]))
    return all(previous.get(k, defaults[k]) == v for k, v in now.items()) and set(previous) <= set(now)


def unit_name(unit) -> str:
    kind, source, target = unit
    return f"source_only:{source}" if kind == "source_only" else f"{kind}:{source}->{target}"


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if args.smoke:
        args.examples_per_domain, args.max_unlabelled, args.max_length = 64, 64, 64
        args.pairs = args.pairs or ["books->kitchen"]
    if args.jobs < 1:
        sys.exit("--jobs must be >= 1")
    pairs = args.pairs or [f"{s}->{t}" for s, t in itertools.permutations(DOMAINS, 2)]
    for p in pairs:
        s, _, t = p.partition("->")
        if s not in DOMAINS or t not in DOMAINS or s == t:
            sys.exit(f"--pairs: '{p}' is not source->target over {DOMAINS}")
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            sys.exit(f"--methods: unknown method '{m}'; choose among {', '.join(METHODS)}")
    # what a run's result depends on; the pairs and methods are not in it, so a later --resume may
    # add pairs or methods to a table measured with the same settings
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "resume", "jobs", "pairs", "methods")}
    partial_path = Path(f"{args.out}.partial")
    table, cost = {p: {} for p in pairs}, {}
    # a stopped run's partial file, or a finished table that this invocation adds methods or pairs to
    previous_path = partial_path if partial_path.is_file() else Path(args.out)
    if args.resume and previous_path.is_file():
        # go on from a stopped run, but only one with the same settings: mixed budgets would mislead
        previous = json.loads(previous_path.read_text())
        if not same_settings(previous.get("settings") or {}, settings, make_parser()):
            sys.exit(f"--resume: {previous_path} was written with other settings:\n  {previous.get('settings')}\n"
                     f"now:\n  {settings}\nrun without --resume, or with the same options.")
        for p, row in previous["pairs"].items():
            if p in table:
                table[p].update(row)
        cost.update(previous["cost"]["runs_s"])
    elif partial_path.exists():
        sys.exit(f"{partial_path} exists (a stopped run): pass --resume to go on from it, or delete it.")

    units = [("source_only", s, [p.split("->")[1] for p in pairs if p.startswith(s + "->")])
             for s in sorted({p.split("->")[0] for p in pairs})]
    units += [(m, *p.split("->")) for p in pairs for m in methods]
    todo = [u for u in units if unit_name(u) not in cost]
    print(f"{len(todo)} of {len(units)} runs to do, {args.jobs} at a time", flush=True)

    def save_partial():
        # after every run: a long benchmark stopped part-way still leaves what it measured
        partial = {"pairs": table, "cost": {"runs_s": cost}, "complete": False, "settings": settings}
        tmp = Path(f"{args.out}.partial.tmp")
        tmp.write_text(json.dumps(partial, indent=2))
        os.replace(tmp, partial_path)

    def record(unit, found, seconds):
        for p, row in found.items():
            table[p].update(row)
        cost[unit_name(unit)] = seconds
        save_partial()
        print(f"[{len(cost)}/{len(units)}] {unit_name(unit)}: "
              + ", ".join(f"{p} {c} {100 * a:.1f}" for p, row in found.items() for c, a in row.items())
              + f" ({seconds:.0f} s)", flush=True)

    t_all = time.perf_counter()
    if args.jobs == 1:
        for unit in todo:
            record(unit, *run_unit(args, unit))
    else:
        # separate processes, not threads: each run owns its torch threads and its memory
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run_unit, args, u): u for u in todo}
            for f in concurrent.futures.as_completed(futures):
                record(futures[f], *f.result())
    # every method measured on all these pairs, this invocation's and those resumed from
    methods = [m for m in METHODS if all(m in table[p] for p in pairs)]
    columns = ["source_only", *methods]
    mean = {c: sum(table[p][c] for p in pairs) / len(pairs) for c in columns}
    wins = {c: sum(table[p][c] > table[p]["source_only"] for p in pairs) for c in methods}
    print_table(table, pairs, columns, mean, wins)
    total = time.perf_counter() - t_all
    cpu = sum(cost.values())
    print(f"\nCost: {total / 60:.1f} min wall-clock this invocation, {args.jobs} job(s) on {os.cpu_count()} cores; "
          f"{cpu / 60:.1f} min summed over the {len(cost)} runs in the table")
    out = {"pairs": table, "mean": mean, "wins_over_source_only": wins, "goal": goal(mean, wins, len(pairs)),
           "cost": {"wall_s": round(total, 1), "runs_s": cost, "runs_total_s": round(cpu, 1),
                    "cpu_count": os.cpu_count(), "jobs": args.jobs},
           "settings": settings}
    tmp = Path(f"{args.out}.tmp")
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, args.out)
    partial_path.unlink(missing_ok=True)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
