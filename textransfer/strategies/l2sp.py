"""``l2sp``: fine-tuning with a pull toward the source weights (Li et al., 2018, "L2-SP").

The target stage adds the "knowledge term" ``lambda * K(theta)`` to the loss:

    alpha/2 * ||w_encoder - w_source||^2  +  beta/2 * ||w_head||^2

where ``w_source`` are the encoder weights the source stage produced (the starting point of
the target stage). The encoder may move where the target data insists, but pays for every
step away from what the source taught it; the new head, which has no source value, is only
kept small. The penalty's gradient is ``alpha * (w - w_source)`` (and ``beta * w_head``).
Note: AdamW's decoupled ``weight_decay`` still pulls toward 0; the paper uses the penalty in
place of it, so ``target_training.weight_decay: 0`` is the faithful setting.
"""

from __future__ import annotations

from typing import Dict

import torch

from ..training.trainer import StageTrainer
from ..config.strategies import L2SPConfig
from .base import RunContext, Strategy, TransferOutcome, make_factory, train_source_then_target
from .registry import register_strategy


class L2SPTrainer(StageTrainer):
    """A `StageTrainer` whose loss adds the L2-SP penalty toward the weights it starts from."""

    def __init__(self, model, *args, alpha: float = 0.01, beta: float = 0.01, **kwargs):
        super().__init__(model, *args, **kwargs)
        self.alpha, self.beta = alpha, beta
        prefix = model.base_model_prefix + "."
        # the starting point, detached: a constant in the penalty
        self.source_weights: Dict[str, torch.Tensor] = {
            n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(prefix) and p.requires_grad}

    def penalty(self, model) -> torch.Tensor:
        sp, head = None, None
        for name, p in self.accelerator.unwrap_model(model).named_parameters():
            if not p.requires_grad:
                continue
            ref = self.source_weights.get(name)
            if ref is not None:
                term = (p - ref.to(p.device)).pow(2).sum()
                sp = term if sp is None else sp + term
            elif name in self.head_parameters:
                term = p.pow(2).sum()
                head = term if head is None else head + term
        total = 0.0
        if sp is not None:
            total = total + 0.5 * self.alpha * sp
        if head is not None:
            total = total + 0.5 * self.beta * head
        return total

    def compute_loss(self, model, batch, aux_batch=None) -> torch.Tensor:
        return super().compute_loss(model, batch, aux_batch) + self.penalty(model)


@register_strategy("l2sp", L2SPConfig)
class L2SP(Strategy):
    def train_transfer(self, run: RunContext) -> TransferOutcome:
        factory = make_factory(L2SPTrainer, alpha=self.config.alpha, beta=self.config.beta)
        return train_source_then_target(run, target_factory=factory)
