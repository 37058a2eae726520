"""Inference speed: ``textransfer predict`` (PyTorch and ONNX Runtime backends) against
``transformers.pipeline`` on IMDB test reviews.

```
python benchmarks/inference.py --data-dir ../shared/data --out inference.json              # 25,000 reviews
python benchmarks/inference.py --data-dir ../shared/data --out i.json --limit 2000 --threads 1 2
python benchmarks/inference.py --data-dir ../shared/data --out i.json --limit 2000 --threads 1 2 --repeats 3   # medians
python benchmarks/inference.py --data-dir ../shared/data --out smoke.json --limit 64       # smoke run
python benchmarks/inference.py --data-dir ../shared/data --out i.json --model runs/imdb    # a trained run/model
python benchmarks/inference.py ... --resume     # a stopped run goes on from OUT.partial (and OUT.work's model)
python benchmarks/inference.py --table benchmarks/results/inference_first_query_repeats.json   # a run's table
```

Every side uses the same trained MiniLM classifier, the same reviews and truncation to 256 tokens.
Without ``--model``, MiniLM is first fine-tuned for one epoch on ``--train-rows`` IMDB train
reviews (a real, if weak, sentiment classifier), so that label agreement is a meaningful check.
The ONNX side exports the model once into its folder (``model/onnx/model.onnx``; with ``--model``
that is your folder), outside the timing; ``--quantize`` adds its int8 version.
Each side runs in its own subprocess, so peak RSS (``ru_maxrss``) is its own, with
``torch.set_num_threads(N)`` for each ``--threads N`` (ONNX Runtime follows torch's count). The
JSON holds, per thread count, ``{"textransfer": {"rows_per_s", "peak_rss_mb", "accuracy",
"labels_identical", "max_abs_score_diff"}, "pipeline": {...}, "onnxruntime": {...},
["onnxruntime_int8": {...},] "pipeline_batch_1": {...}, "speedup", "onnx_speedup",
"onnx_speedup_vs_fastest_pipeline"}``: labels and top-label scores are compared with the
pipeline's (at ``batch_size=32``, the first of ``--pipeline-batch-sizes``) row by row; ``speedup``
is textransfer's rows/s over that pipeline's, ``onnx_speedup`` ONNX Runtime's, and
``onnx_speedup_vs_fastest_pipeline`` ONNX Runtime's over the fastest of the pipeline's batch sizes
(``batch_size=1``, its own default, is measured too). With ``--repeats N`` every side runs N times
at each thread count (all sides, then all again): each side's figures are its median run's, with
every run's rows/s in ``rows_per_s_runs``, and ``onnx_speedup_per_repeat`` holds ONNX Runtime's
speed-up within each repeat. textransfer runs at its defaults: at most
64 rows and 512 tokens a forward pass (``--batch-size``, ``--max-batch-tokens``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from textransfer.inference.defaults import DEFAULT_MAX_BATCH_TOKENS  # noqa: E402 (torch-free)
from partial_results import load_partial, save_partial, write_final  # noqa: E402
from tables import fixed_width  # noqa: E402

THREADS = r"""
import sys, torch
if sys.argv[-1] != "default":
    torch.set_num_threads(int(sys.argv[-1]))
"""

TEXTRANSFER = THREADS + r"""
import json, resource, sys, time
from textransfer.inference.predict import Predictor, predict_file
model, data, out, batch, backend = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
quantize = None if sys.argv[6] == "none" else sys.argv[6]
tokens = None if sys.argv[7] == "none" else int(sys.argv[7])
p = Predictor.from_pretrained(model, max_length=256, batch_size=batch, backend=backend, quantize=quantize,
                              max_batch_tokens=tokens)
t = time.perf_counter()
s = predict_file(p, data, "text", output=out, progress=False)
dt = time.perf_counter() - t
print(json.dumps({"rows": s.rows, "seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PIPELINE = THREADS + r"""
import json, resource, sys, time
import pyarrow.parquet as pq
from transformers import pipeline
model, data, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
texts = pq.read_table(data, columns=["text"]).column("text").to_pylist()
clf = pipeline("text-classification", model=model, device=-1)
t = time.perf_counter()
preds = clf(texts, batch_size=batch, truncation=True, max_length=256)
dt = time.perf_counter() - t
json.dump([[p["label"], p["score"]] for p in preds], open(out, "w"))
print(json.dumps({"rows": len(texts), "seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def train_model(data_dir: Path, work: Path, rows: int) -> str:
    """One epoch of MiniLM on ``rows`` IMDB train reviews (seeded), through textransfer's own run."""
    import yaml

    cfg = {
        # Trained at 128 tokens to keep set-up short; the benchmark itself runs at 256.
        "model": {"name_or_path": "sentence-transformers/all-MiniLM-L6-v2", "max_length": 128},
        "target": {"name": "imdb", "data_files": {"train": str(data_dir / "imdb" / "train.parquet")},
                   "label_names": ["negative", "positive"], "max_train_samples": rows, "max_eval_samples": 100,
                   "validation_fraction": 0.02, "test_fraction": 0.02},
        "target_training": {"num_epochs": 1, "batch_size": 16, "learning_rate": 2e-4, "warmup_ratio": 0.0,
                            "train_word_embeddings": False},
        "baseline": False,
    }
    (work / "imdb.yaml").write_text(yaml.safe_dump(cfg))
    subprocess.run([sys.executable, "-m", "textransfer.cli", "run", str(work / "imdb.yaml"), "--output-dir",
                    str(work / "run")], check=True, env=os.environ)
    return str(work / "run")


def side(code: str, *args, threads: str = "default") -> dict:
    env = dict(os.environ)
    if threads != "default":  # OpenMP/MKL pools sized as torch's, so no side gets more cores than it asks for
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    r = subprocess.run([sys.executable, "-c", code, *map(str, args), threads], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def compared(timing: dict, labels: list, scores: list, reference: list, gold: list) -> dict:
    """One side's figures: rows/s, peak RSS, accuracy on the gold labels, and agreement with the
    pipeline's (label, score) per row."""
    their_labels = [label for label, _ in reference]
    differ = sum(a != b for a, b in zip(labels, their_labels)) + abs(len(labels) - len(their_labels))
    diff = max((abs(a - b) for a, (_, b) in zip(scores, reference)), default=0.0)
    return {"rows_per_s": round(timing["rows"] / timing["seconds"], 2), "peak_rss_mb": round(timing["peak_rss_mb"], 1),
            "accuracy": round(sum(a == b for a, b in zip(labels, gold)) / len(gold), 4),
            "labels_identical": differ == 0, "labels_differing": differ, "max_abs_score_diff": float(f"{diff:.3g}")}


def ours(model, test: Path, work: Path, batch: int, tokens: str, backend: str, threads: str, quantize: str = "none"):
    """textransfer's predict on ``backend``: its timing, and the labels and top scores it wrote."""
    out = work / f"{backend}-{quantize}-{threads}.csv"
    out.unlink(missing_ok=True)  # an earlier repeat's: predict keeps existing files unless told
    timing = side(TEXTRANSFER, model, test, out, batch, backend, quantize, tokens, threads=threads)
    table = pcsv.read_csv(out)
    return timing, table.column("label").to_pylist(), table.column("score").to_pylist()


def pipeline_side(model_dir: str, test: Path, out: Path, batch: int, threads: str):
    """The pipeline at one batch size: its timing and its ``(labels, scores, [label, score] rows)``."""
    timing = side(PIPELINE, model_dir, test, out, batch, threads=threads)
    found = json.loads(out.read_text())
    return timing, [label for label, _ in found], [s for _, s in found], found


def measure(model: str, model_dir: str, test: Path, work: Path, args, threads: str) -> dict:
    """Every side at one thread count."""
    names = ["negative", "positive"]
    gold = [names[i] if isinstance(i, int) else i for i in pq.read_table(test, columns=["label"]).column("label").to_pylist()]
    # the first --pipeline-batch-sizes entry is the reference every side's labels are compared with
    first, *others = args.pipeline_batch_sizes
    timing, labels, scores, reference = pipeline_side(model_dir, test, work / "theirs.json", first, threads)
    result = {"pipeline": compared(timing, labels, scores, reference, gold)}
    for batch in others:
        timing, labels, scores, _ = pipeline_side(model_dir, test, work / f"theirs-{batch}.json", batch, threads)
        result[f"pipeline_batch_{batch}"] = compared(timing, labels, scores, reference, gold)
    tokens = str(args.max_batch_tokens)
    result["textransfer"] = compared(*ours(model, test, work, args.batch_size, tokens, "torch", threads), reference, gold)
    result["onnxruntime"] = compared(*ours(model, test, work, args.batch_size, tokens, "onnxruntime", threads),
                                     reference, gold)
    if args.quantize:
        result["onnxruntime_int8"] = compared(*ours(model, test, work, args.batch_size, tokens, "onnxruntime", threads,
                                                    "int8"), reference, gold)
    return with_speedups(result)


def with_speedups(result: dict) -> dict:
    """``result`` with textransfer's and ONNX Runtime's rows/s over the reference pipeline's and
    ONNX Runtime's over the fastest pipeline batch size."""
    pipe = result["pipeline"]["rows_per_s"]
    fastest = max(v["rows_per_s"] for k, v in result.items() if k.startswith("pipeline"))
    result["speedup"] = round(result["textransfer"]["rows_per_s"] / pipe, 3)
    result["onnx_speedup"] = round(result["onnxruntime"]["rows_per_s"] / pipe, 3)
    result["onnx_speedup_vs_fastest_pipeline"] = round(result["onnxruntime"]["rows_per_s"] / fastest, 3)
    return result


def median_of_repeats(repeats: list) -> dict:
    """One thread count's figures over ``--repeats`` runs of every side: each side's run with the
    median rows/s (its labels and scores are the same in every run), every run's rows/s beside it
    (``rows_per_s_runs``), the speed-ups from the medians, and ONNX Runtime's speed-up within each
    repeat (``onnx_speedup_per_repeat``: the two sides minutes apart, not a whole run apart)."""
    if len(repeats) == 1:
        return repeats[0]
    result = {}
    for name in (k for k, v in repeats[0].items() if isinstance(v, dict)):
        runs = sorted((r[name] for r in repeats), key=lambda figures: figures["rows_per_s"])
        result[name] = {**runs[(len(runs) - 1) // 2], "rows_per_s": round(statistics.median(
            f["rows_per_s"] for f in runs), 2), "rows_per_s_runs": [r[name]["rows_per_s"] for r in repeats]}
    result = with_speedups(result)
    result["onnx_speedup_per_repeat"] = [r["onnx_speedup"] for r in repeats]
    return result


SIDE_ORDER = ("pipeline", "pipeline_batch_1", "textransfer", "onnxruntime", "onnxruntime_int8")


def table(result: dict) -> str:
    """The figures of a finished run as a fixed-width table: one row per thread count and side,
    rows/s (with every repeat's run), the ratio to the reference pipeline, and the label and
    score agreement with it."""
    head = ("threads", "side", "rows/s", "runs", "vs pipeline", "labels identical", "max score diff", "peak RSS MB")
    lines = []
    for n, figures in result["threads"].items():
        reference = figures["pipeline"]["rows_per_s"]
        for side in (s for s in SIDE_ORDER if s in figures):
            f = figures[side]
            runs = ", ".join(f"{r:.2f}" for r in f.get("rows_per_s_runs", [f["rows_per_s"]]))
            lines.append((n, side, f"{f['rows_per_s']:.2f}", runs, f"{f['rows_per_s'] / reference:.3f}x",
                          f"{'yes' if f['labels_identical'] else 'no'} ({f['labels_differing']} differ)",
                          f"{f['max_abs_score_diff']:.2e}", f"{f['peak_rss_mb']:.0f}"))
        if "onnx_speedup_per_repeat" in figures:
            lines.append((n, "ORT / pipeline within each repeat", "", ", ".join(
                f"{r:.3f}x" for r in figures["onnx_speedup_per_repeat"]), "", "", "", ""))
    body = fixed_width([head, *lines])
    footer = (f"{result['rows']} IMDB test reviews, truncated to {result['max_length']} tokens; reference: the pipeline "
              f"at batch_size={result['pipeline_batch_size']}")
    repeats = result.get("settings", {}).get("repeats", 1)  # files from before --repeats have neither
    if repeats > 1:
        footer += f"; medians of {repeats} runs a side"
    return "\n".join(body) + "\n\n" + footer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", metavar="JSON", help="print the table of a finished run's JSON, and stop")
    parser.add_argument("--data-dir", help="the shared corpora (../shared/data)")
    parser.add_argument("--out", help="JSON file for the figures")
    parser.add_argument("--limit", type=int, help="first N test reviews only (smoke runs)")
    parser.add_argument("--model", help="a trained run directory or model folder (default: fine-tune one)")
    parser.add_argument("--train-rows", type=int, default=400, help="train reviews for the default model")
    parser.add_argument("--batch-size", type=int, default=64, help="textransfer's most rows per forward pass")
    parser.add_argument("--max-batch-tokens", default=str(DEFAULT_MAX_BATCH_TOKENS),
                        help="textransfer's most tokens per forward pass, or `none` (default: predict's)")
    parser.add_argument("--pipeline-batch-sizes", nargs="+", type=int, default=[32, 1],
                        help="the pipeline's batch_size, each measured; the first is the reference of the "
                             "label comparison and of `speedup` (default: 32, and 1, the pipeline's own default)")
    parser.add_argument("--threads", nargs="+", type=int,
                        help="torch (and ONNX Runtime) thread counts to measure, e.g. 1 2 (default: torch's own)")
    parser.add_argument("--quantize", action="store_true", help="also measure the int8 ONNX model")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of every side at each thread count, one after another; medians reported")
    parser.add_argument("--resume", action="store_true", help="go on from OUT.partial, left by a stopped run")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if not args.data_dir or not args.out:
        parser.error("--data-dir and --out are required (unless --table)")
    data_dir = Path(args.data_dir)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")

    # every finished thread count is kept in OUT.partial, and the trained model and test file in
    # OUT.work, so a stopped run resumes (--resume) without training or measuring again
    out = Path(args.out)
    partial, work = Path(f"{out}.partial"), Path(f"{out}.work")
    settings = {k: getattr(args, k) for k in ("limit", "model", "train_rows", "batch_size", "max_batch_tokens",
                                              "pipeline_batch_sizes", "threads", "quantize", "repeats")}
    by_threads = load_partial(args.resume, settings, partial)
    trained = work / "run" / "model"  # train_model's model, saved whole or not at all
    if not args.resume:  # a fresh start keeps nothing of an earlier run's folder
        shutil.rmtree(work, ignore_errors=True)
    elif not trained.is_dir():  # stopped while training: train again
        shutil.rmtree(work / "run", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or (str(trained.parent) if trained.is_dir() else train_model(data_dir, work, args.train_rows))
    model_dir = str(Path(model) / "model") if (Path(model) / "model" / "config.json").is_file() else model
    test = data_dir / "imdb" / "test.parquet"
    if args.limit:
        pq.write_table(pq.read_table(test, columns=["text", "label"]).slice(0, args.limit), work / "test.parquet")
        test = work / "test.parquet"
    for n in [str(n) for n in args.threads] if args.threads else ["default"]:
        if n not in by_threads:
            by_threads[n] = median_of_repeats([measure(model, model_dir, test, work, args, n)
                                               for _ in range(args.repeats)])
            save_partial(partial, by_threads, settings)
    rows = pq.ParquetFile(test).metadata.num_rows

    result = {
        "rows": rows,
        "max_length": 256, "pipeline_batch_size": args.pipeline_batch_sizes[0],
        "pipeline_batch_sizes": args.pipeline_batch_sizes, "textransfer_batch_size": args.batch_size,
        "textransfer_max_batch_tokens": args.max_batch_tokens,
        "threads": by_threads,
        "settings": settings,
    }
    write_final(out, result, partial, work)
    print(json.dumps(result, indent=2))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
