"""``udalm``: source classification mixed with masked-LM on target text (Karouzos et al., NAACL 2021).

UDALM fine-tunes one encoder on ``lambda * L_cls(source) + (1 - lambda) * L_mlm(target)``: the
source labels teach the task while the masked-LM loss on unlabelled target text keeps the
encoder's features fitted to the target's language (on the 12 Amazon review pairs, BERT-base
source-only 88.3, UDALM 91.7). The paper weights the losses by the data: ``lambda = n / (n + m)``
for ``n`` labelled source and ``m`` unlabelled target examples (``cls_weight`` unset); its mixed
batches hold source and target examples in that ratio. Here each optimiser step takes one
source batch and one target batch of ``batch_size`` each (``StageTrainer``'s ``aux_ds``, as in
``dann``) and ``lambda`` sets the balance.

The masked-LM model shares the classifier's encoder (``modeling.masked_lm.masked_lm_on``: the
checkpoint's own head when it has one, else a fresh head tied to the word embeddings) and sits
in the wrapper module (:class:`UDALMModel`), so ``accelerator.prepare`` wraps it and DDP
all-reduces its gradients. The classifier ships; the masked-LM head is dropped after training.

Masking and the masked-LM loss are ``training/masking.py``'s, shared with the adaptive-pretraining
stage. Each example's mask is drawn from a generator seeded by the run's seed, the optimiser
step and the example's tokens, so a run (and a resumed run) masks alike, and N processes of
batch B mask exactly as one process of batch N * B. The logits are computed at the masked
positions only (the vocabulary projection of every position was most of a step's cost). The
masked-LM loss is the sum over masked tokens divided by the global batch's masked-token count
per process: DDP's mean of the processes' gradients is then that of the mean over every masked
token of the global batch, as one process computes it.

As for ``dann``, ``target_labels: false`` tests the UDALM source model on the target (against
the ``source_only`` baseline); ``true`` then fine-tunes it on the target labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from ..config.strategies import UDALMConfig
from ..data.streaming import is_stream
from ..errors import ConfigError
from ..modeling.masked_lm import masked_lm_on
from ..training.masking import TokenMasking, masked_token_loss, require_mask_token, tokens_per_process
from .adaptation import AdaptationStrategy, AdaptationTrainer
from .base import RunContext, TransferOutcome, model_inputs, wrapping_trainer
from .registry import register_strategy

# a fresh masked-LM head is initialised under the run's seed plus this (not the classifier head's stream)
MLM_HEAD_SEED_OFFSET = 2


def paper_cls_weight(source_examples: int, target_examples: int) -> float:
    """UDALM's ``lambda = n / (n + m)``: each loss weighted by its share of the training data."""
    return source_examples / (source_examples + target_examples)


@dataclass
class UDALMOutput(SequenceClassifierOutput):
    """The classifier's output with UDALM's mixed loss, and its two parts (detached, for the record)."""

    cls_loss: Optional[torch.Tensor] = None
    mlm_loss: Optional[torch.Tensor] = None


class UDALMModel(torch.nn.Module):
    """The source classifier (``.model``) and a masked-LM model on the same encoder (``.masked_lm``).

    Called without ``mlm_batch`` it is the classifier; with a masked target batch it returns
    ``cls_weight * L_cls + (1 - cls_weight) * L_mlm``, ``L_mlm`` being the summed masked-token
    loss divided by ``mlm_tokens`` (default: this batch's masked-token count, i.e. the mean;
    under DDP ``training.masking.tokens_per_process``).
    """

    def __init__(self, model, masked_lm, cls_weight: float):
        super().__init__()
        self.model = model
        self.masked_lm = masked_lm
        self.cls_weight = cls_weight

    def forward(self, mlm_batch=None, mlm_tokens=None, mlm_head_only=False, **batch):
        out = self.model(**batch)
        if mlm_batch is None:
            return out
        mlm = masked_token_loss(self.masked_lm, self.masked_lm.base_model, model_inputs(mlm_batch),
                                mlm_batch["labels"], mlm_tokens, head_only=mlm_head_only)
        loss = self.cls_weight * out.loss + (1.0 - self.cls_weight) * mlm
        return UDALMOutput(loss=loss, logits=out.logits, cls_loss=out.loss.detach(), mlm_loss=mlm.detach())


class UDALMTrainer(AdaptationTrainer):
    """Masks each step's target batch and hands it to :class:`UDALMModel`; records the two losses.

    ``train`` adds each epoch's mean ``cls_loss`` and ``mlm_loss`` (over this process's batches)
    to the stage's history.
    """

    def __init__(self, *args, mlm_probability: float = 0.15, fresh_head_warmup: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.fresh_head_warmup = fresh_head_warmup
        require_mask_token(self.tokenizer, "`strategy.name: udalm`", "another strategy (e.g. `dann`)")
        vocab = self.model.model.get_input_embeddings().num_embeddings
        self.masking = TokenMasking(self.tokenizer, mlm_probability, self.seed, vocab_size=vocab)
        self.step = self.total_steps = 0
        self.losses: List[torch.Tensor] = []  # per batch: (optimiser step, cls loss, mlm loss)

    def on_step(self, step: int, total_steps: int) -> None:
        super().on_step(step, total_steps)
        self.step, self.total_steps = step, total_steps

    def mlm_head_only(self) -> bool:
        """Whether this step's masked-LM loss trains the head alone: a fresh head's first
        ``fresh_head_warmup`` share of the steps (its random gradients would push noise into the
        encoder, and through it into the classifier)."""
        masked_lm = self.accelerator.unwrap_model(self.model).masked_lm
        return getattr(masked_lm, "fresh_head", False) and self.step < self.fresh_head_warmup * self.total_steps

    def compute_loss(self, model, batch, aux_batch=None):
        if aux_batch is None:
            return model(**batch).loss
        mlm_batch = self.masking(aux_batch, self.step)
        out = model(**batch, mlm_batch=mlm_batch, mlm_tokens=tokens_per_process(mlm_batch["labels"], self.accelerator),
                    mlm_head_only=self.mlm_head_only())
        self.losses.append(torch.stack([torch.tensor(float(self.step + 1), device=out.loss.device),
                                        out.cls_loss.float(), out.mlm_loss.float()]))
        return out.loss

    def train(self, train_ds, eval_ds=None, aux_ds=None):
        result = super().train(train_ds, eval_ds, aux_ds=aux_ds)
        add_epoch_losses(result.history, self.losses)
        return result


def add_epoch_losses(history: List[Dict], losses: List[torch.Tensor]) -> None:
    """Each epoch entry of ``history`` gets the mean ``cls_loss`` and ``mlm_loss`` of the batches
    whose optimiser step falls in it (a resumed run has only the batches since its checkpoint)."""
    if not losses:
        return
    table = torch.stack(losses).cpu()
    start = 0
    for entry in history:
        rows = table[(table[:, 0] > start) & (table[:, 0] <= entry["step"])]
        start = entry["step"]
        if len(rows):
            entry["cls_loss"], entry["mlm_loss"] = rows[:, 1].mean().item(), rows[:, 2].mean().item()


@register_strategy("udalm", UDALMConfig)
class UDALM(AdaptationStrategy):
    """The source stage trains on the mixed loss; the rest is :class:`AdaptationStrategy`'s."""

    cls_weight: Optional[float] = None  # lambda as resolved for the run (recorded as `source_loss_weight`)

    def trainer_factory(self, run: RunContext, unlabelled):
        self.cls_weight = self.resolve_cls_weight(run, unlabelled)
        weight, name, seed = self.cls_weight, run.cfg.model.name_or_path, run.cfg.seed + MLM_HEAD_SEED_OFFSET
        return wrapping_trainer(lambda m: UDALMModel(m, masked_lm_on(m, name, seed), weight),
                                trainer_class=UDALMTrainer, mlm_probability=self.config.mlm_probability,
                                fresh_head_warmup=self.config.fresh_head_warmup)

    def resolve_cls_weight(self, run: RunContext, unlabelled) -> float:
        """``strategy.cls_weight``, or the paper's ``n / (n + m)`` when unset."""
        if self.config.cls_weight is not None:
            return self.config.cls_weight
        source = run.tokenized["source"]["train"]
        if is_stream(source) or is_stream(unlabelled):
            raise ConfigError("`strategy.cls_weight` unset means n_source / (n_source + n_target), which a "
                              "streamed dataset cannot count; set `strategy.cls_weight` (e.g. 0.5).")
        return paper_cls_weight(len(source), len(unlabelled))

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        outcome = super().train_transfer(run)
        outcome.source.source_loss_weight = self.cls_weight
        return outcome
