"""The contrastive phase of a labelled stage (``*_training.contrastive:``): SetFit's idea
(Tunstall et al., 2022) inside any stage: the encoder first learns, from the stage's own labelled
examples, to put same-class texts close and other-class texts apart; then the stage trains its
classification head (and, unless frozen, the encoder) as usual.

```yaml
target_training:
  head_warmup_epochs: 1          # LP-FT after the contrastive phase: head alone first
  head_learning_rate: 1.0e-3
  contrastive: {pair_iterations: 20, loss: cosine_similarity, pooling: mean}
```

or ``target_training.contrastive.pair_iterations=20`` on the command line. The baseline trains
``target_training`` too, so a contrastive target recipe applies to both arms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from .schema import option

CONTRASTIVE_LOSSES = ("cosine_similarity", "supervised_contrastive")
CONTRASTIVE_POOLING = ("mean", "cls", "head")


@dataclass
class ContrastiveConfig:
    """Contrastive training of the encoder on the stage's labelled examples, before its
    classification training (``training/contrastive.py``).

    Args:
        enabled (`bool`, *optional*, defaults to `True`): run the phase (``false`` keeps the block
            but switches it off, e.g. ``target_training.contrastive.enabled=false``).
        pair_iterations (`int`, *optional*, defaults to `20`): SetFit's ``num_iterations``. With
            ``cosine_similarity``: each iteration gives every example one same-class and one
            other-class pair, so ``2 * pair_iterations * n`` pairs (k = 16 per class, 2 classes,
            20 iterations: 2 * 20 * 32 = 1,280 pairs, 80 steps of 16). With
            ``supervised_contrastive``: passes over the examples (a batch's same-class examples are
            each other's positives).
        loss (`str`, *optional*, defaults to `"cosine_similarity"`): ``cosine_similarity``
            (SetFit's ``CosineSimilarityLoss``: ``(cos(u, v) - y)^2``, y = 1 same class, 0 not) or
            ``supervised_contrastive`` (Khosla et al., 2020, at ``temperature``).
        pooling (`str`, *optional*, defaults to `"mean"`): the embedding trained: ``mean`` (mean of
            the last hidden states over real tokens, as sentence-transformers and SetFit), ``cls``
            (the first token's last hidden state) or ``head`` (the input of the classifier's final
            linear layer: exactly the vector the shipped model's head reads).
        epochs (`int`, *optional*, defaults to `1`): passes over the pairs.
        batch_size (`int`, *optional*, defaults to `16`): pairs (or examples) per step.
        learning_rate (`float`, *optional*, defaults to `2e-5`): peak learning rate (SetFit's
            body learning rate), linear decay after ``warmup_ratio``.
        warmup_ratio (`float`, *optional*, defaults to `0.1`): share of steps spent warming up.
        max_steps (`int`, *optional*): step cap (overrides the pairs' epochs when smaller).
        temperature (`float`, *optional*, defaults to `0.07`): ``supervised_contrastive``'s temperature.
        seed (`int`, *optional*): seed of the pairs and of dropout (default: the run's ``seed``).
    """

    enabled: bool = option(True, help="Run the contrastive phase (false switches a configured block off).")
    pair_iterations: int = option(20, help="Pairs per example: one same-class + one other-class pair each "
                                           "iteration (SetFit's num_iterations); supervised_contrastive: passes.")
    loss: str = option("cosine_similarity", help="cosine_similarity (SetFit) or supervised_contrastive.")
    pooling: str = option("mean", help="Embedding trained: mean (of token states), cls (first token) or head "
                                       "(the classifier's final-layer input).")
    epochs: int = option(1, help="Passes over the pairs.")
    batch_size: int = option(16, help="Pairs (or examples) per contrastive step.")
    learning_rate: float = option(2e-5, help="Peak learning rate of the contrastive phase.")
    warmup_ratio: float = option(0.1, help="Share of contrastive steps spent warming up.")
    max_steps: Optional[int] = option(None, help="Cap on contrastive optimiser steps.")
    temperature: float = option(0.07, help="supervised_contrastive: softmax temperature.")
    seed: Optional[int] = option(None, help="Seed of pairs and dropout (default: the run's seed).")

    def __post_init__(self):
        # `option` is the field's own name: `build` prefixes it with where the block is
        # (`target_training.contrastive.loss`), so the error names the override to fix
        if self.loss not in CONTRASTIVE_LOSSES:
            raise ConfigError(f"`contrastive.loss` must be one of {', '.join(CONTRASTIVE_LOSSES)}, got '{self.loss}'.",
                              option="loss")
        if self.pooling not in CONTRASTIVE_POOLING:
            raise ConfigError(f"`contrastive.pooling` must be one of {', '.join(CONTRASTIVE_POOLING)}, got "
                              f"'{self.pooling}'.", option="pooling")
        for name in ("pair_iterations", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`contrastive.{name}` must be >= 1, got {getattr(self, name)}.",
                                  option=name)
        if self.loss == "supervised_contrastive" and self.batch_size < 2:
            raise ConfigError("`contrastive.batch_size` must be >= 2 with `loss: supervised_contrastive` (a batch's "
                              "other examples are the positives and negatives).", option="batch_size")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"`contrastive.max_steps` must be >= 1 (or null), got {self.max_steps}.",
                              option="max_steps")
        if self.learning_rate <= 0:
            raise ConfigError(f"`contrastive.learning_rate` must be > 0, got {self.learning_rate}.",
                              option="learning_rate")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"`contrastive.warmup_ratio` must be in [0, 1), got {self.warmup_ratio}.",
                              option="warmup_ratio")
        if self.temperature <= 0:
            raise ConfigError(f"`contrastive.temperature` must be > 0, got {self.temperature}.",
                              option="temperature")
