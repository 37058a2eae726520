"""What the domain-adaptation strategies (``dann``, ``mmd``, ``coral``) share.

The adaptation happens in the **source stage**: each optimiser step takes a labelled source
batch and a batch of unlabelled target text, and minimises the source classification loss
plus an alignment term on the two batches' pooled features (mean of the last hidden states).
Then either

* ``target_labels: true`` (default): the adapted encoder gets a target head and the target
  stage runs as in ``finetune``; the baseline is the usual target-only model; or
* ``target_labels: false`` (unsupervised domain adaptation, e.g. Amazon books -> kitchen,
  where both tasks share label names): no target label is ever used for training; the adapted
  source model is tested on the target test split, against the ``source_only`` baseline (the
  same source training, budget and seed, without the alignment term).

Unlabelled target text is the target task's train split with its labels dropped (its
validation and test rows are never in it), or ``unlabelled_files`` (csv/tsv/json/jsonl/
parquet/txt files with a ``unlabelled_text_column``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import datasets
import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from ..errors import ConfigError, DataError
from ..modeling.loading import swap_head
from ..data.tokenization import tokenize_dataset
from ..training.trainer import StageTrainer
from ..config.strategies import AdaptationConfig
from .base import (RunContext, Strategy, TransferOutcome, classify_with_features, masked_mean, model_inputs, unwrap,
                   wrapping_trainer)

_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


class AlignmentModel(torch.nn.Module):
    """The source classifier (``.model``) plus an alignment term on source/target features.

    Called without ``aux_batch`` it is the classifier; with a batch of target text it returns
    ``source loss + alignment(source features, target features)``.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def alignment(self, source_features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, aux_batch=None, **batch):
        if aux_batch is None:
            return self.model(**batch)
        out, source_features = classify_with_features(self.model, batch)
        inputs = model_inputs(aux_batch)
        hidden = self.model.base_model(**inputs).last_hidden_state
        target_features = masked_mean(hidden, inputs.get("attention_mask"))
        align = self.alignment(source_features, target_features)
        return SequenceClassifierOutput(loss=out.loss + align, logits=out.logits)


class AdaptationTrainer(StageTrainer):
    """Hands each step's target batch to the :class:`AlignmentModel` and tells it the progress."""

    def compute_loss(self, model, batch, aux_batch=None):
        return model(**batch, aux_batch=aux_batch).loss

    def on_step(self, step: int, total_steps: int) -> None:
        progress = getattr(self.model, "set_progress", None)
        if progress is not None:
            progress(step / max(total_steps, 1))


def unlabelled_dataset(run: RunContext, config: AdaptationConfig):
    """Tokenized unlabelled target text (no ``labels`` column)."""
    if config.unlabelled_files:
        files = [str(Path(f)) for f in config.unlabelled_files]
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise ConfigError(f"`strategy.unlabelled_files`: not found: {missing}.")
        exts = {Path(f).suffix.lower() for f in files}
        if len(exts) != 1 or next(iter(exts)) not in _BUILDERS:
            raise ConfigError(f"`strategy.unlabelled_files` must share one extension among {sorted(_BUILDERS)}; got {sorted(exts)}.")
        ext = next(iter(exts))
        kw = {"delimiter": "\t"} if ext == ".tsv" else {}
        ds = datasets.load_dataset(_BUILDERS[ext], data_files=files, split="train", cache_dir=run.cfg.cache_dir, **kw)
        column = config.unlabelled_text_column if ext != ".txt" else "text"
        if column not in ds.column_names:
            raise DataError(f"`strategy.unlabelled_files` {files}: no column '{column}' (columns: {ds.column_names}); "
                            f"set `strategy.unlabelled_text_column`.")
        ds = ds.select_columns([column]).rename_column(column, "text") if column != "text" else ds.select_columns(["text"])
        ds = ds.filter(lambda b: [isinstance(t, str) and t.strip() != "" for t in b["text"]], batched=True)
        if len(ds) == 0:
            raise DataError(f"`strategy.unlabelled_files` {files}: no non-empty text.")
        if config.max_unlabelled and len(ds) > config.max_unlabelled:
            ds = ds.shuffle(seed=run.cfg.seed).select(range(config.max_unlabelled))
        return tokenize_dataset(ds, run.tokenizer, run.cfg.model.max_length, desc="Tokenizing unlabelled")
    ds = run.tokenized["target"]["train"]
    ds = ds.remove_columns([c for c in ("labels",) if c in ds.column_names])
    if config.max_unlabelled and len(ds) > config.max_unlabelled:
        ds = ds.shuffle(seed=run.cfg.seed).select(range(config.max_unlabelled))
    return ds


class AdaptationStrategy(Strategy):
    """Base of ``dann``, ``mmd`` and ``coral``: subclasses build their :class:`AlignmentModel`."""

    def make_model(self, model) -> AlignmentModel:
        raise NotImplementedError

    @property
    def baseline_kind(self) -> str:
        return "target" if self.config.target_labels else "source_only"

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        run.require_source(self.name)
        if not self.config.target_labels:
            run.require_shared_labels(self.name)
        unlabelled = unlabelled_dataset(run, self.config)
        factory = wrapping_trainer(self.make_model, trainer_class=AdaptationTrainer)
        source_model, source_summary, _ = run.train_stage("source", run.pretrained("source"), "source",
                                                          run.cfg.source_training, trainer_factory=factory,
                                                          aux_ds=unlabelled)
        adapted = unwrap(source_model)
        source_summary["unlabelled_target_examples"] = len(unlabelled)
        if self.config.target_labels:
            target_model = swap_head(adapted, run.tasks["target"].label_names, seed=run.cfg.seed)
            model, summary, test = run.train_stage("target", target_model, "target", run.cfg.target_training)
            return TransferOutcome(model=model, transfer=summary, test=test, source=source_summary)
        test = run.evaluate(adapted, "target", "test")
        summary = {"task": run.tasks["target"].name, "metrics": test["metrics"], "history": [],
                   "optimizer_steps": 0, "train_time_s": 0.0, "train_samples_per_s": 0.0,
                   "parameters": source_summary["parameters"],
                   "note": "unsupervised adaptation: the adapted source model tested on the target; no target label used"}
        return TransferOutcome(model=adapted, transfer=summary, test=test, source=source_summary)
