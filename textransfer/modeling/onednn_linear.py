"""Linear layers whose fp32 products run on oneDNN on a CPU: the same arithmetic, faster kernels.

Why: on a CPU, torch computes ``nn.Linear`` and its gradients with MKL's ``sgemm``. torch also
ships oneDNN (``torch.backends.mkldnn``), Intel's deep-learning kernel library, beside it, but
eager fp32 products go to MKL. On the products of a BERT-style encoder (a few hundred tokens by
384 or 1,536 features, two threads, this project's AMD EPYC) oneDNN's fp32 kernels ran 2-39%
faster than MKL's for the forward product and 13-27% for the input gradient, and slower for five
of nine weight-gradient shapes, which stay on MKL (``benchmarks/throughput.py``'s row
``textransfer_mkl_linear`` turns this off). Why our own autograd function: torch has no switch that
sends eager fp32 products to oneDNN (``torch.backends.mkldnn`` settings lower the precision), and
``torch.compile`` costs tens of seconds of compilation on a CPU and uses oneDNN's op only in
frozen inference graphs.

What runs: the forward product ``x W^T + b`` and the input gradient ``dY W`` on oneDNN
(``torch.ops.mkldnn._linear_pointwise``, the op torch's inductor puts in frozen CPU inference
graphs), the weight gradient ``dY^T x`` and the bias gradient as torch computes them. Every
product is fp32 with fp32 accumulation, as before; only the order of the sums differs, so results
agree to float rounding (tested against ``nn.Linear``), not bitwise.

Where: within a :func:`onednn_linear_layers` block, every module of exactly the type
``nn.Linear`` in the model, on fp32 CPU tensors outside autocast. Anything else (other devices,
bf16 autocast, other dtypes, a torch without oneDNN) takes ``nn.Linear``'s own forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
from torch.autograd.function import once_differentiable

from .forward_patch import activation_checkpointing, forward_patched


def onednn_available() -> bool:
    """Whether this torch has oneDNN and the linear op this module calls."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_product(rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``rows @ weight.T + bias`` on oneDNN (``weight`` is ``[out, in]``, any strides)."""
    return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")


class OneDnnLinearFunction(torch.autograd.Function):
    """``F.linear`` with the forward and input-gradient products on oneDNN (module doc)."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        rows = inputs.reshape(-1, inputs.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.has_bias = bias is not None
        return _onednn_product(rows, weight, bias).view(*inputs.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        rows, weight = ctx.saved_tensors
        grad_rows = grad_output.reshape(-1, grad_output.shape[-1])
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # dY W: oneDNN reads W^T as a strided view, no copy
            grad_input = _onednn_product(grad_rows, weight.t(), None).view(*grad_output.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:  # dY^T x: MKL was as fast or faster on these shapes
            grad_weight = grad_rows.t().mm(rows)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_input, grad_weight, grad_bias


def linear_on_onednn(module: torch.nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
    """``module``'s forward with its products on oneDNN where that applies, else its own.

    Installed as an ``nn.Linear`` instance's ``forward`` by :func:`onednn_linear_layers`.
    """
    weight = module.weight
    if (inputs.device.type != "cpu" or inputs.dtype != torch.float32 or weight.dtype != torch.float32
            or torch.is_autocast_enabled("cpu") or inputs.dim() < 1 or inputs.numel() == 0):
        return torch.nn.functional.linear(inputs, weight, module.bias)
    return OneDnnLinearFunction.apply(inputs, weight, module.bias)


def _linear_modules(model: torch.nn.Module) -> List[torch.nn.Linear]:
    # exactly nn.Linear: subclasses (quantised, LoRA-wrapped, ...) compute something else
    return [module for module in model.modules() if type(module) is torch.nn.Linear]


@contextmanager
def onednn_linear_layers(model: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, ``model``'s ``nn.Linear`` modules compute on oneDNN (module doc); yields
    how many do (0 when ``enabled`` is False, this torch has no oneDNN, or the model checkpoints
    activations: the recomputed forward would run outside the block).

    The backward pass needs no patch, so it may run after the block. Modules that an enclosing
    block patched stay patched until that block ends.

    Args:
        model (`torch.nn.Module`): the model (a DDP wrapper's modules are the model's own).
        enabled (`bool`, *optional*, defaults to `True`): the ``onednn_linear`` option.
    """
    on = enabled and onednn_available() and not activation_checkpointing(model)
    with forward_patched(_linear_modules(model) if on else [], linear_on_onednn) as count:
        yield count
