"""``finetune``: parameter transfer, the core run's default.

The pretrained encoder is fine-tuned on the source task; its head is dropped, a head for the
target labels is attached, and the whole model is fine-tuned on the target task. Without a
source task this is plain fine-tuning on the target.

With ``target_labels: false`` (unsupervised domain adaptation: both tasks share label names)
there is no target stage: the source model is tested on the target, against the
``source_only`` baseline. Alone that is the baseline itself; with ``adaptive_pretraining:
{before: [source], text: target}`` the encoder first learns the target's text by masked-LM
(DAPT), which the baseline does not get.
"""

from __future__ import annotations

from ..config.strategies import FinetuneConfig
from .base import RunContext, Strategy, TransferOutcome, source_model_on_target, train_source_then_target
from .registry import register_strategy

UNSUPERVISED_NOTE = ("unsupervised transfer: the source model (after any adaptive pretraining) tested on the target; "
                     "no target label used")


@register_strategy("finetune", FinetuneConfig)
class Finetune(Strategy):
    needs_source = False  # without a source it is the target-only fine-tuning

    @property
    def baseline_kind(self) -> str:
        return "target" if self.config.target_labels else "source_only"

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        if not self.config.target_labels:
            run.require_source("finetune` with `target_labels: false")
            run.require_shared_labels(self.name)
            source = run.train_from_pretrained("source", "source", run.cfg.source_training)
            return source_model_on_target(run, source, UNSUPERVISED_NOTE)
        if "source" not in run.tasks:
            stage = run.train_from_pretrained("target", "target", run.cfg.target_training)
            return TransferOutcome(model=stage.model, transfer=stage.summary, test=stage.test)
        return train_source_then_target(run)
