"""Few target labels: does a related source help? X -> SST-2 with k labels per class.

Two sources beside each other: **IMDB** (the same task, sentiment of movie reviews, in long
reviews rather than sentences) and **AG News** (another task: news topics). For each seed the
source stage (MiniLM-L6 fine-tuned on the source) is trained once and kept; then for each k
(SST-2 train labels per class, a seeded sample):

| arm | what trains on the k-shot target |
| --- | --- |
| ``baseline`` | the pretrained encoder (no transfer), fine-tuned |
| ``transfer`` | the source-tuned encoder, new head, fine-tuned (``finetune``) |
| ``lpft`` | ``transfer`` with LP-FT: the head alone on the frozen encoder for the first quarter of the budget (at ``--lpft-head-lr``), then everything |
| ``joint`` | the pretrained encoder on both tasks at once, one head each (``joint``, alpha 0.5) |
| ``relational_distillation`` | ``transfer`` keeping the source-tuned encoder's pairwise feature structure on target batches |
| ``tapt`` | the pretrained encoder, masked-LM on unlabelled SST-2 sentences first, then fine-tuned (no source) |
| ``source_tapt`` | the source-tuned encoder, masked-LM on unlabelled SST-2 sentences, then fine-tuned |
| ``shipped`` | what a whole textransfer run ships (source stage, target stage and baseline in one run): whichever of its transfer model and its no-transfer baseline scored better on the target's validation split (``results.json``'s ``selected``) |
| ``scratch``, ``features`` | (not run by default) re-initialised encoder; frozen source-tuned encoder + linear head |

The arms share the target budget (``--target-epochs``, capped at ``--max-target-steps``), the seed
and the test set: SST-2 dev (872 sentences). Per k it prints mean ± std over seeds, and for each arm
against the baseline the pooled difference with a 95% paired-bootstrap interval over the test
sentences (all seeds' predictions pooled, sentences resampled) and the per-seed differences: an
arm is **ahead beyond noise** when that interval is above 0 and it is ahead in every seed, and
**not significantly worse** when the interval reaches 0 or above.

```
python benchmarks/low_resource.py --data-dir ../shared/data --out low_resource.json          # writes low_resource.png
python benchmarks/low_resource.py --data-dir ../shared/data --sources imdb --ks 16,64 --out imdb.json
python benchmarks/low_resource.py --data-dir ../shared/data --smoke --out /tmp/lr.json         # a check
python benchmarks/low_resource.py --data-dir ../shared/data --out low_resource.json --resume  # go on after a stop
```

Every finished run is added to ``OUT.partial`` (accuracy and test predictions); ``--resume`` goes on
from it with the same settings, and may add arms, sources, ks or seeds. Source models are kept in
``OUT.work/`` until the run completes.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from tables import interval_text, print_table
from partial_results import load_partial, save_partial, write_final
from arm_run import run_arm_predictions
from source_stage import source_folder, train_source_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SOURCES = ["imdb", "ag_news"]
METHODS = ["baseline", "transfer", "lpft", "joint", "relational_distillation", "tapt", "source_tapt", "shipped"]
OPTIONAL_METHODS = ["scratch", "features"]
# arms that do not use the source: run once per (k, seed) and shown under every source
SOURCE_FREE = {"baseline", "tapt", "scratch"}
# arms that start from the kept source-tuned model (``joint`` and ``shipped`` train their own source stage)
LOADS_SOURCE_MODEL = {"transfer", "lpft", "source_tapt", "features", "relational_distillation"}
# LP-FT's head-only share of the target budget
LPFT_WARMUP_SHARE = 0.25


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, help="JSON file; the PNG goes beside it")
    p.add_argument("--sources", default=",".join(SOURCES), help="comma-separated: imdb, ag_news")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated arms ({', '.join(METHODS + OPTIONAL_METHODS)})")
    p.add_argument("--ks", default="16,64,256,1024", help="target labels per class")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--source-examples", type=int, default=1000, help="source training examples")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--source-epochs", type=int, default=1)
    p.add_argument("--target-epochs", type=int, default=4)
    p.add_argument("--max-target-steps", type=int, default=64, help="cap on target optimiser steps (large k)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--lpft-head-lr", type=float, default=1e-3, help="lpft: the head's learning rate")
    p.add_argument("--tapt-sentences", type=int, default=2000, help="tapt: unlabelled SST-2 train sentences")
    p.add_argument("--test-examples", type=int, default=None, help="cap on SST-2 dev rows (default: all 872)")
    p.add_argument("--resume", action="store_true", help="go on from OUT.partial, left by a stopped run")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a check, not a result")
    return p


# ---------------------------------------------------------------------------- tasks
def source_task(data_dir: Path, name: str, examples: int) -> dict:
    if name == "imdb":
        return {"name": "imdb", "data_files": {s: str(data_dir / "imdb" / f"{s}.parquet") for s in ("train", "test")},
                "text_columns": ["text"], "label_names": ["negative", "positive"], "validation_fraction": 0.05,
                "split_seed": 0, "max_train_samples": examples, "max_eval_samples": 500}
    return {"name": "ag_news", "data_files": {s: str(data_dir / "ag_news_subset" / f"{f}.csv") for s, f in
                                             (("train", "train"), ("validation", "dev"), ("test", "test"))},
            "column_names": ["text", "label"], "label_names": ["world", "sports", "business", "tech"],
            "max_train_samples": examples, "max_eval_samples": 500}


def target_task(data_dir: Path, k: int, test_cap) -> dict:
    return {"name": "sst2", "data_files": {"train": str(data_dir / "sst2" / "train.tsv"),
                                           "test": str(data_dir / "sst2" / "dev.tsv")},
            "quoting": 3, "text_columns": ["sentence"], "label_names": ["negative", "positive"],
            "validation_fraction": 0.01, "split_seed": 0, "k_per_class": k, "max_eval_samples": test_cap}


def unlabelled_sentences(data_dir: Path, count: int, path: Path) -> Path:
    """A seeded sample of SST-2 train sentences, one a line (the masked-LM text; no label read)."""
    if not path.is_file():
        lines = (data_dir / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
        sentences = [line.split("\t")[0].strip() for line in lines if line.strip()]
        random.Random(0).shuffle(sentences)
        path.write_text("\n".join(sentences[:count]) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- one arm
def arm_config(args, method: str, source: str, k: int, seed: int, work: Path) -> dict:
    """The run config of one arm (a dict for ``RunConfig.from_dict``)."""
    d = Path(args.data_dir)
    pretrained = {"name_or_path": args.model, "max_length": args.max_length}
    source_tuned = {"name_or_path": str(source_folder(work, source, seed)), "max_length": args.max_length}
    training = {"batch_size": args.batch_size, "learning_rate": args.learning_rate, "eval_batch_size": 64,
                "num_epochs": args.target_epochs, "max_steps": target_steps(args, k)}
    tapt = {"before": ["target"], "text": "files", "files": [str(unlabelled_sentences(d, args.tapt_sentences,
                                                                                      work / "sst2_sentences.txt"))],
            "batch_size": args.batch_size, "learning_rate": args.learning_rate, "heldout_fraction": 0.05}
    base = {"target": target_task(d, k, args.test_examples), "seed": seed, "baseline": False,
            "target_training": training, "model": pretrained}
    if method in LOADS_SOURCE_MODEL:
        base["model"] = source_tuned
    if method == "lpft":
        warmup = max(1, int(LPFT_WARMUP_SHARE * (training["max_steps"] or steps_uncapped(args, k))))
        training.update(head_warmup_steps=warmup, head_learning_rate=args.lpft_head_lr)
    elif method == "joint":
        base.update(source=source_task(d, source, args.source_examples), strategy={"name": "joint", "alpha": 0.5})
    elif method == "relational_distillation":
        # no source task: the teacher is the loaded (source-tuned) encoder, trained once per seed
        base["strategy"] = {"name": "relational_distillation"}
    elif method in ("tapt", "source_tapt"):
        base["adaptive_pretraining"] = tapt
    elif method == "shipped":
        # a whole run, source stage included (from the stage cache after a seed's first k), so that
        # its baseline is the pretrained encoder and `selected` chooses as a user's run would
        base.update(source=source_task(d, source, args.source_examples), source_training=source_training(args),
                    baseline=True)
    elif method == "scratch":
        base["strategy"] = {"name": "scratch"}
    elif method == "features":
        base["strategy"] = {"name": "features", "encoder": "pretrained", "head": "linear"}
    return base


def steps_uncapped(args, k: int) -> int:
    return -(-2 * k // args.batch_size) * args.target_epochs


def target_steps(args, k: int):
    """The step cap when the epochs would exceed it (large k), else None (the epochs decide)."""
    return args.max_target_steps if steps_uncapped(args, k) > args.max_target_steps else None


def run_arm(args, method: str, source: str, k: int, seed: int, work: Path) -> dict:
    """Train one arm; its test accuracy and predictions (in SST-2 dev's row order)."""
    from textransfer import RunConfig

    return run_arm_predictions(RunConfig.from_dict(arm_config(args, method, source, k, seed, work)), "low_resource_",
                               shipped=method == "shipped")


def source_training(args) -> dict:
    """The source stage's training settings (the kept source models' and ``shipped``'s)."""
    return {"batch_size": args.batch_size, "learning_rate": args.learning_rate, "eval_batch_size": 64,
            "num_epochs": args.source_epochs}


def train_source(args, source: str, seed: int, work: Path) -> None:
    """The source stage of one seed, saved as a model folder the arms load."""
    from textransfer import RunConfig

    folder = source_folder(work, source, seed)
    if (folder / "config.json").is_file():
        return
    cfg = RunConfig.from_dict({
        "model": {"name_or_path": args.model, "max_length": args.max_length}, "seed": seed,
        "source": source_task(Path(args.data_dir), source, args.source_examples),
        "target": target_task(Path(args.data_dir), 16, args.test_examples),
        "source_training": source_training(args)})
    train_source_model(cfg, folder, f"{source}, seed {seed}")


# ---------------------------------------------------------------------------- the table
def unit_key(method: str, source: str, k: int, seed: int) -> str:
    return f"{'-' if method in SOURCE_FREE else source}:{method}:k{k}:s{seed}"


def compare(runs: list, baseline: list, resamples: int = 1000) -> dict:
    """Pooled paired bootstrap of (arm - baseline) accuracy over all seeds' test predictions."""
    from textransfer.metrics.significance import paired_bootstrap

    pred = [p for r in runs for p in r["predictions"]]
    base = [p for r in baseline for p in r["predictions"]]
    refs = [y for r in runs for y in r["references"]]
    interval = paired_bootstrap(pred, base, refs, num_labels=2, resamples=resamples, seed=0)["accuracy"]
    per_seed = [r["accuracy"] - b["accuracy"] for r, b in zip(runs, baseline)]
    return {"difference": statistics.mean(per_seed), "low": interval["low"], "high": interval["high"],
            "per_seed": per_seed, "ahead_beyond_noise": interval["low"] > 0 and all(d > 0 for d in per_seed),
            "not_significantly_worse": interval["high"] >= 0}


def summarise(done: dict, sources, methods, ks, seeds) -> dict:
    summary = {}
    for source in sources:
        for k in ks:
            row = {}
            base = [done[unit_key("baseline", source, k, s)] for s in seeds]
            for m in methods:
                runs = [done[unit_key(m, source, k, s)] for s in seeds]
                accs = [r["accuracy"] for r in runs]
                row[m] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                          "runs": accs, **({"selected": [r["selected"] for r in runs]} if m == "shipped" else {})}
                if m != "baseline":
                    row[m]["vs_baseline"] = compare(runs, base)
            summary.setdefault(source, {})[str(k)] = row
    return summary


def print_tables(summary: dict, methods, ks) -> None:
    for source, by_k in summary.items():
        print_table(f"{source} -> sst2: SST-2 dev accuracy, mean ± std over seeds; [95% interval of the pooled "
                    f"difference to the baseline]; * ahead beyond noise, ! significantly worse", by_k, methods, ks,
                    lambda cell: f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}"
                                 f"{interval_text(cell.get('vs_baseline'))}")


def plot(summary: dict, methods, ks, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4), squeeze=False)
    for ax, (source, by_k) in zip(axes[0], summary.items()):
        for m in methods:
            ax.errorbar(ks, [by_k[str(k)][m]["mean"] for k in ks], yerr=[by_k[str(k)][m]["std"] for k in ks],
                        marker="o", capsize=3, label=m)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("SST-2 labels per class (k)")
        ax.set_ylabel("SST-2 dev accuracy")
        ax.set_title(f"{source} -> SST-2")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if args.smoke:
        args.ks, args.seeds, args.source_examples, args.max_length = "16", "1", 64, 32
        args.target_epochs, args.test_examples, args.tapt_sentences = 1, 64, 64
    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    sources = [s for s in args.sources.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    bad = [s for s in sources if s not in SOURCES] + [m for m in methods if m not in METHODS + OPTIONAL_METHODS]
    if bad:
        sys.exit(f"unknown source or arm: {bad}; sources: {SOURCES}; arms: {METHODS + OPTIONAL_METHODS}")
    if "baseline" not in methods:
        methods.insert(0, "baseline")  # every comparison is against it
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "resume", "sources", "methods", "ks", "seeds")}
    out, partial = Path(args.out), Path(f"{args.out}.partial")
    work = Path(f"{args.out}.work")
    work.mkdir(exist_ok=True)
    done = load_partial(args.resume, settings, partial, finished=out)
    units = list(dict.fromkeys(unit_key(m, src, k, s) for s in seeds for src in sources for k in ks for m in methods))
    print(f"{sum(u not in done for u in units)} of {len(units)} runs to do", flush=True)
    t_all = time.perf_counter()
    for seed in seeds:
        for source in sources:
            for k in ks:
                for method in methods:
                    key = unit_key(method, source, k, seed)
                    if key in done:
                        continue
                    if method in LOADS_SOURCE_MODEL:
                        train_source(args, source, seed, work)
                    t0 = time.perf_counter()
                    done[key] = dict(run_arm(args, method, source, k, seed, work), seconds=round(time.perf_counter() - t0, 1))
                    save_partial(partial, done, settings)
                    print(f"[{sum(u in done for u in units)}/{len(units)}] {key}: {100 * done[key]['accuracy']:.1f} "
                          f"({done[key]['seconds']:.0f} s)", flush=True)
    summary = summarise(done, sources, methods, ks, seeds)
    print_tables(summary, methods, ks)
    if "shipped" in methods:
        for source, by_k in summary.items():
            print(f"{source}: the arm `shipped` shipped, per k over seeds {seeds}: "
                  + "; ".join(f"k={k}: {', '.join(by_k[str(k)]['shipped']['selected'])}" for k in ks))
    total = time.perf_counter() - t_all
    print(f"\nCost: {total / 60:.1f} min wall-clock this invocation on {os.cpu_count()} cores; "
          f"{sum(r['seconds'] for r in done.values()) / 60:.1f} min summed over the {len(done)} runs; seeds {seeds}")
    write_final(out, {"ks": ks, "seeds": seeds, "sources": sources, "results": summary, "wall_s": round(total, 1),
                      "settings": settings, "runs": done}, partial, work)
    plot(summary, methods, ks, out.with_suffix(".png"))
    print(f"written: {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
