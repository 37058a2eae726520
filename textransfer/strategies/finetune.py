"""``finetune``: parameter transfer, the core run's default.

The pretrained encoder is fine-tuned on the source task; its head is dropped, a head for the
target labels is attached, and the whole model is fine-tuned on the target task. Without a
source task this is plain fine-tuning on the target.
"""

from __future__ import annotations

from ..config.strategies import FinetuneConfig
from .base import RunContext, Strategy, TransferOutcome, train_source_then_target
from .registry import register_strategy


@register_strategy("finetune", FinetuneConfig)
class Finetune(Strategy):
    needs_source = False  # without a source it is the target-only fine-tuning

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        if "source" not in run.tasks:
            stage = run.train_stage("target", run.pretrained("target"), "target", run.cfg.target_training)
            return TransferOutcome(model=stage.model, transfer=stage.summary, test=stage.test)
        return train_source_then_target(run)
