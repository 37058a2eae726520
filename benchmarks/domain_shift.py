"""Unsupervised domain adaptation on the Amazon multi-domain reviews (Blitzer et al., 2007).

For each ordered pair of domains (books, dvd, electronics, kitchen): source-only fine-tuning
(train on the source reviews, test on the target's) against ``dann``, ``mmd`` and ``coral``
(source labels plus unlabelled target reviews; target labels never used in training). MiniLM-L6,
one fixed seed. Each domain's 2,000 reviews are split (seeded, stratified) into train / 10%
validation / 20% test; the target's test reviews are held out of the unlabelled pool (the pool
is the target's train split, labels dropped). A source-only model is trained once per source
and tested on all three of its targets.

```
python benchmarks/domain_shift.py --data-dir ../shared/data --out domain_shift.json
python benchmarks/domain_shift.py --data-dir ../shared/data --pairs books->kitchen dvd->electronics --out two.json
python benchmarks/domain_shift.py --data-dir ../shared/data --smoke --out /tmp/smoke.json   # ~1 minute
```

Prints the per-pair table and the mean per method; writes
``{"pairs": {"books->kitchen": {"source_only": acc, "dann": acc, ...}}, "mean": {...}, "cost": {...}}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DOMAINS = ["books", "dvd", "electronics", "kitchen"]
METHODS = ["dann", "mmd", "coral"]


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="the shared corpora folder (holds amazon_multidomain/)")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--pairs", nargs="*", help="subset of pairs such as books->kitchen (default: all 12)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated adaptation strategies")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--examples-per-domain", type=int, default=640, help="source training reviews per run")
    p.add_argument("--max-unlabelled", type=int, default=640, help="unlabelled target reviews per run")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--alignment-weight", type=float, default=None,
                   help="dann's lambda_max and the mmd/coral weight (default: each strategy's own, 1.0)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (64 reviews, 64 tokens), one pair: a check, not a result")
    return p


def task(data_dir: Path, domain: str, train_cap: int, eval_cap=None) -> dict:
    return {"name": domain, "data_files": str(data_dir / "amazon_multidomain" / "all.jsonl"), "format": "jsonl",
            "text_columns": ["text"], "label_column": "label", "label_names": ["negative", "positive"],
            "filters": [f"domain == '{domain}'"], "validation_fraction": 0.1, "test_fraction": 0.2,
            "split_seed": 0, "max_train_samples": train_cap, "max_eval_samples": eval_cap}


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    from textransfer import RunConfig, run_transfer
    from textransfer.strategies import RunContext
    from textransfer.strategies.base import unwrap
    from textransfer.tokenization import tokenize_splits
    from textransfer.trainer import make_accelerator
    from textransfer.transfer import prepare

    if args.smoke:
        args.examples_per_domain, args.max_unlabelled, args.max_length = 64, 64, 64
        args.pairs = args.pairs or ["books->kitchen"]
    data_dir = Path(args.data_dir)
    pairs = args.pairs or [f"{s}->{t}" for s, t in itertools.permutations(DOMAINS, 2)]
    for p in pairs:
        s, _, t = p.partition("->")
        if s not in DOMAINS or t not in DOMAINS or s == t:
            sys.exit(f"--pairs: '{p}' is not source->target over {DOMAINS}")
    methods = [m for m in args.methods.split(",") if m]
    eval_cap = 64 if args.smoke else None
    training = {"num_epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                "eval_batch_size": 64}

    # the knob that sets how hard each method pulls the domains together
    weight_option = {"dann": "lambda_max", "mmd": "weight", "coral": "weight"}

    def config(s, t, strategy):
        if args.alignment_weight is not None and strategy["name"] in weight_option:
            strategy = dict(strategy, **{weight_option[strategy["name"]]: args.alignment_weight})
        return RunConfig.from_dict({
            "model": {"name_or_path": args.model, "max_length": args.max_length},
            "source": task(data_dir, s, args.examples_per_domain, eval_cap),
            "target": task(data_dir, t, args.examples_per_domain, eval_cap),
            "source_training": training, "target_training": training, "seed": args.seed, "baseline": False,
            "strategy": dict(strategy, target_labels=False, max_unlabelled=args.max_unlabelled)
            if strategy["name"] != "finetune" else strategy})

    def context(cfg):
        acc = make_accelerator()
        tokenizer, tasks = prepare(cfg)
        tokenized = {k: tokenize_splits(v.splits, tokenizer, cfg.model.max_length) for k, v in tasks.items()}
        return RunContext(cfg, acc, tokenizer, tasks, tokenized)

    table, cost = {p: {} for p in pairs}, {}
    t_all = time.perf_counter()

    def save_partial():
        # after every run: a long benchmark stopped part-way still leaves what it measured
        partial = {"pairs": table, "cost": {"runs_s": cost}, "complete": False,
                   "settings": {k: v for k, v in vars(args).items() if k != "out"}}
        tmp = Path(f"{args.out}.partial.tmp")
        tmp.write_text(json.dumps(partial, indent=2))
        os.replace(tmp, f"{args.out}.partial")
    # 1. source-only: one model per source, tested on each of its targets
    for source in sorted({p.split("->")[0] for p in pairs}):
        t0 = time.perf_counter()
        targets = [p.split("->")[1] for p in pairs if p.startswith(source + "->")]
        run = context(config(source, targets[0], {"name": "finetune"}))
        trained, _, _ = run.train_stage("source_only", run.pretrained("source"), "source", run.cfg.source_training)
        for target in targets:
            test = context(config(source, target, {"name": "finetune"})).evaluate(unwrap(trained), "target", "test")
            table[f"{source}->{target}"]["source_only"] = test["metrics"]["accuracy"]
        cost[f"source_only:{source}"] = round(time.perf_counter() - t0, 1)
        save_partial()
    # 2. each adaptation method on each pair
    for p in pairs:
        s, _, t = p.partition("->")
        for m in methods:
            t0 = time.perf_counter()
            results = run_transfer(config(s, t, {"name": m}))
            table[p][m] = results["target"]["transfer"]["metrics"]["accuracy"]
            cost[f"{m}:{p}"] = round(time.perf_counter() - t0, 1)
            save_partial()
    columns = ["source_only", *methods]
    mean = {c: sum(table[p][c] for p in pairs) / len(pairs) for c in columns}
    print(f"\n| pair | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}")
    for p in pairs:
        print(f"| {p} | " + " | ".join(f"{100 * table[p][c]:.1f}" for c in columns) + " |")
    print("| **mean** | " + " | ".join(f"**{100 * mean[c]:.1f}**" for c in columns) + " |")
    total = time.perf_counter() - t_all
    print(f"\nCPU cost: {total / 60:.1f} min on {os.cpu_count()} cores (torch threads {__import__('torch').get_num_threads()})")
    out = {"pairs": table, "mean": mean,
           "cost": {"total_s": round(total, 1), "runs_s": cost, "cpu_count": os.cpu_count()},
           "settings": {k: v for k, v in vars(args).items() if k not in ("out",)}}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
