"""``coral``: align the second-order statistics of source and target features (Deep CORAL,
Sun & Saenko, 2016): ``||C_s - C_t||_F^2 / (4 d^2)`` with ``C`` the features' covariance
matrices and ``d`` their dimension."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import _help
from ..errors import ConfigError
from .adaptation import AdaptationConfig, AdaptationStrategy, AlignmentModel
from .base import register_strategy


@dataclass
class CORALConfig(AdaptationConfig):
    """Args:
        weight (`float`): weight of the CORAL term.
    """

    weight: float = field(default=1.0, **_help("mmd/coral: weight of the alignment loss."))

    def __post_init__(self):
        if self.weight < 0:
            raise ConfigError(f"`strategy.weight` must be >= 0, got {self.weight}.")


def covariance(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    centred = x - x.mean(dim=0, keepdim=True)
    return centred.t() @ centred / max(len(x) - 1, 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||C_s - C_t||_F^2 / (4 d^2)``; 0 when either batch has fewer than 2 rows."""
    if len(source) < 2 or len(target) < 2:
        return source.sum() * 0.0
    d = source.shape[1]
    return (covariance(source) - covariance(target)).pow(2).sum() / (4.0 * d * d)


class CORALModel(AlignmentModel):
    def __init__(self, model, config: CORALConfig):
        super().__init__(model)
        self.weight = config.weight

    def alignment(self, source_features, target_features):
        return self.weight * coral_loss(source_features, target_features)


@register_strategy("coral", CORALConfig)
class CORAL(AdaptationStrategy):
    def make_model(self, model):
        return CORALModel(model, self.config)
