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
* **Head warm-up** (LP-FT, Kumar et al., 2022; :class:`HeadWarmup`) trains only the new head's
  parameters, by name, for the first ``head_warmup_steps`` optimiser steps (or
  ``head_warmup_epochs`` epochs), then everything. By name rather than by depth: depth 0 also
  holds pretrained layers outside the encoder's blocks (BERT's pooler), which LP-FT keeps frozen
  with the rest of the encoder.

Why not flip ``requires_grad`` for unfreezing (and the head warm-up): DDP registers the parameters that require
gradients when it wraps the model, so a parameter unfrozen later would never have its gradient
all-reduced and the processes would drift apart silently. Every eventually-trainable
parameter keeps ``requires_grad=True``; before each optimiser step the gradients of the
not-yet-unfrozen ones are set to ``None`` (after DDP's all-reduce), and torch optimisers skip
a parameter whose ``grad`` is ``None``: AdamW neither moves it nor decays it (the fused kernel
too: both build their list of parameters from those with a gradient; ``tests/test_head_warmup.py``
checks the encoder stays bit-identical under weight decay). Both options share that one
mechanism, :func:`drop_gradients`; the trainer applies both, so a parameter trains only when
neither holds it back.

Example:

```python
from textransfer.layerwise import parameter_depths
depths = parameter_depths(model)           # {id(param): depth}
```
"""

from __future__ import annotations

from typing import Callable, Collection, Dict, Iterable, List, Optional

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
        return drop_gradients(params, lambda p: self.depths.get(id(p), 0) > limit)


def drop_gradients(params: Iterable[torch.nn.Parameter],
                   held_back: Callable[[torch.nn.Parameter], bool]) -> List[torch.nn.Parameter]:
    """Set the gradient of every parameter ``held_back(p)`` says must not train this step to
    ``None`` (the optimiser then skips it); returns those parameters. Call it after DDP's
    all-reduce, before the optimiser step."""
    dropped = []
    for p in params:
        if p.grad is not None and held_back(p):
            p.grad = None
            dropped.append(p)
    return dropped


class HeadWarmup:
    """LP-FT: only the head trains during the warm-up, then every parameter does.

    Args:
        module: the model being trained (a Hugging Face model or a strategy's wrapper).
        head_parameters (`Collection[str]`): names, in ``module.named_parameters()``, of the
            parameters that train during the warm-up.
        steps (`int`, *optional*): the warm-up's length in optimiser steps (wins over ``epochs``).
        epochs (`int`): its length in epochs, when ``steps`` is not set.

    The phase is a function of the optimiser steps done and the epoch, which a checkpoint's
    loop state carries, so a resumed run picks up the warm-up where it was.
    """

    def __init__(self, module: torch.nn.Module, head_parameters: Collection[str], steps: Optional[int] = None,
                 epochs: int = 0):
        self.head_ids = {id(p) for n, p in module.named_parameters() if n in set(head_parameters)}
        self.steps = steps
        self.epochs = epochs

    def active(self, step: int, epoch: int) -> bool:
        """Whether optimiser step ``step`` (0-based) of epoch ``epoch`` (0-based) is a warm-up step."""
        return step < self.steps if self.steps is not None else epoch < self.epochs

    def length(self, steps_per_epoch: int) -> int:
        """The warm-up's length in optimiser steps."""
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch

    def mask_gradients(self, params, step: int, epoch: int) -> List[torch.nn.Parameter]:
        """During the warm-up, drop the gradients of every parameter outside the head; returns them."""
        if not self.active(step, epoch):
            return []
        return drop_gradients(params, lambda p: id(p) not in self.head_ids)
