"""A module's ``forward`` replaced for a block of code, on the instance, and put back after.

Why on the instance: ``nn.Module.__call__`` looks ``forward`` up on the instance first, so one
model's modules change while other models of the same class, the state dict and the saved model
stay untouched, and the original comes back by deleting the attribute.

Such a patch holds only inside its block. Activation (gradient) checkpointing runs parts of the
forward again during the backward pass, after the block has ended, so a patch whose forward must
be repeated exactly (the same dropout masks, the same rows) is not installed on a model that
checkpoints (:func:`activation_checkpointing`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch


def activation_checkpointing(model: torch.nn.Module) -> bool:
    """Whether ``model`` has activation (gradient) checkpointing on; transformers 5 renamed the property."""
    name = "is_activation_checkpointing" if hasattr(type(model), "is_activation_checkpointing") \
        else "is_gradient_checkpointing"
    return bool(getattr(model, name, False))


def is_patched(module: torch.nn.Module, function: Callable) -> bool:
    """Whether ``module``'s instance ``forward`` is ``function`` bound to it."""
    return getattr(vars(module).get("forward"), "__func__", None) is function


@contextmanager
def forward_patched(modules: Sequence[torch.nn.Module], function: Callable) -> Iterator[int]:
    """Within the block, each module's ``forward`` is ``function(module, *args)``; yields how many
    modules that applied to. Modules that an enclosing block patched with ``function`` are left to
    that block, which puts them back when it ends."""
    patched = [module for module in modules if not is_patched(module, function)]
    for module in patched:
        module.forward = function.__get__(module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward
