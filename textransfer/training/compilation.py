"""``torch_compile``: the training step through ``torch.compile`` (inductor), with bounded recompiles.

Only the training step's forward (and so its backward, which AOTAutograd compiles with it) runs
the compiled module. Everything else keeps the plain one: Accelerate prepared and checkpoints it
(``save_state`` writes its parameter names, without the ``_orig_mod.`` prefix that an
``OptimizedModule``'s state dict would carry), evaluation runs it (a pass over a validation split
costs less than compiling its eval-mode graph on a CPU), and ``StageTrainer.model`` hands it
back, so the saved model is a plain Hugging Face model. The two share their parameters.

Shapes: dynamo compiles one graph per input shape unless told otherwise. Without length buckets
(``pad_to_multiple_of``) a batch's length is its longest example's, so nearly every batch has a
new shape: compiled with ``dynamic=None``, the second shape recompiles into one shape-generic graph
and no more compiles follow. With buckets the shapes are few and known beforehand
(``TrainBatches.max_shapes``: lengths x {full batch, last batch}), so each gets a static graph
(``dynamic=False``), and dynamo's recompile limit (8 per function by default, after which it
silently runs eager) is raised to that count when it is lower. A stream's lengths are not known
beforehand, so a streamed stage compiles with dynamic shapes even with buckets.

Anything the graph reads that changes between steps recompiles it: a parameter's ``requires_grad``
(gradual unfreezing and the head warm-up do this once per phase), or a Python number that a
strategy's forward reads (a schedule's weight), which would recompile at every step until the
limit and then fall back to eager: this option is for plain fine-tuning.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..config import TrainingConfig


def compile_for_training(model: torch.nn.Module, args: TrainingConfig,
                         max_shapes: Optional[int] = None) -> torch.nn.Module:
    """The module the training step calls: ``model`` itself, or with ``args.torch_compile`` a
    compiled wrapper of it (same parameters), static per shape when ``max_shapes`` bounds them.

    Args:
        model (`torch.nn.Module`): the model as Accelerate prepared it (DDP-wrapped under
            several processes).
        args (`TrainingConfig`): reads ``torch_compile``.
        max_shapes (`int`, *optional*): at most how many batch shapes the loader produces
            (``TrainBatches.max_shapes``); None when unbounded (dynamic shapes then).
    """
    if not args.torch_compile:
        return model
    if max_shapes is not None:
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, max_shapes)
    return torch.compile(model, backend="inductor", dynamic=False if max_shapes is not None else None)
