"""The last encoder layer computed for the first token only, where the classifier reads nothing else.

A BERT-style sequence classifier reads one position of the last layer: the first token (BERT's
pooler, RoBERTa's and ELECTRA's ``features[:, 0]``). The other positions of that layer are
computed and thrown away. Only the first position's query, attention output and feed-forward
are needed. The first token attends to every token, but with a single query their keys and
values need not be projected either: the query is taken back through the key projection and the
value projection runs once on the attention-weighted hidden state (:func:`_first_query_context`).
On MiniLM-L6 that leaves a twelfth or less of the last layer's matrix work a token, 15-17% of the
encoder's in all, forward and backward. The logits are the same (within float rounding; tested)
and so is every gradient; in training, dropout draws its masks for the first position only, from
the same distribution.

Why our own forward rather than a transformers option: transformers has none for encoders (its
``logits_to_keep`` is for causal LMs' vocabulary projection). Ours reuses the layer's own
modules and weights, so the weights, their names and the saved model are untouched; its
attention is the eager kernel's arithmetic (``eager_attention_forward``: scale, mask, softmax,
dropout), regrouped, for either of the supported kernels.

It is applied per forward call (:func:`first_token_last_layer`, a context manager), only where
the caller reads the logits alone: the plain classification loss and evaluation. Strategies that
read hidden states (DANN, MMD, CORAL, ...) run the full layer. Gradient checkpointing would re-run
the layer's forward in the backward pass, after the context has ended, so it turns this off.
"""

from __future__ import annotations

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


def _first_query_context(attention: torch.nn.Module, first: torch.Tensor, hidden_states: torch.Tensor,
                         attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The self-attention output of the first position, ``[batch, 1, heads x head size]``, without
    projecting any token's key or value.

    With one query, the products regroup (for each head, key weight ``W_k``, value weight ``W_v``):
    ``q . (W_k h_j + b_k) = (q W_k) . h_j + q . b_k``, so the query goes back through the key
    projection once and is scored against the hidden states themselves; and
    ``sum_j p_j (W_v h_j + b_v) = W_v (sum_j p_j h_j) + (sum_j p_j) b_v``, so the value projection
    runs once, on the attention-weighted hidden state. That is 2 x heads x length x hidden
    multiply-adds where the keys and values of every token took 2 x length x hidden x hidden (12x
    fewer on MiniLM). The arithmetic is the eager kernel's (scores scaled, mask added, softmax,
    dropout), in another order.
    """
    batch, length, hidden = hidden_states.shape
    heads, size = attention.num_attention_heads, attention.attention_head_size
    query = attention.query(first).view(batch, heads, size).transpose(0, 1)  # [heads, batch, size]
    key_weight = attention.key.weight.view(heads, size, hidden)
    query_in_hidden = torch.matmul(query, key_weight).transpose(0, 1)  # [batch, heads, hidden]
    scores = torch.matmul(query_in_hidden, hidden_states.transpose(1, 2))  # [batch, heads, length]
    if attention.key.bias is not None:  # the same for every key (softmax drops it), kept for its gradient
        scores = scores + (query * attention.key.bias.view(heads, 1, size)).sum(-1).transpose(0, 1).unsqueeze(-1)
    scores = scores * attention.scaling
    if attention_mask is not None:  # [batch, 1, query, length]: additive (eager) or True where attended (sdpa)
        mask = attention_mask[:, :, 0]  # the first query's row
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool \
            else scores + mask
    weights = attention.dropout(torch.softmax(scores, dim=-1))
    mixed = torch.matmul(weights, hidden_states).transpose(0, 1)  # [heads, batch, hidden]
    value_weight = attention.value.weight.view(heads, size, hidden)
    context = torch.matmul(mixed, value_weight.transpose(1, 2))  # [heads, batch, size]
    if attention.value.bias is not None:  # each weight row sums to 1, or to its kept share under dropout
        context = context + weights.sum(-1).transpose(0, 1).unsqueeze(-1) * attention.value.bias.view(heads, 1, size)
    return context.transpose(0, 1).reshape(batch, 1, heads * size)


def _first_token_forward(layer: torch.nn.Module, hidden_states: torch.Tensor,
                         attention_mask: Optional[torch.Tensor] = None, *args, **kwargs) -> torch.Tensor:
    """The layer's output at the first position alone, ``[batch, 1, hidden]``: its attention over
    every token (:func:`_first_query_context`), everything else from the first."""
    first = hidden_states[:, :1]
    context = _first_query_context(layer.attention.self, first, hidden_states, attention_mask)
    attended = layer.attention.output(context, first)
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
