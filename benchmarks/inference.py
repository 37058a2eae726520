"""Inference speed: ``textransfer predict`` against ``transformers.pipeline`` on IMDB test reviews.

```
python benchmarks/inference.py --data-dir ../shared/data --out inference.json              # 25,000 reviews
python benchmarks/inference.py --data-dir ../shared/data --out smoke.json --limit 1000      # smoke run
python benchmarks/inference.py --data-dir ../shared/data --out i.json --model runs/imdb    # a trained run/model
```

Both sides use the same trained MiniLM classifier, the same reviews and truncation to 256 tokens.
Without ``--model``, MiniLM is first fine-tuned for one epoch on ``--train-rows`` IMDB train
reviews (a real, if weak, sentiment classifier), so that label agreement is a meaningful check.
Each side runs in its own subprocess, so peak RSS (``ru_maxrss``) is its own; the JSON is
``{"textransfer": {"rows_per_s", "peak_rss_mb"}, "pipeline": {...}, "speedup", "labels_identical"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TEXTRANSFER = r"""
import json, resource, sys, time
from textransfer.inference.predict import Predictor, predict_file
model, data, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = Predictor.from_pretrained(model, max_length=256, batch_size=batch)
t = time.perf_counter()
s = predict_file(p, data, "text", output=out, progress=False)
dt = time.perf_counter() - t
print(json.dumps({"rows": s.rows, "seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

PIPELINE = r"""
import json, resource, sys, time
import pyarrow.parquet as pq
from transformers import pipeline
model, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
texts = pq.read_table(data, columns=["text"]).column("text").to_pylist()
clf = pipeline("text-classification", model=model, device=-1)
t = time.perf_counter()
preds = clf(texts, batch_size=32, truncation=True, max_length=256)
dt = time.perf_counter() - t
json.dump([p["label"] for p in preds], open(out, "w"))
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


def side(code: str, *args) -> dict:
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=os.environ)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="the shared corpora (../shared/data)")
    parser.add_argument("--out", required=True, help="JSON file for the figures")
    parser.add_argument("--limit", type=int, help="first N test reviews only (smoke runs)")
    parser.add_argument("--model", help="a trained run directory or model folder (default: fine-tune one)")
    parser.add_argument("--train-rows", type=int, default=400, help="train reviews for the default model")
    parser.add_argument("--batch-size", type=int, default=64, help="textransfer's rows per forward pass")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model or train_model(data_dir, work, args.train_rows)
        model_dir = str(Path(model) / "model") if (Path(model) / "model" / "config.json").is_file() else model
        test = data_dir / "imdb" / "test.parquet"
        if args.limit:
            import pyarrow.parquet as pq

            pq.write_table(pq.read_table(test, columns=["text"]).slice(0, args.limit), work / "test.parquet")
            test = work / "test.parquet"
        ours = side(TEXTRANSFER, model, test, work / "ours.csv", args.batch_size)
        theirs = side(PIPELINE, model_dir, test, work / "theirs.json")

        import pyarrow.csv as pcsv

        our_labels = pcsv.read_csv(work / "ours.csv").column("label").to_pylist()
        their_labels = json.loads((work / "theirs.json").read_text())
        differ = sum(a != b for a, b in zip(our_labels, their_labels)) + abs(len(our_labels) - len(their_labels))

    result = {
        "rows": ours["rows"],
        "textransfer": {"rows_per_s": round(ours["rows"] / ours["seconds"], 2), "peak_rss_mb": round(ours["peak_rss_mb"], 1)},
        "pipeline": {"rows_per_s": round(theirs["rows"] / theirs["seconds"], 2),
                     "peak_rss_mb": round(theirs["peak_rss_mb"], 1)},
        "labels_identical": differ == 0,
        "labels_differing": differ,
        "max_length": 256, "pipeline_batch_size": 32, "textransfer_batch_size": args.batch_size,
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
    }
    result["speedup"] = round(result["textransfer"]["rows_per_s"] / result["pipeline"]["rows_per_s"], 3)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
