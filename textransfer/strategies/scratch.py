"""``scratch``: structure transfer only.

The same architecture (the pretrained model's config) with every weight re-initialised
(``AutoModelForSequenceClassification.from_config``), trained on the target only. Its gap to
the baseline (pretrained, target only) shows what pretraining is worth; its gap to
``finetune`` what pretraining plus the source task is worth.
"""

from __future__ import annotations

from typing import Tuple

from accelerate.utils import set_seed
from transformers import AutoModelForSequenceClassification

from ..config import RunConfig
from ..config.strategies import ScratchConfig
from ..modeling.loading import load_model_config, quiet_transformers, set_labels
from .base import RunContext, Strategy, TransferOutcome
from .registry import register_strategy


def random_model(model_cfg, label_names, seed: int):
    """The architecture of ``model_cfg`` with fresh random weights and a head for ``label_names``."""
    config = load_model_config(model_cfg)
    set_labels(config, label_names)
    set_seed(seed)
    with quiet_transformers():
        return AutoModelForSequenceClassification.from_config(config)


@register_strategy("scratch", ScratchConfig)
class Scratch(Strategy):
    needs_source = False

    def pretraining_stages(self, cfg: RunConfig) -> Tuple[str, ...]:
        """The target stage alone (of the randomly initialised model)."""
        return ("target",)

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        model = random_model(run.cfg.model, run.tasks["target"].label_names, run.cfg.seed)
        stage = run.train_stage("target", model, "target", run.cfg.target_training)
        stage.summary.initialisation = "random (from_config)"
        return TransferOutcome(model=stage.model, transfer=stage.summary, test=stage.test)
