"""Tokenization pipeline: fast tokenizers through ``datasets.map``, cached on disk.

The map result is cached by ``datasets`` under a fingerprint that we compute from the
parent dataset's fingerprint, the tokenizer's full serialisation and ``max_length``; so a
second run with the same data, tokenizer and length reuses the Arrow file instead of
tokenizing again, and changing any of the three re-tokenizes. (Left to itself, ``datasets``
would hash the tokenizer object by pickling it, which is slower and less stable across runs.)

Padding is not done here: batches are padded dynamically by the collator (see
``batching.py``), so every batch is only as long as its longest example.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

from datasets import Dataset, DatasetDict, IterableDataset
from datasets.fingerprint import Hasher
from transformers import PreTrainedTokenizerBase

from ..errors import ConfigError
from .batching import bucket_length

logger = logging.getLogger(__name__)

TEXT_COLUMNS = ("text", "text_pair")
# Tokenizers without a known limit report a huge model_max_length (int(1e30)); anything at or
# above this is "no limit", not a length.
NO_LIMIT = 1_000_000
# The usual position limit of BERT-style encoders, assumed when neither the model nor the
# tokenizer states one.
FALLBACK_MAX_LENGTH = 512


def model_max_length(tokenizer: PreTrainedTokenizerBase, model_config=None) -> int:
    """The longest input the model accepts, from its position embeddings and tokenizer."""
    limits = []
    mpe = getattr(model_config, "max_position_embeddings", None) if model_config is not None else None
    if mpe:
        # RoBERTa-style models (RoBERTa, XLM-R, ...) offset positions by padding_idx + 1.
        offset = 2 if getattr(model_config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(mpe - offset)
    if tokenizer.model_max_length and tokenizer.model_max_length < NO_LIMIT:
        limits.append(int(tokenizer.model_max_length))
    return min(limits) if limits else FALLBACK_MAX_LENGTH


def check_max_length(max_length: int, tokenizer: PreTrainedTokenizerBase, model_config=None,
                     buckets: Optional[Dict[str, Optional[int]]] = None) -> None:
    """``max_length`` fits the model; so does each stage's longest bucket (``buckets``: a training
    section's name -> its ``pad_to_multiple_of``), which rounds a batch's length up past it."""
    limit = model_max_length(tokenizer, model_config)
    if max_length > limit:
        raise ConfigError(
            f"`model.max_length: {max_length}` is beyond what the model accepts ({limit} tokens). "
            f"Set `model.max_length` to at most {limit}."
        )
    for section, multiple in (buckets or {}).items():
        longest = bucket_length(max_length, multiple)
        if longest > limit:
            # a divisor of max_length pads it to itself, which fits (checked above)
            fits = next(m for m in range(multiple, 0, -1) if max_length % m == 0)
            raise ConfigError(
                f"`{section}.pad_to_multiple_of: {multiple}` pads the longest batches ({max_length} tokens) to "
                f"{longest}, beyond what the model accepts ({limit} tokens). Use a multiple that divides "
                f"`model.max_length`, e.g. {section}.pad_to_multiple_of={fits}, or lower `model.max_length`.",
                option=f"{section}.pad_to_multiple_of")


class _Tokenize:
    """Batched tokenize function; a class so ``datasets`` can pickle it for multiprocessing."""

    def __init__(self, tokenizer, max_length: int, pair: bool):
        self.tokenizer, self.max_length, self.pair = tokenizer, max_length, pair

    def __call__(self, batch):
        enc = self.tokenizer(
            batch["text"],
            batch["text_pair"] if self.pair else None,
            truncation=True,
            max_length=self.max_length,
        )
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    if tokenizer.is_fast:
        return Hasher.hash(tokenizer.backend_tokenizer.to_str())
    return Hasher.hash((tokenizer.name_or_path, tokenizer.get_vocab()))


def tokenize_dataset(
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    num_proc: Optional[int] = None,
    desc: Optional[str] = None,
) -> Dataset:
    """Tokenize one split; adds ``input_ids``, ``attention_mask`` (and friends) and ``length``.

    Args:
        ds (`datasets.Dataset`): a split with a ``text`` column (and ``text_pair`` for pairs).
        tokenizer: a (fast) tokenizer.
        max_length (`int`): truncation length.
        num_proc (`int`, *optional*): worker processes for ``map``.
    """
    if not tokenizer.is_fast:
        logger.warning("tokenizer %s is not a fast tokenizer; tokenization will be slow.", tokenizer.name_or_path)
    pair = "text_pair" in ds.column_names
    fingerprint = Hasher.hash([ds._fingerprint, tokenizer_fingerprint(tokenizer), max_length, pair, "tokenize-v1"])
    return ds.map(
        _Tokenize(tokenizer, max_length, pair),
        batched=True,
        remove_columns=[c for c in TEXT_COLUMNS if c in ds.column_names],
        new_fingerprint=fingerprint,
        num_proc=num_proc,
        desc=desc or "Tokenizing",
    )


def tokenize_stream(ds: IterableDataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> IterableDataset:
    """Tokenize a stream lazily (``IterableDataset.map(batched=True)``): the same function and
    output columns as :func:`tokenize_dataset`, applied a batch at a time as rows are read.

    Nothing is cached: a stream is never materialised, so each run re-tokenizes what it reads
    (see ``streaming.py`` for why that is cheap next to training).
    """
    columns = ds.column_names or list(next(iter(ds.take(1)), {}))  # a stream may not know its columns
    pair = "text_pair" in columns
    return ds.map(_Tokenize(tokenizer, max_length, pair), batched=True,
                  remove_columns=[c for c in TEXT_COLUMNS if c != "text_pair" or pair])


def tokenize_splits(splits: DatasetDict, tokenizer, max_length: int, num_proc: Optional[int] = None) -> DatasetDict:
    """Tokenize every split; a streamed split (``IterableDataset``) is tokenized lazily."""
    return DatasetDict(
        {name: tokenize_stream(ds, tokenizer, max_length) if isinstance(ds, IterableDataset)
         else tokenize_dataset(ds, tokenizer, max_length, num_proc, desc=f"Tokenizing {name}")
         for name, ds in splits.items()}
    )
