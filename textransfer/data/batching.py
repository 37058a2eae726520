"""Batches: length-grouped sampling and dynamic padding.

Why our own sampler rather than ``transformers``' ``LengthGroupedSampler``: that one yields
example indices, sorts each mega-batch longest-first and keeps the batches of a mega-batch in
descending order, so consecutive steps see correlated lengths. Ours yields whole batches
(a batch sampler, which Accelerate shards across processes as it is), groups by length inside
seeded mega-batches, then shuffles the order of the batches, so the model never sees a
long-to-short curriculum within an epoch. Both pad far less than random batching.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import DataCollatorWithPadding

# Columns that travel with examples for bookkeeping but are not model inputs.
NON_MODEL_COLUMNS = ("length", "row")
# A per-example loss weight (``instance_weighting``): not a model input either, but it reaches the
# batch, as a float tensor of one value per example, for a trainer whose loss reads it
EXAMPLE_WEIGHTS_COLUMN = "weights"
# Batches per length-grouping window (mega-batch), here and in streaming.py's
# LengthGroupedStream: examples are sorted by length only within a seeded window of this many
# batches, so batches pad little while which examples share a batch stays random; larger
# windows pad less but make batches more alike from step to step (and hold more of a stream in
# memory).
LENGTH_GROUP_BATCHES = 50


class LengthGroupedBatchSampler(Sampler[List[int]]):
    """Yield batches of indices whose examples have similar lengths.

    Args:
        lengths (`Sequence[int]`): token count of each example.
        batch_size (`int`): examples per batch.
        seed (`int`): base seed; epoch ``e`` uses ``seed + e`` (call ``set_epoch``).
        drop_last (`bool`): drop a final incomplete batch.
        num_replicas (`int`, *optional*, defaults to 1): processes the batches are shared by.

    Under ``num_replicas`` processes the sampler groups, pads and shuffles *global* batches of
    ``batch_size * num_replicas`` examples, exactly as one process with that batch size would,
    then cuts each into ``num_replicas`` consecutive per-process batches. Accelerate's
    ``BatchSamplerShard`` hands batch ``i`` to process ``i % num_replicas``, so at every step
    the processes together train on one global batch: N processes of batch B see the same
    data, in the same order, as one process of batch N*B (the DDP test relies on this).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        drop_last: bool = False,
        group_by_length: bool = True,
        num_replicas: int = 1,
    ):
        self.lengths = torch.as_tensor(list(lengths))
        self.per_process_batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.group_by_length = group_by_length
        self.num_replicas = max(1, num_replicas)
        self.epoch = 0

    @property
    def batch_size(self):
        # Accelerate's BatchSamplerShard refills any batch shorter than `batch_size` with
        # examples from the epoch's start (duplicates); under several processes our batches are
        # already cut evenly for them, so it is told None ("batches of varying length") and
        # passes them through as they are.
        return self.per_process_batch_size if self.num_replicas == 1 else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n, size = len(self.lengths), self.per_process_batch_size * self.num_replicas
        full, rest = divmod(n, size)
        if self.num_replicas == 1:
            return full if self.drop_last or not rest else full + 1
        # a short last global batch is kept, split across processes, when each gets an example
        return self.num_replicas * (full + (0 if self.drop_last or rest < self.num_replicas else 1))

    def batches(self) -> List[List[int]]:
        if self.num_replicas == 1:
            return self._global_batches(self.per_process_batch_size)
        out = []
        for batch in self._global_batches(self.per_process_batch_size * self.num_replicas):
            if len(batch) < self.num_replicas:
                continue  # too few left for every process to get one (at most num_replicas - 1 examples)
            # a short last global batch is cut into near-equal parts, one per process
            cuts = torch.linspace(0, len(batch), self.num_replicas + 1).round().long().tolist()
            out.extend(batch[cuts[i] : cuts[i + 1]] for i in range(self.num_replicas))
        return out

    def _global_batches(self, batch_size: int) -> List[List[int]]:
        n = len(self.lengths)
        megabatch = LENGTH_GROUP_BATCHES * batch_size  # of global batches: as one process of that size
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g)
        if self.group_by_length:
            groups = []
            for start in range(0, n, megabatch):
                chunk = order[start : start + megabatch]
                # stable sort keeps the seeded order among equal lengths
                chunk = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
                groups.append(chunk)
            order = torch.cat(groups) if groups else order
        batches = [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
        if self.drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in perm]

    def __iter__(self) -> Iterator[List[int]]:
        yield from self.batches()


class Collator:
    """Dynamic padding (``DataCollatorWithPadding``) minus the bookkeeping columns.

    With ``pad_to_multiple_of`` (length buckets), a batch's length is rounded up to a multiple of
    it: the extra positions are padding (attention mask 0), so they change no example's output.

    A ``weights`` column (:data:`EXAMPLE_WEIGHTS_COLUMN`) comes out as ``batch["weights"]``, a
    float32 tensor of one weight per example (scalars need no padding); the trainer that uses it
    takes it out of the batch before the model sees the rest.
    """

    def __init__(self, tokenizer, pad_to_multiple_of: Optional[int] = None):
        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")

    def __call__(self, features: List[Dict]) -> Dict[str, torch.Tensor]:
        dropped = NON_MODEL_COLUMNS + (EXAMPLE_WEIGHTS_COLUMN,)
        batch = self.pad([{k: v for k, v in f.items() if k not in dropped} for f in features])
        if features and EXAMPLE_WEIGHTS_COLUMN in features[0]:
            batch[EXAMPLE_WEIGHTS_COLUMN] = torch.tensor([f[EXAMPLE_WEIGHTS_COLUMN] for f in features],
                                                         dtype=torch.float32)
        return batch


def train_dataloader(ds, tokenizer, batch_size: int, seed: int, group_by_length: bool = True,
                     num_replicas: int = 1, pad_to_multiple_of: Optional[int] = None) -> DataLoader:
    sampler = LengthGroupedBatchSampler(ds["length"], batch_size, seed=seed, group_by_length=group_by_length,
                                        num_replicas=num_replicas)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=Collator(tokenizer, pad_to_multiple_of))


def bucket_length(length: int, pad_to_multiple_of: Optional[int]) -> int:
    """The padded length of a batch whose longest example has ``length`` tokens (the collator's
    ``pad_to_multiple_of`` rounding; none: the length itself)."""
    return -(-int(length) // pad_to_multiple_of) * pad_to_multiple_of if pad_to_multiple_of else int(length)


def batch_shapes(lengths: Sequence[int], batch_size: int, pad_to_multiple_of: int) -> Set[Tuple[int, int]]:
    """Every ``(examples, tokens)`` shape a length-bucketed loader of these examples can produce.

    A batch is as long as its longest example rounded up to a multiple of ``pad_to_multiple_of``,
    and every batch but the last of an epoch is full, so with ``max_length`` 128 and buckets of
    32 there are at most 4 lengths x 2 sizes = 8 shapes, whatever the order (one process).
    """
    n = len(lengths)
    sizes = {min(batch_size, n)} | ({n % batch_size} if n % batch_size else set())
    tokens = {bucket_length(length, pad_to_multiple_of) for length in lengths}
    return {(size, t) for size in sizes for t in tokens}


def eval_dataloader(ds, tokenizer, batch_size: int) -> DataLoader:
    """Evaluation batches in the dataset's own order (sort the dataset by length beforehand)."""
    return DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=Collator(tokenizer))


def sort_by_length(ds):
    """The split reordered longest-first, so evaluation batches waste little padding."""
    lengths = torch.as_tensor(ds["length"])
    order = torch.sort(lengths, descending=True, stable=True).indices.tolist()
    return ds.select(order)
