"""Do the transferability scores predict real transfer gains? Kendall tau of each score's ranking
of candidate sources against the gains measured by training.

For each **target** (default: SST-2 and Amazon kitchen reviews, ``k`` labelled examples a class)
and each candidate **source** among AG News, IMDB, Rotten Tomatoes, SST-2 and the four Amazon
domains (a target is never its own source: 7 candidates per target):

1. **measured gain**: the source stage (MiniLM-L6 fine-tuned on ``--source-examples`` source rows,
   ``--source-epochs``) is trained once per (source, seed) and kept; the target stage fine-tunes it
   on the k-shot target (new head, ``--target-epochs`` capped at ``--max-target-steps``); the
   **no-transfer baseline** fine-tunes the pretrained encoder with the same budget and seed. Gain =
   transfer test accuracy - baseline test accuracy, averaged over seeds (``--test-examples`` rows of
   the target's test split, the same rows for every arm).
2. **scores**, by ``textransfer.rank`` on the same k-shot target train rows, with no training:
   LogME, H-score and LEEP of each source-tuned model (its head over the source labels gives
   LEEP), and centroid cosine and proxy A-distance between each source's text and the target's
   (MiniLM embeddings). PAD is lower-is-better, so its tau is taken for -PAD. Scores are averaged
   over the seeds' source models.
3. **tau**: per target, Kendall's tau-b between each score and the mean gains over the
   candidates; then the mean over targets. 1 = the score orders the sources exactly as their gains.

```
python benchmarks/transferability.py --data-dir ../shared/data --out transferability.json     # writes transferability.png
python benchmarks/transferability.py --data-dir ../shared/data --out t.json --targets sst2 --seeds 1
python benchmarks/transferability.py --data-dir ../shared/data --smoke --out /tmp/tr.json        # a check, a few minutes
python benchmarks/transferability.py --data-dir ../shared/data --out transferability.json --resume  # after a stop
```

Budget of the default run: 8 sources x 3 seeds source stages (1,000 rows, 1 epoch, 64 tokens) and
2 targets x (7 + 1 baseline) x 3 seeds target runs (2 x 256 rows, at most 4 epochs / 96 optimiser
steps, batch 16): 24 source stages and 48 target runs. Every finished unit is added to
``OUT.partial``; ``--resume`` goes on from it with the same settings (and may add targets, sources
or seeds, e.g. ``--seeds 1,2,3`` after a ``--seeds 1`` run). Source models are kept in
``OUT.work/`` until the run completes.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from partial_results import load_partial, save_partial, write_final
from source_stage import source_folder, train_source_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

AMAZON = ["books", "dvd", "electronics", "kitchen"]
TASKS = ["ag_news", "imdb", "rt_polarity", "sst2"] + AMAZON
TARGETS = ["sst2", "kitchen"]
# score -> sign that makes "higher predicts a larger gain" (PAD: closer domains, lower distance)
SCORE_SIGN = {"logme": 1, "h_score": 1, "leep": 1, "centroid_cosine": 1, "proxy_a_distance": -1}
SENTIMENT = ["negative", "positive"]


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True, help="JSON file; the PNG goes beside it")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, among {', '.join(TASKS)}")
    p.add_argument("--sources", default=",".join(TASKS), help="comma-separated candidate sources (a target is "
                                                              "never its own source)")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--k", type=int, default=256, help="target labelled examples per class")
    p.add_argument("--source-examples", type=int, default=1000, help="source training rows")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--source-epochs", type=int, default=1)
    p.add_argument("--target-epochs", type=int, default=4)
    p.add_argument("--max-target-steps", type=int, default=96, help="cap on target optimiser steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--test-examples", type=int, default=500, help="target test rows (the same for every arm)")
    p.add_argument("--resume", action="store_true", help="go on from OUT.partial, left by a stopped run")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a check, not a result")
    return p


# ---------------------------------------------------------------------------- tasks
def task(data_dir: Path, name: str, train_rows=None, k=None, test_rows=None) -> dict:
    """A TaskConfig dict for one corpus of ../shared/data (train capped, k-shot, test capped)."""
    d = Path(data_dir)
    caps = {"max_train_samples": train_rows, "k_per_class": k, "max_eval_samples": test_rows, "split_seed": 0}
    if name == "ag_news":
        spec = {"data_files": {s: str(d / "ag_news_subset" / f"{f}.csv") for s, f in
                               (("train", "train"), ("validation", "dev"), ("test", "test"))},
                "column_names": ["text", "label"], "label_names": ["world", "sports", "business", "tech"]}
    elif name == "imdb":
        spec = {"data_files": {s: str(d / "imdb" / f"{s}.parquet") for s in ("train", "test")},
                "label_names": SENTIMENT, "validation_fraction": 0.05}
    elif name == "rt_polarity":
        spec = {"data_files": str(d / "rt_polarity" / "rt_polarity.csv"), "label_names": SENTIMENT,
                "validation_fraction": 0.1, "test_fraction": 0.2}
    elif name == "sst2":
        spec = {"data_files": {"train": str(d / "sst2" / "train.tsv"), "test": str(d / "sst2" / "dev.tsv")},
                "quoting": 3, "text_columns": ["sentence"], "label_names": SENTIMENT, "validation_fraction": 0.01}
    elif name in AMAZON:
        spec = {"data_files": str(d / "amazon_multidomain" / "all.jsonl"), "filters": [f"domain == '{name}'"],
                "label_names": SENTIMENT, "validation_fraction": 0.1, "test_fraction": 0.25}
    else:
        raise ValueError(name)
    return {"name": name, **spec, **{key: v for key, v in caps.items() if v is not None}}


def source_task(args, name: str) -> dict:
    return task(args.data_dir, name, train_rows=args.source_examples, test_rows=500)


def target_task(args, name: str) -> dict:
    return task(args.data_dir, name, k=args.k, test_rows=args.test_examples)


# ---------------------------------------------------------------------------- training
def train_source(args, source: str, seed: int, work: Path) -> Path:
    """The source stage of one seed, saved as a model folder (a candidate, and the transfer arm's start)."""
    from textransfer import RunConfig

    folder = source_folder(work, source, seed)
    if (folder / "config.json").is_file():
        return folder
    cfg = RunConfig.from_dict({
        "model": {"name_or_path": args.model, "max_length": args.max_length}, "seed": seed,
        # the source doubles as the (unused) target: a RunConfig needs one, and this loads nothing new
        "source": source_task(args, source), "target": source_task(args, source),
        "source_training": {"batch_size": args.batch_size, "learning_rate": args.learning_rate, "eval_batch_size": 64,
                            "num_epochs": args.source_epochs}})
    train_source_model(cfg, folder, f"{source}, seed {seed}")
    return folder


def target_config(args, target: str, model: str, seed: int) -> dict:
    training = {"batch_size": args.batch_size, "learning_rate": args.learning_rate, "eval_batch_size": 64,
                "num_epochs": args.target_epochs, "max_steps": target_steps(args)}
    return {"model": {"name_or_path": model, "max_length": args.max_length}, "target": target_task(args, target),
            "seed": seed, "baseline": False, "target_training": training}


def target_steps(args):
    """The step cap when the epochs would exceed it, else None (the epochs decide)."""
    uncapped = -(-2 * args.k // args.batch_size) * args.target_epochs
    return args.max_target_steps if uncapped > args.max_target_steps else None


def run_target(args, target: str, model: str, seed: int) -> float:
    """Fine-tune ``model`` (pretrained or source-tuned) on the k-shot target; its test accuracy."""
    from textransfer import RunConfig, run_transfer

    cfg = RunConfig.from_dict(target_config(args, target, model, seed))
    with tempfile.TemporaryDirectory(prefix="transferability_") as out:
        results = run_transfer(cfg, output_dir=out, overwrite=True)
    return results["target"]["transfer"]["metrics"]["accuracy"]


def score_sources(args, target: str, sources, seed: int, work: Path) -> dict:
    """``textransfer.rank`` of the seed's source-tuned models and the sources' task files."""
    import yaml

    from textransfer import RankConfig, RunConfig, rank

    cfg = RunConfig.from_dict(target_config(args, target, args.model, seed))
    files = []
    for source in sources:
        path = work / "tasks" / f"{source}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(source_task(args, source)))
        files.append(str(path))
    models = [str(source_folder(work, s, seed)) for s in sources]
    t0 = time.perf_counter()
    report = rank(cfg, models + files, work / f"rank-{target}-{seed}", options=RankConfig(max_examples=2 * args.k))
    seconds = time.perf_counter() - t0
    scores = {s: {} for s in sources}
    for source, model_name, file_name in zip(sources, models, files):
        scores[source].update(next(c.scores for c in report.candidates if c.spec == model_name))
        scores[source].update(next(c.scores for c in report.candidates if c.spec == file_name))
    return {"scores": scores, "seconds": round(seconds, 1), "rows": report.target["rows"]}


# ---------------------------------------------------------------------------- the table
def summarise(done: dict, targets, sources_of, seeds) -> dict:
    from textransfer.metrics.transferability import kendall_tau

    summary = {}
    for target in targets:
        sources = sources_of[target]
        base = [done[f"{target}:baseline:s{s}"] for s in seeds]
        gains = {src: statistics.mean(done[f"{target}:{src}:s{s}"] - b for s, b in zip(seeds, base)) for src in sources}
        scored = [done[f"{target}:scores:s{s}"]["scores"] for s in seeds]
        scores = {name: {src: statistics.mean(sc[src][name] for sc in scored) for src in sources}
                  for name in SCORE_SIGN if all(name in sc[src] for sc in scored for src in sources)}
        tau = {name: kendall_tau([SCORE_SIGN[name] * v[src] for src in sources], [gains[src] for src in sources])
               for name, v in scores.items()}
        summary[target] = {"baseline": statistics.mean(base), "gains": gains, "scores": scores, "tau": tau,
                           "score_seconds": [done[f"{target}:scores:s{s}"]["seconds"] for s in seeds]}
    names = [n for n in SCORE_SIGN if all(n in summary[t]["tau"] for t in targets)]
    # tau is undefined (nan) on a target where the gains, or the score, are all equal: the mean is
    # over the targets where it is defined, and says over how many
    defined = {n: [summary[t]["tau"][n] for t in targets if not math.isnan(summary[t]["tau"][n])] for n in names}
    mean_tau = {n: statistics.mean(v) if v else float("nan") for n, v in defined.items()}
    return {"targets": summary, "mean_tau": mean_tau, "tau_defined_on": {n: len(v) for n, v in defined.items()}}


def tau_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def print_tables(summary: dict) -> None:
    for target, row in summary["targets"].items():
        names = list(row["scores"])
        print(f"\n-> {target}: baseline accuracy {100 * row['baseline']:.1f}; gain = transfer - baseline (points), "
              f"mean over seeds; scores averaged over the seeds' source models")
        print(f"| source | gain | {' | '.join(names)} |\n|---|---|{'---|' * len(names)}")
        for src in sorted(row["gains"], key=lambda s: -row["gains"][s]):
            cells = " | ".join(f"{row['scores'][n][src]:.3f}" for n in names)
            print(f"| {src} | {100 * row['gains'][src]:+.1f} | {cells} |")
        print(f"rank() time per seed (s): {row['score_seconds']}")
    targets = list(summary["targets"])
    print("\nKendall tau of each score's ranking with the measured gains (PAD negated; n/a: all gains or all "
          "scores equal on that target)")
    print(f"| score | {' | '.join(targets)} | mean (targets) |\n|---|{'---|' * len(targets)}---|")
    ranked = sorted(summary["mean_tau"].items(), key=lambda kv: -kv[1] if not math.isnan(kv[1]) else math.inf)
    for name, mean in ranked:
        cells = " | ".join(tau_text(summary["targets"][t]["tau"][name]) for t in targets)
        print(f"| {name} | {cells} | {tau_text(mean)} ({summary['tau_defined_on'][name]}) |")


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(summary["targets"])
    names = list(summary["mean_tau"])
    fig, axes = plt.subplots(len(targets), len(names), figsize=(3.2 * len(names), 3 * len(targets)), squeeze=False)
    for i, target in enumerate(targets):
        row = summary["targets"][target]
        for j, name in enumerate(names):
            ax = axes[i][j]
            sources = list(row["gains"])
            ax.scatter([row["scores"][name][s] for s in sources], [100 * row["gains"][s] for s in sources])
            for s in sources:
                ax.annotate(s, (row["scores"][name][s], 100 * row["gains"][s]), fontsize=6)
            ax.set_title(f"{target}: {name} (tau {tau_text(row['tau'][name])})", fontsize=8)
            ax.axhline(0, color="grey", linewidth=0.6)
            if j == 0:
                ax.set_ylabel("gain (points)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------- main
def apply_smoke(args) -> None:
    args.targets, args.sources, args.seeds = "sst2,kitchen", "ag_news,rt_polarity,books,kitchen", "1"
    args.k, args.source_examples, args.max_length, args.target_epochs = 16, 64, 32, 1
    args.test_examples, args.max_target_steps = 64, 8


def units_of(targets, sources_of, seeds):
    """Every unit of work, in order: (key, kind, target, source, seed)."""
    for seed in seeds:
        for target in targets:
            yield f"{target}:baseline:s{seed}", "baseline", target, None, seed
            for source in sources_of[target]:
                yield f"{target}:{source}:s{seed}", "transfer", target, source, seed
            yield f"{target}:scores:s{seed}", "scores", target, None, seed


def do_unit(args, kind, target, source, seed, sources_of, work):
    if kind == "baseline":
        return run_target(args, target, args.model, seed)
    if kind == "transfer":
        return run_target(args, target, str(train_source(args, source, seed, work)), seed)
    for src in sources_of[target]:
        train_source(args, src, seed, work)
    return score_sources(args, target, sources_of[target], seed, work)


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if args.smoke:
        apply_smoke(args)
    targets = [t for t in args.targets.split(",") if t]
    sources = [s for s in args.sources.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",")]
    bad = [t for t in targets + sources if t not in TASKS]
    if bad:
        sys.exit(f"unknown task(s) {bad}; choose among {TASKS}")
    sources_of = {t: [s for s in sources if s != t] for t in targets}
    if any(len(v) < 2 for v in sources_of.values()):
        sys.exit("each target needs at least 2 candidate sources for a rank correlation")
    # which targets, sources and seeds are not settings: each unit is keyed by them, so --resume can add some
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "resume", "targets", "sources", "seeds")}
    out, partial, work = Path(args.out), Path(f"{args.out}.partial"), Path(f"{args.out}.work")
    work.mkdir(parents=True, exist_ok=True)
    done = load_partial(args.resume, settings, partial, finished=out)
    units = list(units_of(targets, sources_of, seeds))
    print(f"{sum(u[0] not in done for u in units)} of {len(units)} units to do", flush=True)
    t_all = time.perf_counter()
    for key, kind, target, source, seed in units:
        if key in done:
            continue
        t0 = time.perf_counter()
        done[key] = do_unit(args, kind, target, source, seed, sources_of, work)
        save_partial(partial, done, settings)
        shown = f"{100 * done[key]:.1f}" if kind != "scores" else f"scored {len(sources_of[target])} sources"
        print(f"[{len(done)}/{len(units)}] {key}: {shown} ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = summarise(done, targets, sources_of, seeds)
    print_tables(summary)
    total = time.perf_counter() - t_all
    print(f"\nCost: {total / 60:.1f} min wall-clock this invocation on {os.cpu_count()} cores; seeds {seeds}")
    write_final(out, {"targets": targets, "sources": sources, "seeds": seeds, "summary": summary, "runs": done,
                      "wall_s": round(total, 1), "settings": settings}, partial, work)
    plot(summary, out.with_suffix(".png"))
    print(f"written: {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
