"""``textransfer compare`` with and without the stage cache, side by side in one run.

The same ``textransfer compare`` command (the embedded demo recipe, MiniLM-L6, its own budget:
4 source epochs on 260 headlines, up to 4 target epochs on 220 reviews, batch 16, 64 tokens),
run as a fresh process for each side, one after another:

* ``no_cache``: ``--no-cache``, which is ``compare`` as it was before the cache: the plain
  source stage is trained by every strategy that has one (``finetune``, ``l2sp``, ``features``);
  the baseline was already trained once and shared;
* ``cold_cache``: an empty cache: the source stage trains once and the other strategies reuse it;
* ``warm_cache``: the same command again on the cache ``cold_cache`` filled (a second study of
  the same source and target: the source stage and the baseline both come from the cache);
* ``cold_cache_bf16`` (with ``--bf16``): ``cold_cache`` with ``mixed_precision=bf16`` (CPU autocast,
  fast on CPUs with bf16 instructions) in its own empty cache: the cache and a faster training
  step together. Its metrics are its own (another precision), shown beside the others and left
  out of ``metrics_identical``.
* ``reference`` (with ``--reference REV``): the same command run by the package as it was at the
  git revision ``REV`` (extracted with ``git archive`` into the work folder, run with this
  interpreter and its packages). ``--reference 62a45d5`` is ``compare`` on the day the issue that
  asked for the cache was filed (the last main before the cache): its whole wall-clock, training
  step included, the figure a user of that day waited for. Its metrics are its own (the training
  step's kernels changed since), shown beside the others and left out of ``metrics_identical``.

Timed: the wall-clock of the whole command (start-up, loading, training, evaluation, writing).
Every side must report the same test metrics for every strategy (the cache changes the time, not
the results); the JSON says whether they did (``metrics_identical``).

With ``--repeats N`` every side runs N times, all sides once per repeat in the order above (so a
slow spell of the machine falls on every side of one repeat, not on one side of all): the speed-ups
are taken on each side's median wall time, and ``per_repeat`` holds them within each repeat.

Usage (quiet machine, nothing else running)::

    python benchmarks/stage_cache.py --out benchmarks/results/stage_cache.json
    python benchmarks/stage_cache.py --out /tmp/sc.json --smoke        # a check: tiny budget, seconds
    python benchmarks/stage_cache.py --out sc.json --reference 62a45d5 --repeats 3   # medians of 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from partial_results import load_partial, save_partial, write_final

REPO = Path(__file__).resolve().parents[1]
SIDES = ("no_cache", "cold_cache", "warm_cache")  # the same results at fp32: metrics_identical
BF16_SIDE = "cold_cache_bf16"
REFERENCE_SIDE = "reference"
SMOKE = ["source.max_train_samples=32", "target.max_train_samples=32", "source_training.num_epochs=1",
         "target_training.num_epochs=1", "noise_resamples=50", "model.max_length=32"]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file")
    p.add_argument("--config", default=str(REPO / "recipes" / "news_to_sentiment.yaml"))
    p.add_argument("--strategies", default="finetune,l2sp,features,scratch")
    p.add_argument("--resume", action="store_true", help="go on from OUT.partial, left by a stopped run")
    p.add_argument("--smoke", action="store_true", help="tiny budget: a check, not a result")
    p.add_argument("--bf16", action="store_true", help="also the side cold_cache_bf16 (see above)")
    p.add_argument("--reference", metavar="REV", help="also the side reference: compare as at git revision REV "
                   "(e.g. 62a45d5, the last main before the stage cache)")
    p.add_argument("--repeats", type=int, default=1, help="runs of every side (see above); medians are compared")
    p.add_argument("overrides", nargs="*", help="config overrides for every side, e.g. seed=1")
    return p


def run_side(side: str, args, work: Path) -> dict:
    """One ``textransfer compare`` as its own process; its wall time and per-strategy test metrics."""
    out = work / side
    shutil.rmtree(out, ignore_errors=True)
    cache = work / ("cache_bf16" if side == BF16_SIDE else "cache")
    if side in ("cold_cache", BF16_SIDE):
        shutil.rmtree(cache, ignore_errors=True)
    cmd = [sys.executable, "-m", "textransfer.cli", "compare", args.config, "--strategies", args.strategies,
           "--output-dir", str(out), *(["--no-cache"] if side == "no_cache" else []),
           *(SMOKE if args.smoke else []), *args.overrides, *(["mixed_precision=bf16"] if side == BF16_SIDE else [])]
    env = {**os.environ, "TEXTRANSFER_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    source = REPO
    if side == REFERENCE_SIDE:
        source = extract_revision(args.reference, work / "reference_source")
        env["PYTHONPATH"] = str(source)  # that revision's package, not the one installed from this tree
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=source, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    comparison = json.loads((out / "comparison.json").read_text())
    return {"wall_s": round(wall, 2), "command": " ".join(cmd[1:]),
            "metrics": {name: row["metrics"] for name, row in comparison["strategies"].items()},
            "source_stages_trained": sum(source_trained(out / name) for name in comparison["strategies"])}


def extract_revision(revision: str, folder: Path) -> Path:
    """The repository's files at ``revision`` in ``folder`` (``git archive``: no checkout, no
    worktree left behind in the repository)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def source_trained(run_dir: Path) -> bool:
    source = json.loads((run_dir / "results.json").read_text()).get("source")
    # a revision from before the cache trained every source stage it reports
    return source is not None and not source.get("from_cache")


def side_key(side: str, repeat: int) -> str:
    """The key of a side's run in ``runs``: the side's name in the first repeat (as a run without
    ``--repeats`` writes it), ``side@N`` in repeat N."""
    return side if repeat == 1 else f"{side}@{repeat}"


def summary(runs: dict) -> dict:
    """The speed-ups of one set of sides (one repeat's runs, or every side's median run)."""
    base = runs["no_cache"]
    return {"speedup_cold": round(base["wall_s"] / runs["cold_cache"]["wall_s"], 2),
            "speedup_warm": round(base["wall_s"] / runs["warm_cache"]["wall_s"], 2),
            **({"speedup_cold_bf16": round(base["wall_s"] / runs[BF16_SIDE]["wall_s"], 2)} if BF16_SIDE in runs else {}),
            **({"speedup_cold_vs_reference": round(runs[REFERENCE_SIDE]["wall_s"] / runs["cold_cache"]["wall_s"], 2),
                "speedup_warm_vs_reference": round(runs[REFERENCE_SIDE]["wall_s"] / runs["warm_cache"]["wall_s"], 2)}
               if REFERENCE_SIDE in runs else {})}


def medians(runs: dict, order: list, repeats: int) -> dict:
    """Each side's first run with its median wall time (``wall_s``) and every run's (``wall_s_runs``)."""
    out = {}
    for side in order:
        walls = [runs[side_key(side, r)]["wall_s"] for r in range(1, repeats + 1)]
        out[side] = {**runs[side], "wall_s": round(statistics.median(walls), 2), "wall_s_runs": walls}
    return out


def metrics_identical(runs: dict, repeats: int) -> bool:
    """Every fp32 side of every repeat reports the first ``no_cache`` run's test metrics."""
    base = runs["no_cache"]["metrics"]
    return all(runs[side_key(s, r)]["metrics"] == base for s in SIDES for r in range(1, repeats + 1))


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    args.config = str(Path(args.config).resolve())  # the sides run in the repository (or the reference's copy)
    out = Path(args.out).resolve()
    partial, work = Path(f"{out}.partial"), Path(f"{out}.work")
    settings = {"config": args.config, "strategies": args.strategies, "overrides": args.overrides, "smoke": args.smoke,
                "bf16": args.bf16, "reference": args.reference, **({"repeats": args.repeats} if args.repeats > 1 else {})}
    runs = load_partial(args.resume, settings, partial)
    # the reference runs next to no_cache: the two sides the cache is measured against, one after the other
    order = ["no_cache", *([REFERENCE_SIDE] if args.reference else []), "cold_cache", "warm_cache",
             *([BF16_SIDE] if args.bf16 else [])]
    for repeat in range(1, args.repeats + 1):
        cold, warm = side_key("cold_cache", repeat), side_key("warm_cache", repeat)
        if args.resume and cold in runs and warm not in runs and not (work / "cache").is_dir():
            runs.pop(cold)  # the warm side needs the cache the cold side filled
        for side in order:
            key = side_key(side, repeat)
            if key not in runs:
                runs[key] = run_side(side, args, work)
                save_partial(partial, runs, settings)
                print(f"{key}: {runs[key]['wall_s']:.1f} s, source stages trained: {runs[key]['source_stages_trained']}",
                      flush=True)
    sides = medians(runs, order, args.repeats)
    result = {**summary(sides), "metrics_identical": metrics_identical(runs, args.repeats)}
    extra = {}
    if args.repeats > 1:
        extra = {"median_runs": sides,
                 "per_repeat": [summary({s: runs[side_key(s, r)] for s in order}) for r in range(1, args.repeats + 1)]}
    write_final(out, {"settings": settings, "runs": runs, **result, **extra}, partial, work)
    if args.repeats > 1:
        print("medians of " + ", ".join(f"{s} {sides[s]['wall_s']:.1f} s {sides[s]['wall_s_runs']}" for s in order))
        for r, ratios in enumerate(extra["per_repeat"], 1):
            print(f"repeat {r}: " + ", ".join(f"{k.replace('speedup_', '')} {v}x" for k, v in ratios.items()))
    print(f"cold cache {result['speedup_cold']}x, warm cache {result['speedup_warm']}x faster than --no-cache; "
          f"metrics identical on every side: {result['metrics_identical']}")
    if BF16_SIDE in runs:
        print(f"cold cache with mixed_precision=bf16: {result['speedup_cold_bf16']}x faster than --no-cache (fp32)")
    if REFERENCE_SIDE in runs:
        print(f"against compare as at {args.reference}: cold cache {result['speedup_cold_vs_reference']}x, "
              f"warm cache {result['speedup_warm_vs_reference']}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
