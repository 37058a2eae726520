"""The word embedding's gradient and update on the rows a stage's batches reach.

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

**The update on the reached rows** (``sparse_embedding_update``, :class:`ReachedRows`). The dense
gradient is still a 47 MB matrix that gradient clipping reads and scales and the fused AdamW step
walks with its two moment matrices (seven passes over 47 MB a step), though a stage's batches reach
a few thousand rows of it (2,000 SST-2 sentences: 4,738 of MiniLM's 30,522; XLM-R's 250k-row matrix
is 70% of that model). A row no gradient has reached has zero moments, and AdamW does exactly one
thing to it: the weight decay, ``row * (1 - lr * weight_decay)`` (the fused kernel's own formula,
bitwise; nothing at all without weight decay). So clipping reads the reached rows, the fused
AdamW kernel runs on those rows' weights, moments and gradient (the same kernel and arguments, row
by row the same arithmetic), the other rows get the decay alone, and the buffer is zeroed on the
rows the batches wrote. The optimiser state keeps its full shape (checkpoints and resume are
unchanged). Where that reasoning does not hold, the step is AdamW's own on the whole matrix: a
gradient that is not the embedding's sparse one (a loss term on the weights, as L2SP's; seen by a
hook, after which the stage stays on the whole matrix), an optimiser other than the fused AdamW
without ``amsgrad``, or more than half the rows reached (the gathers then cost more than they save).
Clipping computes the same norm with the rows' terms summed in another order (ulp-level).
Measured (``benchmarks/embedding_update.py``): XLM-R base's shape trains at 1.19x the samples/s;
MiniLM's, whose whole-matrix update is cheap, gains nothing measurable.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, List, Optional, Tuple

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

    def __init__(self, embedding: torch.nn.Embedding, row_update: bool = True):
        self.embedding = embedding
        self.buffer = torch.zeros_like(embedding.weight)
        embedding.weight.grad = self.buffer
        # the rows the batches reach, when the update may be limited to them (sparse_embedding_update)
        self.rows = ReachedRows(embedding.weight) if row_update else None

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
        if embedding is None:
            return None
        # a gradient scaler (fp16) unscales inside Accelerate's clipping, which the row step replaces
        return cls(embedding, args.sparse_embedding_update and getattr(accelerator, "scaler", None) is None)

    @contextmanager
    def sparse_backward(self) -> Iterator[None]:
        """Forward passes in this block record a sparse embedding backward, added into the buffer
        (the gradient since the last :meth:`reset`, which a gradient mask may have dropped to None)."""
        self.embedding.sparse = True
        try:
            yield
        finally:
            self.embedding.sparse = False

    def row_step(self, optimizer: torch.optim.Optimizer) -> Optional["RowStep"]:
        """Before clipping and the optimiser step: the update of this step limited to the reached
        rows (the embedding's gradient taken out of the optimiser's step), or None where the step
        is AdamW's own on the whole matrix (see the module docstring)."""
        if self.rows is None or self.embedding.weight.grad is None:  # off, or a mask dropped the gradient
            return None
        adamw, group = _fused_adamw_group(optimizer, self.embedding.weight)
        rows = self.rows.reached(adamw.state.get(self.embedding.weight)) if adamw is not None else None
        if rows is None:
            return None
        step = RowStep(self.embedding.weight, rows, self.buffer.index_select(0, rows), adamw, group)
        self.embedding.weight.grad = None  # the optimiser's own step skips it
        return step

    def reset(self) -> None:
        """After the optimiser step and ``zero_grad``: the buffer zeroed (on the rows the batches
        wrote, where only they can hold anything), and the gradient again."""
        written = self.rows.written() if self.rows is not None else None
        if written is None:
            self.buffer.zero_()
        elif written.numel():
            self.buffer.index_fill_(0, written, 0.0)
        self.embedding.weight.grad = self.buffer

    def release(self) -> None:
        """End of the stage: the model's gradient is None again, as ``zero_grad`` leaves it."""
        self.embedding.weight.grad = None
        self.embedding.sparse = False
        if self.rows is not None:
            self.rows.release()


# Past this share of the rows reached, gathering and scattering the rows (weights, both moments and
# the gradient) moves more memory than the whole-matrix step it replaces.
MAX_REACHED_SHARE = 0.5


class ReachedRows:
    """The word-embedding rows a gradient has reached in this stage, seen by a hook on the weight.

    A gradient that is not sparse (the embedding's own backward is, inside ``sparse_backward``)
    means some other term reached every row: from then on the stage steps the whole matrix."""

    def __init__(self, weight: torch.nn.Parameter):
        self.mask = torch.zeros(weight.shape[0], dtype=torch.bool, device=weight.device)
        self.pending: List[torch.Tensor] = []  # row indices written since the last reset
        self.dense = False
        self.from_state = False  # rows a restored optimiser state has moments for, added once
        self.handle = weight.register_hook(self._seen)

    def _seen(self, grad: torch.Tensor) -> None:
        if grad.is_sparse:
            self.pending.append(grad._indices()[0])
        else:
            self.dense = True

    def reached(self, state: Optional[dict]) -> Optional[torch.Tensor]:
        """The sorted indices of every row reached so far (with moments in ``state``, the
        optimiser's state of the weight), or None where the step must be the whole matrix's."""
        if self.dense:
            return None
        if not self.from_state and state and "exp_avg" in state:  # a resumed stage's earlier rows
            self.mask |= (state["exp_avg"] != 0).any(dim=1) | (state["exp_avg_sq"] != 0).any(dim=1)
        self.from_state = True
        for ids in self.pending:
            self.mask[ids] = True
        rows = self.mask.nonzero().flatten()
        return rows if rows.numel() <= MAX_REACHED_SHARE * self.mask.numel() else None

    def written(self) -> Optional[torch.Tensor]:
        """The rows the batches wrote since the last call (None: any row may hold a gradient)."""
        ids = torch.cat(self.pending) if self.pending else self.mask.new_zeros(0, dtype=torch.long)
        self.pending = []
        return None if self.dense else ids

    def release(self) -> None:
        self.handle.remove()


class RowStep:
    """One AdamW step of the word embedding on its reached ``rows`` (see the module docstring):
    :meth:`clip` with the other parameters, then :meth:`apply` after the optimiser's own step."""

    def __init__(self, weight: torch.nn.Parameter, rows: torch.Tensor, grad: torch.Tensor,
                 adamw: torch.optim.AdamW, group: dict):
        self.weight, self.rows, self.grad, self.adamw, self.group = weight, rows, grad, adamw, group

    def clip(self, parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """``clip_grad_norm_`` over ``parameters`` and the rows' gradient, with torch's own norm
        and clipping functions (the rows are not a parameter, so they are scaled here alike)."""
        parameters = [p for p in parameters if p.grad is not None]
        total = torch.nn.utils.get_total_norm([p.grad for p in parameters] + [self.grad])
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
        self.grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))  # clip_grads_with_norm_'s factor
        return total

    @torch.no_grad()
    def apply(self) -> None:
        group, state = self.group, self.adamw.state[self.weight]
        if not state:  # as AdamW's _init_group makes it for the fused kernel
            state["step"] = torch.zeros((), dtype=torch.float32, device=self.weight.device)
            state["exp_avg"] = torch.zeros_like(self.weight, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(self.weight, memory_format=torch.preserve_format)
        state["step"] += 1
        rows, weight = self.rows, self.weight
        moved = [weight.index_select(0, rows), state["exp_avg"].index_select(0, rows),
                 state["exp_avg_sq"].index_select(0, rows)]
        lr, decay = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(moved[:1], [self.grad], moved[1:2], moved[2:], [], [state["step"]], lr=lr,
                            beta1=beta1, beta2=beta2, weight_decay=decay, eps=group["eps"], amsgrad=False,
                            maximize=False, grad_scale=None, found_inf=None)
        if decay:  # every row without moments: AdamW's whole update is its decay (the kernel's formula)
            weight.mul_(1 - lr * decay)
        for full, part in zip((weight, state["exp_avg"], state["exp_avg_sq"]), moved):
            full.index_copy_(0, rows, part)


def _fused_adamw_group(optimizer: torch.optim.Optimizer,
                       weight: torch.nn.Parameter) -> Tuple[Optional[torch.optim.AdamW], Optional[dict]]:
    """The fused AdamW under ``optimizer`` (Accelerate's wrapper unwrapped) and ``weight``'s
    parameter group, when that group steps with the plain fused kernel; else ``(None, None)``."""
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    if type(optimizer) is not torch.optim.AdamW:
        return None, None
    group = next((g for g in optimizer.param_groups if any(p is weight for p in g["params"])), None)
    plain = {"fused": True, "amsgrad": False, "maximize": False, "capturable": False, "differentiable": False}
    if group is None or any(group.get(k) != v for k, v in plain.items()) or torch.is_tensor(group["lr"]):
        return None, None
    return optimizer, group
