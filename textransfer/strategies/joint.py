"""``joint``: one encoder, two heads, both tasks at once (multi-task transfer).

Each optimiser step draws a target batch and a source batch (the source set is cycled
alongside the target one) and minimises ``alpha * L_source + (1 - alpha) * L_target``.
There is no separate source stage: the budget is ``target_training``'s, so ``alpha`` trades
the target's own signal against the source's. Both heads sit in one module with the shared
encoder (:class:`JointModel`), which is what goes through ``accelerator.prepare``.
"""

from __future__ import annotations

from typing import Tuple

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from ..config import RunConfig
from ..config.strategies import JointConfig
from ..modeling.loading import attach_head
from ..training.trainer import StageTrainer
from .base import RunContext, Strategy, TransferOutcome, wrapping_trainer
from .registry import register_strategy

# the source head is initialised under the run's seed plus this offset: reproducible with the
# run, yet not drawn from the same random stream as the target head (made under the seed itself)
SOURCE_HEAD_SEED_OFFSET = 1


class JointModel(torch.nn.Module):
    """The target classifier (``.model``) and a source classifier sharing its encoder.

    Called without ``aux_batch`` it is the target classifier (evaluation, prediction); with a
    source batch it returns the weighted joint loss.
    """

    def __init__(self, model, source_label_names, alpha: float, seed: int = 0):
        super().__init__()
        self.model = model
        self.alpha = alpha
        self.source_model = attach_head(model, source_label_names, seed=seed + SOURCE_HEAD_SEED_OFFSET)
        # share, not copy: the source classifier's encoder *is* the target's
        setattr(self.source_model, self.source_model.base_model_prefix, model.base_model)

    def forward(self, aux_batch=None, **batch):
        out = self.model(**batch)
        if aux_batch is None:
            return out
        source_loss = self.source_model(**aux_batch).loss
        loss = self.alpha * source_loss + (1.0 - self.alpha) * out.loss
        return SequenceClassifierOutput(loss=loss, logits=out.logits)


class JointTrainer(StageTrainer):
    """Hands each step's source batch to :class:`JointModel`."""

    def compute_loss(self, model, batch, aux_batch=None):
        return model(**batch, aux_batch=aux_batch).loss


@register_strategy("joint", JointConfig)
class Joint(Strategy):
    def pretraining_stages(self, cfg: RunConfig) -> Tuple[str, ...]:
        """One stage, the target's, which trains on the source batches too."""
        return ("target",)

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        run.require_source("joint")
        source_labels = run.tasks["source"].label_names
        factory = wrapping_trainer(lambda m: JointModel(m, source_labels, self.config.alpha, run.cfg.seed),
                                   trainer_class=JointTrainer)
        stage = run.train_stage("target", run.pretrained("target"), "target", run.cfg.target_training,
                                trainer_factory=factory, aux_ds=run.tokenized["source"]["train"])
        stage.summary.source_loss_weight = self.config.alpha
        return TransferOutcome(model=stage.model, transfer=stage.summary, test=stage.test)
