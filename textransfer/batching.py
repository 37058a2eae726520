"""Batches: length-grouped sampling and dynamic padding.

Why our own sampler rather than ``transformers``' ``LengthGroupedSampler``: that one yields
example indices, sorts each mega-batch longest-first and keeps the batches of a mega-batch in
descending order, so consecutive steps see correlated lengths. Ours yields whole batches
(a batch sampler, which Accelerate shards across processes as it is), groups by length inside
seeded mega-batches, then shuffles the order of the batches, so the model never sees a
long-to-short curriculum within an epoch. Both pad far less than random batching.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import DataCollatorWithPadding

# Columns that travel with examples for bookkeeping but are not model inputs.
NON_MODEL_COLUMNS = ("length", "row")


class LengthGroupedBatchSampler(Sampler[List[int]]):
    """Yield batches of indices whose examples have similar lengths.

    Args:
        lengths (`Sequence[int]`): token count of each example.
        batch_size (`int`): examples per batch.
        seed (`int`): base seed; epoch ``e`` uses ``seed + e`` (call ``set_epoch``).
        megabatch_mult (`int`, *optional*, defaults to 50): a mega-batch holds this many batches.
        shuffle (`bool`): shuffle examples and batch order; ``False`` gives sorted, fixed batches.
        drop_last (`bool`): drop a final incomplete batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        megabatch_mult: int = 50,
        shuffle: bool = True,
        drop_last: bool = False,
        group_by_length: bool = True,
    ):
        self.lengths = torch.as_tensor(list(lengths))
        self.batch_size = batch_size
        self.seed = seed
        self.megabatch = max(1, megabatch_mult) * batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self) -> List[List[int]]:
        n = len(self.lengths)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        if self.group_by_length:
            groups = []
            for start in range(0, n, self.megabatch):
                chunk = order[start : start + self.megabatch]
                # stable sort keeps the seeded order among equal lengths
                chunk = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
                groups.append(chunk)
            order = torch.cat(groups) if groups else order
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        yield from self.batches()


class Collator:
    """Dynamic padding (``DataCollatorWithPadding``) minus the bookkeeping columns."""

    def __init__(self, tokenizer, pad_to_multiple_of: Optional[int] = None):
        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")

    def __call__(self, features: List[Dict]) -> Dict[str, torch.Tensor]:
        features = [{k: v for k, v in f.items() if k not in NON_MODEL_COLUMNS} for f in features]
        return self.pad(features)


def train_dataloader(ds, tokenizer, batch_size: int, seed: int, group_by_length: bool = True) -> DataLoader:
    sampler = LengthGroupedBatchSampler(ds["length"], batch_size, seed=seed, group_by_length=group_by_length)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=Collator(tokenizer))


def eval_dataloader(ds, tokenizer, batch_size: int) -> DataLoader:
    """Evaluation batches in the dataset's own order (sort the dataset by length beforehand)."""
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=Collator(tokenizer))


def sort_by_length(ds):
    """The split reordered longest-first, so evaluation batches waste little padding."""
    lengths = torch.as_tensor(ds["length"])
    order = torch.sort(lengths, descending=True, stable=True).indices.tolist()
    return ds.select(order)
