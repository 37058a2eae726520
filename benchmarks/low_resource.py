"""Does news-topic knowledge help sentiment? AG News (subset) -> SST-2 with k labels per class.

For each seed, the source stage (MiniLM-L6 fine-tuned on AG News) is trained once and saved;
then for each k (target labels per class, seeded sample of SST-2 train):

* ``transfer``: the source-tuned encoder, new head, fine-tuned on the k-shot target (``finetune``);
* ``baseline``: the pretrained encoder fine-tuned on the same k-shot target (no transfer);
* ``scratch``: the same architecture re-initialised, trained on the same target;
* ``features``: the source-tuned encoder frozen, its features cached, a linear head trained.

All four use the same target budget and seed; the test set is SST-2 dev (872 sentences).
Prints mean and spread (std over seeds) per k and method, writes JSON and a learning-curve PNG.

```
python benchmarks/low_resource.py --data-dir ../shared/data --out low_resource.json
python benchmarks/low_resource.py --data-dir ../shared/data --smoke --out /tmp/lr.json   # ~1 minute
```
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METHODS = ["transfer", "baseline", "scratch", "features"]


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, help="JSON file; the PNG goes beside it")
    p.add_argument("--ks", default="16,64,256,1024", help="target labels per class")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--source-examples", type=int, default=1000, help="AG News training examples")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--source-epochs", type=int, default=1)
    p.add_argument("--target-epochs", type=int, default=4)
    p.add_argument("--max-target-steps", type=int, default=64, help="cap on target optimiser steps (large k)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--test-examples", type=int, default=None, help="cap on SST-2 dev rows (default: all 872)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a check, not a result")
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    from textransfer import RunConfig, run_transfer
    from textransfer.modeling.loading import save_model
    from textransfer.strategies import RunContext
    from textransfer.data.tokenization import tokenize_splits
    from textransfer.training.accelerator import make_accelerator
    from textransfer.run.transfer import prepare

    if args.smoke:
        args.ks, args.seeds, args.source_examples, args.max_length = "16", "1", 64, 32
        args.target_epochs, args.test_examples = 1, 64
    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    d = Path(args.data_dir)
    source = {"name": "ag_news", "data_files": {s: str(d / "ag_news_subset" / f"{f}.csv") for s, f in
                                                (("train", "train"), ("validation", "dev"), ("test", "test"))},
              "column_names": ["text", "label"], "label_names": ["world", "sports", "business", "tech"],
              "max_train_samples": args.source_examples, "max_eval_samples": 500}

    def target(k):
        return {"name": "sst2", "data_files": {"train": str(d / "sst2" / "train.tsv"), "test": str(d / "sst2" / "dev.tsv")},
                "quoting": 3, "text_columns": ["sentence"], "label_names": ["negative", "positive"],
                "validation_fraction": 0.01, "split_seed": 0, "k_per_class": k, "max_eval_samples": args.test_examples}

    training = {"batch_size": args.batch_size, "learning_rate": 1e-4, "eval_batch_size": 64}
    results = {str(k): {m: [] for m in METHODS} for k in ks}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            # 1. the source stage, once per seed
            cfg = RunConfig.from_dict({"model": {"name_or_path": args.model, "max_length": args.max_length},
                                       "source": source, "target": target(ks[0]), "seed": seed,
                                       "source_training": dict(training, num_epochs=args.source_epochs)})
            acc = make_accelerator()
            tokenizer, tasks = prepare(cfg)
            tokenized = {n: tokenize_splits(t.splits, tokenizer, args.max_length) for n, t in tasks.items()}
            run = RunContext(cfg, acc, tokenizer, tasks, tokenized)
            model, _, _ = run.train_stage("source", run.pretrained("source"), "source", cfg.source_training)
            source_dir = Path(tmp) / f"source-{seed}"
            save_model(model, tokenizer, source_dir)
            # 2. each k: transfer (source-tuned encoder) / baseline / scratch / features
            for k in ks:
                stage = dict(training, num_epochs=args.target_epochs)
                base = {"target": target(k), "seed": seed, "target_training": stage, "baseline": False,
                        "model": {"name_or_path": args.model, "max_length": args.max_length}}
                runs = {
                    "transfer": dict(base, model={"name_or_path": str(source_dir), "max_length": args.max_length}),
                    "baseline": base,
                    "scratch": dict(base, strategy={"name": "scratch"}),
                    "features": dict(base, model={"name_or_path": str(source_dir), "max_length": args.max_length},
                                     strategy={"name": "features", "encoder": "pretrained", "head": "linear"}),
                }
                for method, data in runs.items():
                    cfg_k = RunConfig.from_dict(data)
                    steps_per_epoch = -(-2 * k // args.batch_size)
                    if steps_per_epoch * args.target_epochs > args.max_target_steps and method != "features":
                        cfg_k.target_training.max_steps = args.max_target_steps
                    r = run_transfer(cfg_k)
                    results[str(k)][method].append(r["target"]["transfer"]["metrics"]["accuracy"])
    total = time.perf_counter() - t_all
    summary = {k: {m: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "runs": v}
                   for m, v in by.items()} for k, by in results.items()}
    print(f"\n| k per class | {' | '.join(METHODS)} |\n|---|{'---|' * len(METHODS)}")
    for k in ks:
        print(f"| {k} | " + " | ".join(f"{100 * summary[str(k)][m]['mean']:.1f} ± {100 * summary[str(k)][m]['std']:.1f}"
                                        for m in METHODS) + " |")
    print(f"\nCPU cost: {total / 60:.1f} min on {os.cpu_count()} cores; seeds {seeds}")
    out = Path(args.out)
    out.write_text(json.dumps({"ks": ks, "seeds": seeds, "results": summary, "total_s": round(total, 1),
                               "settings": vars(args)}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in METHODS:
        means = [summary[str(k)][m]["mean"] for k in ks]
        stds = [summary[str(k)][m]["std"] for k in ks]
        ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=m)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("SST-2 labels per class (k)")
    ax.set_ylabel("SST-2 dev accuracy")
    ax.set_title("AG News -> SST-2: learning curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"written: {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
