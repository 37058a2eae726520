"""The last encoder layer computed for the first token only, where the classifier reads nothing else.

A BERT-style sequence classifier reads one position of the last layer: the first token (BERT's
pooler, RoBERTa's and ELECTRA's ``features[:, 0]``). The other positions of that layer are
computed and thrown away. Their keys and values are still needed (the first token attends to
every token), but their query, attention output and feed-forward are not: on MiniLM-L6 that is
10 of the last layer's 12 ``hidden x hidden`` products a token, about 14% of the encoder's
matrix work (``benchmarks/ceiling.py``), forward and backward. The logits are the same (within
float rounding; tested) and so is every gradient; in training, dropout draws its masks for the
first position only, from the same distribution.

Why our own forward rather than a transformers option: transformers has none for encoders (its
``logits_to_keep`` is for causal LMs' vocabulary projection). Ours reuses the layer's own
modules and attention kernel (``ALL_ATTENTION_FUNCTIONS``, the model's ``eager_attention_forward``)
and changes only which rows go in, so the weights, their names and the saved model are untouched.

It is applied per forward call (:func:`first_token_last_layer`, a context manager), only where
the caller reads the logits alone: the plain classification loss and evaluation. Strategies that
read hidden states (DANN, MMD, CORAL, ...) run the full layer. Gradient checkpointing would re-run
the layer's forward in the backward pass, after the context has ended, so it turns this off.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from .forward_patch import activation_checkpointing, forward_patched

# architectures whose *ForSequenceClassification reads only the first token of the last layer, and
# whose layer is BERT's (attention.self with query/key/value, attention.output, feed_forward_chunk)
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
# attention kernels whose mask is a [batch, 1, query, key] tensor (or None), sliceable per query
SUPPORTED_ATTENTION = ("sdpa", "eager")


def first_token_layer(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    """The last encoder layer of ``model`` when it may run for the first token only, else None.

    That needs a transformers ``*ForSequenceClassification`` of a supported architecture
    (:data:`SUPPORTED_MODEL_TYPES`), an encoder (no decoder, no cross-attention), sdpa or eager
    attention, and no gradient checkpointing.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return None
    if not (type(model).__name__.endswith("ForSequenceClassification")
            and type(model).__module__.startswith("transformers.models.")):
        return None  # a wrapper or a custom head may read more than the first token
    if config.is_decoder or getattr(config, "add_cross_attention", False):
        return None
    if getattr(config, "_attn_implementation", None) not in SUPPORTED_ATTENTION:
        return None
    if activation_checkpointing(model):
        return None
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not layers:
        return None
    layer = layers[-1]
    attention = getattr(layer, "attention", None)
    if attention is None or not all(hasattr(attention, name) for name in ("self", "output")) \
            or not hasattr(layer, "feed_forward_chunk"):
        return None
    return layer


def _attention_kernel(self_attention: torch.nn.Module):
    """The attention function the layer itself would call: the configured one from transformers'
    registry, or the model module's own ``eager_attention_forward``."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    eager = inspect.getmodule(type(self_attention)).eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(self_attention.config._attn_implementation, eager)


def _first_token_forward(layer: torch.nn.Module, hidden_states: torch.Tensor,
                         attention_mask: Optional[torch.Tensor] = None, *args, **kwargs) -> torch.Tensor:
    """The layer's output at the first position alone, ``[batch, 1, hidden]``: keys and values
    from every token, everything else from the first."""
    attention = layer.attention.self
    batch, length, _ = hidden_states.shape
    first = hidden_states[:, :1]
    head_size = attention.attention_head_size
    query = attention.query(first).view(batch, 1, -1, head_size).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, -1, head_size).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, -1, head_size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] != 1:
        attention_mask = attention_mask[:, :, :1]  # the first query's row of a [batch, 1, query, key] mask
    context, _ = _attention_kernel(attention)(
        attention, query, key, value, attention_mask,
        dropout=attention.dropout.p if attention.training else 0.0, scaling=attention.scaling)
    attended = layer.attention.output(context.reshape(batch, 1, -1).contiguous(), first)
    return layer.feed_forward_chunk(attended)


@contextmanager
def first_token_last_layer(model: torch.nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, ``model``'s last encoder layer computes the first token only; yields
    whether it does (False when ``enabled`` is False or :func:`first_token_layer` finds none).

    Only the logits stay right inside the block: ``last_hidden_state`` has one position, and
    ``output_hidden_states``' last entry too. Example::

        with first_token_last_layer(model):
            loss = model(**batch).loss
        loss.backward()  # the graph was built inside; the backward needs no patch

    Args:
        model (`torch.nn.Module`): the classifier, unwrapped (DDP's module shares its layers).
        enabled (`bool`, *optional*, defaults to `True`): the ``first_token_last_layer`` option.
    """
    layer = first_token_layer(model) if enabled else None
    if layer is None:
        yield False
        return
    # an enclosing block that set it (evaluation inside an export) restores it
    with forward_patched([layer], _first_token_forward):
        yield True
