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

from pathlib import Path
from typing import List

import datasets
import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from ..modeling.loading import swap_head
from ..data.tokenization import tokenize_dataset
from ..data.unlabelled import UNLABELLED_FORMATS, cap_examples, read_text_files  # noqa: F401 (public names here too)
from ..training.results import StageSummary
from ..training.trainer import StageTrainer
from ..config.strategies import AdaptationConfig
from .base import (RunContext, Strategy, TransferOutcome, classify_with_features, masked_mean, model_inputs,
                   wrapping_trainer)


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
        ds = read_unlabelled_files([str(Path(f)) for f in config.unlabelled_files], config, run.cfg.cache_dir)
        ds = cap_examples(ds, config.max_unlabelled, run.cfg.seed)
        return tokenize_dataset(ds, run.tokenizer, run.cfg.model.max_length, desc="Tokenizing unlabelled")
    ds = run.tokenized["target"]["train"]
    ds = ds.remove_columns([c for c in ("labels",) if c in ds.column_names])
    return cap_examples(ds, config.max_unlabelled, run.cfg.seed)


def read_unlabelled_files(files: List[str], config: AdaptationConfig, cache_dir) -> datasets.Dataset:
    """The non-empty texts of ``files`` (``data/unlabelled.py``) as a ``text`` column."""
    return read_text_files(files, config.unlabelled_text_column, cache_dir, option="strategy.unlabelled_files",
                           column_option="strategy.unlabelled_text_column")


class AdaptationStrategy(Strategy):
    """Base of ``dann``, ``mmd`` and ``coral``: subclasses build their :class:`AlignmentModel`."""

    def make_model(self, model) -> AlignmentModel:
        raise NotImplementedError

    def trainer_factory(self, run: RunContext, unlabelled):
        """The source stage's trainer: :meth:`make_model`'s wrapper under :class:`AdaptationTrainer`
        (``udalm`` overrides it)."""
        return wrapping_trainer(self.make_model, trainer_class=AdaptationTrainer)

    @property
    def baseline_kind(self) -> str:
        return "target" if self.config.target_labels else "source_only"

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        run.require_source(self.name)
        if not self.config.target_labels:
            run.require_shared_labels(self.name)
        unlabelled = unlabelled_dataset(run, self.config)
        factory = self.trainer_factory(run, unlabelled)
        source = run.train_stage("source", run.pretrained("source"), "source", run.cfg.source_training,
                                 trainer_factory=factory, aux_ds=unlabelled)
        source.summary.unlabelled_target_examples = len(unlabelled)
        if self.config.target_labels:
            target_model = swap_head(source.model, run.tasks["target"].label_names, seed=run.cfg.seed)
            target = run.train_stage("target", target_model, "target", run.cfg.target_training)
            return TransferOutcome(model=target.model, transfer=target.summary, test=target.test, source=source.summary)
        test = run.evaluate(source.model, "target", "test")
        summary = StageSummary(
            task=run.tasks["target"].name, metrics=test.metrics, history=[], parameters=source.summary.parameters,
            trained=False,
            note="unsupervised adaptation: the adapted source model tested on the target; no target label used")
        return TransferOutcome(model=source.model, transfer=summary, test=test, source=source.summary)
