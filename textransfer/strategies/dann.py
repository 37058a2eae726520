"""``dann``: domain-adversarial training (Ganin et al., 2016).

A domain classifier learns to tell source features from target features; between it and the
encoder a gradient-reversal layer (identity forward, ``-lambda * grad`` backward) makes the
encoder *maximise* that classifier's loss, i.e. learn features the domains share. The reversal
weight follows Ganin's schedule ``lambda_p = lambda_max * (2 / (1 + exp(-gamma * p)) - 1)``
with ``p`` the share of training done, so the noisy early domain signal is damped.
"""

from __future__ import annotations

import math

import torch

from ..config.strategies import DANNConfig
from .adaptation import AdaptationStrategy, AlignmentModel
from .registry import register_strategy


class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by ``-weight``."""

    @staticmethod
    def forward(ctx, x, weight: float):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    return GradientReversal.apply(x, weight)


def ganin_lambda(progress: float, gamma: float = 10.0, lambda_max: float = 1.0) -> float:
    """``lambda_max * (2 / (1 + exp(-gamma * p)) - 1)``: 0 at the start, -> ``lambda_max``."""
    return lambda_max * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


class DANNModel(AlignmentModel):
    """The source classifier, a domain classifier, and the reversal layer between them."""

    def __init__(self, model, config: DANNConfig):
        super().__init__(model)
        hidden = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.dim
        self.domain_classifier = torch.nn.Sequential(
            torch.nn.Linear(hidden, config.domain_hidden), torch.nn.ReLU(), torch.nn.Dropout(config.domain_dropout),
            torch.nn.Linear(config.domain_hidden, 1))
        self.config = config
        self.reversal_weight = 0.0

    def set_progress(self, progress: float) -> None:
        self.reversal_weight = ganin_lambda(progress, self.config.gamma, self.config.lambda_max)

    def domain_loss(self, source_features, target_features, weight=None):
        w = self.reversal_weight if weight is None else weight
        features = torch.cat([source_features, target_features])
        logits = self.domain_classifier(reverse_gradient(features, w)).squeeze(-1)
        domains = torch.cat([torch.zeros(len(source_features)), torch.ones(len(target_features))]).to(logits)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, domains)

    def alignment(self, source_features, target_features):
        return self.domain_loss(source_features, target_features)


@register_strategy("dann", DANNConfig)
class DANN(AdaptationStrategy):
    def make_model(self, model):
        return DANNModel(model, self.config)
