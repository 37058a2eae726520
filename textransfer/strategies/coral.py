"""``coral``: align the second-order statistics of source and target features (Deep CORAL,
Sun & Saenko, 2016): ``||C_s - C_t||_F^2 / (4 d^2)`` with ``C`` the features' covariance
matrices and ``d`` their dimension."""

from __future__ import annotations

import torch

from ..config.strategies import CORALConfig
from .adaptation import AdaptationStrategy, AlignmentModel
from .registry import register_strategy


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
