"""The optimiser and learning-rate schedule of one stage.

The optimiser is ``torch.optim.AdamW(fused=True)`` where the device supports it: on 2 CPU cores
the single-tensor AdamW step over MiniLM's 22.7M parameters takes about 150 ms, the fused
kernel about 15-20 ms (``benchmarks/throughput.py``). ``transformers.Trainer`` 5.x uses the
fused kernel by default too, so this is parity, not an edge, against it.
"""

from __future__ import annotations

from typing import Any, Collection, Dict, List

import torch
from transformers import get_scheduler

from ..config import TrainingConfig
from ..errors import ConfigError
from ..modeling.layerwise import parameter_depths


def no_weight_decay(name: str) -> bool:
    """Biases and LayerNorm parameters: decaying them toward 0 only hurts (the BERT recipe)."""
    return name.endswith("bias") or "layernorm" in name.lower() or "layer_norm" in name


def parameter_groups(model: torch.nn.Module, args: TrainingConfig,
                     head_parameters: Collection[str] = ()) -> List[Dict[str, Any]]:
    """AdamW groups of the trainable parameters: no weight decay on biases and LayerNorm; the
    head's own rate (``head_learning_rate``); with ``layerwise_lr_decay``, the rest at
    ``learning_rate * decay ** depth`` by depth from the top (``modeling/layerwise.py``)."""
    head_lr = args.head_learning_rate or args.learning_rate
    depths = parameter_depths(model) if args.layerwise_lr_decay is not None else None
    groups: Dict[tuple, List[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in head_parameters:
            lr = head_lr
        elif depths is not None:
            lr = args.learning_rate * args.layerwise_lr_decay ** depths[id(p)]
        else:
            lr = args.learning_rate
        decay = 0.0 if no_weight_decay(name) else args.weight_decay
        groups.setdefault((decay, lr), []).append(p)
    return [{"params": ps, "weight_decay": d, "lr": lr} for (d, lr), ps in groups.items()]


def create_adamw(groups: List[Dict[str, Any]], learning_rate: float) -> torch.optim.Optimizer:
    if not groups:
        raise ConfigError("every parameter is frozen; nothing to train. Freeze less (freeze_layers, "
                          "freeze_patterns, freeze_embeddings).")
    try:
        # the fused kernel: ~10x faster than the default on CPU, and the fastest on GPU
        return torch.optim.AdamW(groups, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, lr=learning_rate)


def create_scheduler(args: TrainingConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """``args.lr_scheduler`` over ``total_steps`` optimiser steps, warming up for
    ``warmup_ratio`` of them.

    It is stepped by the trainer, once per real optimiser step, and never passed through
    ``accelerator.prepare``: Accelerate's wrapper steps it once per process on every optimiser
    step (it expects a schedule sized for the unsharded loader), while ours is sized in this
    process's optimiser steps.
    """
    return get_scheduler(args.lr_scheduler, optimizer, num_warmup_steps=int(args.warmup_ratio * total_steps),
                         num_training_steps=total_steps)
