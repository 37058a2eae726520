"""Depth-aware training options: gradual unfreezing and layer-wise learning-rate decay (LLRD).

Both number the parameters by *depth from the top*: 0 is the head (and anything outside the
encoder, such as a strategy's domain classifier or BERT's pooler), 1 the top encoder block,
..., ``L`` the bottom block, ``L + 1`` the embeddings (and encoder-wide tensors such as
DeBERTa's relative-position embeddings).

* **LLRD** gives depth ``d`` the rate ``learning_rate * decay ** d`` (the head keeps
  ``head_learning_rate`` when set). Schedulers scale every group by the same factor, so the
  ratios hold through warm-up and decay.
* **Gradual unfreezing** (ULMFiT) trains only depth 0 in the first phase and one depth more in
  each later phase (a phase is an epoch, or ``unfreeze_every_steps`` optimiser steps).

Why not flip ``requires_grad`` for unfreezing: DDP registers the parameters that require
gradients when it wraps the model, so a parameter unfrozen later would never have its gradient
all-reduced and the processes would drift apart silently. Every eventually-trainable
parameter keeps ``requires_grad=True``; before each optimiser step the gradients of the
not-yet-unfrozen ones are set to ``None`` (after DDP's all-reduce), and torch optimisers skip
a parameter whose ``grad`` is ``None``: AdamW neither moves it nor decays it.

Example:

```python
from textransfer.layerwise import parameter_depths
depths = parameter_depths(model)           # {id(param): depth}
```
"""

from __future__ import annotations

from typing import Dict, List

import torch
from transformers import PreTrainedModel

from .freezing import embeddings_module, encoder_layers


def classification_model(module: torch.nn.Module) -> PreTrainedModel:
    """The Hugging Face model inside ``module`` (a strategy wraps it as ``.model``)."""
    if isinstance(module, PreTrainedModel):
        return module
    inner = getattr(module, "model", None)
    if isinstance(inner, PreTrainedModel):
        return inner
    raise TypeError(f"{type(module).__name__} holds no Hugging Face model (expected it, or a `.model` attribute)")


def parameter_depths(module: torch.nn.Module) -> Dict[int, int]:
    """``{id(parameter): depth from the top}`` for every parameter of ``module``."""
    model = classification_model(module)
    blocks = encoder_layers(model)
    num_layers = len(blocks)
    depths: Dict[int, int] = {id(p): 0 for p in module.parameters()}  # head and extra heads
    base_ids = {id(p) for p in model.base_model.parameters()}
    # encoder-wide tensors that are neither in a block nor the head (DeBERTa's rel_embeddings,
    # its encoder LayerNorm) sit with the embeddings; the pooler feeds the head and sits with it
    pooler = getattr(model.base_model, "pooler", None)
    pooler_ids = {id(p) for p in pooler.parameters()} if isinstance(pooler, torch.nn.Module) else set()
    for pid in base_ids - pooler_ids:
        depths[pid] = num_layers + 1
    for i, block in enumerate(blocks):
        for p in block.parameters():
            depths[id(p)] = num_layers - i
    for p in embeddings_module(model).parameters():
        depths[id(p)] = num_layers + 1
    return depths


def num_depths(module: torch.nn.Module) -> int:
    """How many depths there are (head, every block, embeddings): the phases of full unfreezing."""
    return len(encoder_layers(classification_model(module))) + 2


class GradualUnfreezing:
    """Which depths train at a given moment.

    Args:
        module: the model being trained (a Hugging Face model or a strategy's wrapper).
        every_steps (`int`, *optional*): unfreeze one more depth every this many optimiser
            steps; ``None`` means one more each epoch.
    """

    def __init__(self, module: torch.nn.Module, every_steps=None):
        self.depths = parameter_depths(module)
        self.every_steps = every_steps
        self.phases = num_depths(module)

    def phase(self, step: int, epoch: int) -> int:
        """0-based phase at optimiser step ``step`` (0-based) of epoch ``epoch`` (0-based)."""
        p = step // self.every_steps if self.every_steps else epoch
        return min(p, self.phases - 1)

    def mask_gradients(self, params, step: int, epoch: int) -> List[torch.nn.Parameter]:
        """Drop the gradients of parameters deeper than the current phase; returns them."""
        limit = self.phase(step, epoch)
        dropped = []
        for p in params:
            if p.grad is not None and self.depths.get(id(p), 0) > limit:
                p.grad = None
                dropped.append(p)
        return dropped
