"""The word-embedding gradient in one buffer for the whole stage, filled with the batch's rows only.

Why: the word-embedding matrix is half of a small encoder's parameters (MiniLM: 30,522 x 384 of
22.7M, 47 MB in fp32), but a batch touches a few hundred of its rows. PyTorch's dense backward of
``nn.Embedding`` allocates a zeroed 47 MB gradient every step and scatters those rows into it. On a
CPU that allocation is new memory each time: glibc serves blocks over its 32 MB mmap ceiling with a
fresh mapping, so every step page-faults and zero-fills 47 MB, and frees it again at ``zero_grad``.
Here the embedding's backward is sparse (``nn.Embedding.sparse`` is set for the forward pass only,
which is when autograd records it) and autograd adds those rows into a dense gradient buffer that
lives as long as the stage and is zeroed in place after each optimiser step. Gradient clipping and
the fused AdamW step see the same dense gradient as before (the same sums, added in another order).

Only where it is plainly the same computation: on a CPU, one process (DDP reduces gradients through
hooks that expect dense ones), no ``torch_compile``, a trainable ``nn.Embedding`` that is not tied
to an output layer (a masked-LM head shares it and gets a dense gradient anyway).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from ..config import TrainingConfig


def _trainable_input_embedding(model: torch.nn.Module) -> Optional[torch.nn.Embedding]:
    """``model``'s word embedding when it trains and no output layer shares its weight."""
    get_input = getattr(model, "get_input_embeddings", None)
    embedding = get_input() if callable(get_input) else None
    if not isinstance(embedding, torch.nn.Embedding) or not embedding.weight.requires_grad or embedding.sparse:
        return None
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if output is not None and getattr(output, "weight", None) is embedding.weight:
        return None
    return embedding


class EmbeddingGradient:
    """The stage-long gradient buffer of one word embedding (see the module docstring).

    Use: :meth:`for_stage` (None where it does not apply), the forward passes inside
    :meth:`sparse_backward`, :meth:`reset` after each ``optimizer.zero_grad`` that ran, and
    :meth:`release` at the end of the stage.
    """

    def __init__(self, embedding: torch.nn.Embedding):
        self.embedding = embedding
        self.buffer = torch.zeros_like(embedding.weight)
        embedding.weight.grad = self.buffer

    @classmethod
    def for_stage(cls, model: torch.nn.Module, args: TrainingConfig,
                  accelerator: Accelerator) -> Optional["EmbeddingGradient"]:
        """The buffer for ``model`` (unwrapped) when ``args.sparse_embedding_gradient`` asks for it
        and the stage is one where it changes nothing but speed; else None."""
        if not args.sparse_embedding_gradient or args.torch_compile:
            return None
        if accelerator.distributed_type != DistributedType.NO or accelerator.device.type != "cpu":
            return None
        embedding = _trainable_input_embedding(model)
        return cls(embedding) if embedding is not None else None

    @contextmanager
    def sparse_backward(self) -> Iterator[None]:
        """Forward passes in this block record a sparse embedding backward, added into the buffer
        (the gradient since the last :meth:`reset`, which a gradient mask may have dropped to None)."""
        self.embedding.sparse = True
        try:
            yield
        finally:
            self.embedding.sparse = False

    def reset(self) -> None:
        """After the optimiser step and ``zero_grad``: the buffer zeroed, and the gradient again."""
        self.buffer.zero_()
        self.embedding.weight.grad = self.buffer

    def release(self) -> None:
        """End of the stage: the model's gradient is None again, as ``zero_grad`` leaves it."""
        self.embedding.weight.grad = None
        self.embedding.sparse = False
