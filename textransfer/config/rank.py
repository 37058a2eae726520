"""Options of ``textransfer rank`` / ``textransfer.rank`` (scoring candidates without a run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from .schema import option


@dataclass
class RankConfig:
    """How candidates are scored for a target task (``run/rank.py``).

    Args:
        max_examples (`int`, *optional*, defaults to 2000): rows of the target's (and each source
            task's) train split whose features are scored, a seeded sample; null for all.
        batch_size (`int`, *optional*, defaults to 64): texts per forward pass of a frozen model.
        tune_sources (`bool`, *optional*, defaults to `False`): also fine-tune the config's model
            briefly on each source task and score the tuned encoder (LogME, H-score, LEEP).
        tune_steps (`int`, *optional*, defaults to 100): optimiser steps of that brief tuning.
        tune_batch_size (`int`, *optional*, defaults to 16): its batch size.
        tune_learning_rate (`float`, *optional*, defaults to 1e-4): its learning rate.
        seed (`int`, *optional*, defaults to 0): seed of the row samples, of the domain
            classifier's split and of the tuning.
    """

    max_examples: Optional[int] = option(2000, help="Train rows scored per task (a seeded sample); null (on the "
                                                    "command line: all) for every row.")
    batch_size: int = option(64, help="Texts per forward pass when computing features.")
    tune_sources: bool = option(False, help="Also score an encoder briefly fine-tuned on each source task.")
    tune_steps: int = option(100, help="Optimiser steps of that brief source tuning.")
    tune_batch_size: int = option(16, help="Batch size of the source tuning.")
    tune_learning_rate: float = option(1e-4, help="Learning rate of the source tuning.")
    seed: int = option(0, help="Seed of the row samples, the domain classifier's split and the tuning.")

    def __post_init__(self):
        for name in ("batch_size", "tune_steps", "tune_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}.", option=name)
        if self.max_examples is not None and self.max_examples < 4:
            raise ConfigError(f"`max_examples` must be >= 4 (or null: all rows), got {self.max_examples}: the scores "
                              f"need a few rows per class and two halves for the domain classifier.",
                              option="max_examples")
        if self.tune_learning_rate <= 0:
            raise ConfigError(f"`tune_learning_rate` must be > 0, got {self.tune_learning_rate}.",
                              option="tune_learning_rate")
