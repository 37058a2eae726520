"""Dropout masks drawn with NumPy on a CPU: the same dropout, several times cheaper to draw.

Why: torch's CPU dropout draws its mask with ``bernoulli_``, about 8 ns an element here (2.4 ms on
a 32 x 25 x 384 activation, two threads, an AMD EPYC); the mask multiply is a few percent of that.
MiniLM-L6 has 14 ``nn.Dropout`` calls a training step (the embeddings', two a layer, the
classifier's); in a step-level probe on SST-2 batches, drawing them with NumPy took 2.8% off the
forward and backward (``benchmarks/README.md``; ``benchmarks/throughput.py``'s row
``textransfer_torch_dropout`` turns this off). NumPy's PCG64 bit generator gives 64 random bits a
call, four 16-bit draws, at under 1 ns an element with the compare and the scale.

What is drawn: an element is kept when its 16 random bits fall below ``round((1 - p) * 65536)``,
and kept elements are scaled by ``65536 / threshold``, the inverse of the keep probability
actually drawn, so the output's expectation is exactly the input, as with torch's dropout. ``p``
itself is rounded to a multiple of 1/65536 (0.1 becomes 0.100006). The generator is seeded per
call with one ``torch.randint`` draw from torch's default generator, so ``set_seed`` makes runs
repeat, and a resumed run, whose checkpoint restores torch's RNG state, draws the same masks as
an uninterrupted one. The masks differ from torch's own, as any other generator's would.

Where: within a :func:`numpy_dropout_masks` block, every module of exactly the type
``nn.Dropout`` in the model, on CPU tensors in training mode. Tensors on other devices go to
torch's dropout (a GPU's own kernel draws there), and so does a ``p`` that rounds to 0 or 1. The
attention probabilities' dropout happens inside torch's ``scaled_dot_product_attention`` kernel
(BERT passes it only ``p``), so it keeps torch's masks.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List

import numpy as np
import torch

from .forward_patch import activation_checkpointing, forward_patched

# random bits per element: 16 gives p in steps of 1/65536, and four draws per 64-bit output
MASK_BITS = 16
_LEVELS = 1 << MASK_BITS


def keep_threshold(p: float) -> int:
    """The 16-bit draws below which an element is kept: ``round((1 - p) * 65536)``."""
    return int(round((1.0 - p) * _LEVELS))


def draw_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A float32 dropout mask of ``shape``: ``65536 / threshold`` where kept, 0 where dropped (module doc).

    Seeded by one draw from torch's default generator, so it follows ``torch.manual_seed``.
    """
    threshold = keep_threshold(p)
    count = int(np.prod(shape, dtype=np.int64))
    seed = int(torch.randint(0, 2**62, (1,)).item())
    draws = np.random.PCG64(seed).random_raw((count + 3) // 4).view(np.uint16)[:count]
    mask = np.multiply(draws < threshold, np.float32(_LEVELS / threshold), dtype=np.float32)
    return torch.from_numpy(mask).view(shape)


def dropout_with_numpy_mask(module: torch.nn.Dropout, hidden: torch.Tensor) -> torch.Tensor:
    """``module``'s dropout on ``hidden`` with a NumPy-drawn mask; torch's own where that does not apply.

    Installed as an ``nn.Dropout`` instance's ``forward`` by :func:`numpy_dropout_masks`.
    """
    if not module.training or module.p == 0.0:
        return hidden
    if hidden.device.type != "cpu" or not 0 < keep_threshold(module.p) < _LEVELS:
        return torch.nn.functional.dropout(hidden, module.p, True, module.inplace)
    mask = draw_mask(hidden.shape, module.p)
    # autograd keeps `mask` (it needs no gradient) to multiply the incoming gradient by. A bf16 or
    # fp16 input is scaled in fp32 and rounded once, as torch's dropout does (a mask rounded to
    # bf16 would scale by 1.109375 for p = 0.1, not 1.1111)
    if module.inplace:
        return hidden.mul_(mask)
    scaled = hidden * mask
    return scaled if scaled.dtype == hidden.dtype else scaled.to(hidden.dtype)


def _dropout_modules(model: torch.nn.Module) -> List[torch.nn.Dropout]:
    # exactly nn.Dropout: its subclasses (and Dropout1d/2d, AlphaDropout) drop in other ways
    return [module for module in model.modules() if type(module) is torch.nn.Dropout]


@contextmanager
def numpy_dropout_masks(model: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, ``model``'s ``nn.Dropout`` modules draw their masks with NumPy (module doc);
    yields how many modules do (0 when ``enabled`` is False, or when the model checkpoints
    activations: its recomputed forward, outside the block, would draw torch's masks, not these).

    The forward passes inside draw the masks; the backward pass needs no patch, so it may run after
    the block. Modules that an enclosing block patched stay patched until that block ends.

    Args:
        model (`torch.nn.Module`): the model (a DDP wrapper's modules are the model's own).
        enabled (`bool`, *optional*, defaults to `True`): the ``numpy_dropout_masks`` option.
    """
    on = enabled and not activation_checkpointing(model)
    with forward_patched(_dropout_modules(model) if on else [], dropout_with_numpy_mask) as count:
        yield count
