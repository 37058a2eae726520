"""BERT-style token masking and the masked-token loss, shared by every masked-LM objective
(the adaptive-pretraining stage, ``training/pretraining.py``, and the ``udalm`` strategy).

Masking is BERT's (``DataCollatorForLanguageModeling.torch_mask_tokens``: ``mlm_probability``
of the real tokens, of those 80% the mask token, 10% a random token, 10% unchanged; special
tokens and padding never), applied text by text with a generator seeded by the run's seed, the
optimiser step and the text's own tokens (:class:`TokenMasking`). So a text is masked the same
way however the batch is cut: under one process or several, and after a resume; and a later
step masks it anew.

The loss is the cross-entropy over the masked tokens only. Their logits are the only ones
computed (:func:`masked_positions_only`): the vocabulary projection of every position is the
largest part of a small encoder's masked-LM step. Under DDP each process divides its summed
loss by :func:`tokens_per_process`, so the processes' averaged gradients are the gradient of
the global batch's mean masked-token loss, as one process of the whole batch computes it.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DataCollatorForLanguageModeling

from ..errors import ConfigError

IGNORE_INDEX = -100  # the label of a token the loss does not count (PyTorch's and transformers' convention)


def mask_seed(seed: int, step: int, token_ids: torch.Tensor) -> int:
    """A 63-bit seed from the run's seed, the step and a text's tokens (stable across processes and runs)."""
    digest = hashlib.blake2b(np.asarray([seed, step], dtype=np.int64).tobytes(), digest_size=8)
    digest.update(token_ids.numpy().astype(np.int64).tobytes())
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def require_mask_token(tokenizer, user: str, other_choice: str) -> None:
    """A `ConfigError` when ``tokenizer`` has no mask token (masking needs one).

    Args:
        user (`str`): the option that asked for masking (``"`strategy.name: udalm`"``).
        other_choice (`str`): what to do instead, besides using a masked-LM encoder.
    """
    if tokenizer.mask_token is None:
        raise ConfigError(f"{user} masks tokens, but the tokenizer ({tokenizer.name_or_path}) has no mask token; "
                          f"use a masked-LM encoder (BERT, RoBERTa, ...) or {other_choice}.")


class TokenMasking:
    """BERT-style masking of a padded batch, text by text, with ``DataCollatorForLanguageModeling``.

    Args:
        tokenizer: the model's tokenizer (its mask token and special tokens).
        mlm_probability (`float`): share of (non-special) tokens masked.
        seed (`int`): the run's seed.
        vocab_size (`int`, *optional*): the model's vocabulary; a random replacement token the
            tokenizer knows but the embedding matrix has no row for is folded into it.
    """

    def __init__(self, tokenizer, mlm_probability: float, seed: int, vocab_size: Optional[int] = None):
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability,
                                                        return_tensors="pt")
        self.seed, self.vocab_size = seed, vocab_size

    def __call__(self, batch: Mapping[str, torch.Tensor], step: int) -> Dict[str, torch.Tensor]:
        """``batch`` with masked ``input_ids`` and ``labels`` (the original token at a masked
        position, `IGNORE_INDEX` everywhere else, padding included)."""
        ids = batch["input_ids"]
        real = batch.get("attention_mask", torch.ones_like(ids)).bool().cpu()
        cpu_ids = ids.cpu()
        masked, labels = cpu_ids.clone(), torch.full_like(cpu_ids, IGNORE_INDEX)
        for i in range(cpu_ids.shape[0]):  # padding left out: a text's mask is the same in any batch
            text = cpu_ids[i][real[i]]
            # torch_mask_tokens draws from `collator.generator` (the global RNG when None)
            self.collator.generator = torch.Generator().manual_seed(mask_seed(self.seed, step, text))
            inputs, text_labels = self.collator.torch_mask_tokens(text.unsqueeze(0).clone())
            masked[i, real[i]], labels[i, real[i]] = inputs[0], text_labels[0]
        self.collator.generator = None
        if self.vocab_size is not None:
            masked = torch.where(masked >= self.vocab_size, masked % self.vocab_size, masked)
        out = {k: v for k, v in batch.items() if k != "labels"}
        out["input_ids"], out["labels"] = masked.to(ids.device), labels.to(ids.device)
        return out


@contextmanager
def masked_positions_only(encoder: torch.nn.Module, positions: torch.Tensor, detach: bool = False):
    """While active, ``encoder`` outputs the hidden states at ``positions`` (a boolean
    ``[batch, length]`` mask) alone, as one ``[1, n, hidden]`` sequence; with ``detach``, cut
    from the encoder's graph (only the head learns from the loss: a fresh head's warm-up).

    The masked-LM heads of every supported architecture work token by token (dense, activation,
    LayerNorm, vocabulary projection), so the logits then cover the masked tokens only. The
    vocabulary projection of every token is about half of a small encoder's step (MiniLM: 384 x
    30522 per token against ~10M multiply-adds for its 6 layers); only the 15% masked need it."""

    def keep_positions(module, args, output):
        hidden = output[0][positions].unsqueeze(0)
        hidden = hidden.detach() if detach else hidden
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        output.last_hidden_state = hidden  # a ModelOutput: its [0] follows
        return output

    handle = encoder.register_forward_hook(keep_positions)
    try:
        yield
    finally:
        handle.remove()


def masked_lm_losses(model, encoder: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                     labels: torch.Tensor, head_only: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per text: the summed cross-entropy over its masked tokens (labels other than
    `IGNORE_INDEX`), and how many there are. Other positions count for nothing: their logits
    are not even computed (:func:`masked_positions_only`).

    Args:
        model: the masked-LM model (possibly DDP-wrapped); ``encoder`` is its base model.
        batch: its inputs, masked (no ``labels``).
        head_only (`bool`): the loss's gradient reaches the head, not the encoder.
    """
    positions = labels != IGNORE_INDEX
    with masked_positions_only(encoder, positions, detach=head_only):
        logits = model(**batch).logits[0]
    token_losses = F.cross_entropy(logits.float(), labels[positions], reduction="none")
    texts = positions.nonzero()[:, 0]
    sums = torch.zeros(labels.shape[0], dtype=token_losses.dtype, device=labels.device)
    return sums.index_add(0, texts, token_losses), positions.sum(dim=1)


def masked_token_loss(model, encoder: torch.nn.Module, batch: Mapping[str, torch.Tensor], labels: torch.Tensor,
                      divisor: Optional[torch.Tensor] = None, head_only: bool = False) -> torch.Tensor:
    """The cross-entropy summed over the masked tokens, divided by ``divisor`` (default: their
    number, at least 1: the mean; 0, with a gradient path, when nothing is masked).

    Args:
        model / encoder / batch: as for :func:`masked_lm_losses`.
        divisor (`torch.Tensor`, *optional*): under DDP, :func:`tokens_per_process`.
        head_only (`bool`): as for :func:`masked_lm_losses`.
    """
    sums, counts = masked_lm_losses(model, encoder, batch, labels, head_only)
    if divisor is None:
        divisor = counts.sum().clamp(min=1)
    return sums.sum() / divisor


def tokens_per_process(labels: torch.Tensor, accelerator) -> torch.Tensor:
    """The global batch's masked-token count (at least 1) over the number of processes.

    DDP averages the processes' gradients; a process that divides its summed loss by this
    contributes its share of the gradient of (global sum / global count): N processes of batch
    B train as one process of batch N*B. Every process calls it each step (a collective)."""
    count = (labels != IGNORE_INDEX).sum().float()
    if accelerator.num_processes > 1:
        count = accelerator.reduce(count, reduction="sum")
    return count.clamp(min=1.0) / accelerator.num_processes


__all__ = ["IGNORE_INDEX", "TokenMasking", "mask_seed", "require_mask_token", "masked_positions_only",
           "masked_lm_losses", "masked_token_loss", "tokens_per_process"]
