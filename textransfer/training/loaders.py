"""The batches one stage trains on: a map-style dataset in epochs, or a stream (``data/streaming.py``)
as one "epoch" of ``max_steps``; and the auxiliary set a strategy cycles alongside.

Both continue exactly where a checkpoint left them (``checkpointing.py``): a resumed run skips
the batches already trained on, and starting a data iterator never shifts the random stream
that dropout draws from.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Optional

import torch
from accelerate import Accelerator

from ..config import TrainingConfig
from ..data.batching import batch_shapes, train_dataloader
from ..data.streaming import is_stream, stream_dataloader
from ..errors import ConfigError

# The auxiliary set is shuffled with the stage's seed plus this: with the stage's own seed, a
# set of the same size (e.g. DANN's unlabelled target text, which is the target training split
# without labels) would come in the very same order as the main batches.
AUX_SEED_OFFSET = 1


def aux_seed(seed: int) -> int:
    return seed + AUX_SEED_OFFSET


class TrainBatches:
    """The training batches of one stage, sharded over the processes, and the step budget.

    Args:
        ds: the tokenized training set (a ``Dataset`` or a streamed ``IterableDataset``).
        tokenizer: pads the batches.
        args (`TrainingConfig`): batch size, epochs or ``max_steps``, accumulation.
        accelerator (`Accelerator`): the run's accelerator.
        seed (`int`): seed of the batch order.
        desc (`str`): the stage, for error messages.

    A stream has no length: the whole budget of ``max_steps`` is one "epoch" of an endless
    loader, evaluated at its end. Each process reads its own part of the stream, and its loader
    is not passed to ``prepare``: Accelerate would dispatch an iterable's batches from the main
    process (which then reads it all).
    """

    def __init__(self, ds, tokenizer, args: TrainingConfig, accelerator: Accelerator, seed: int, desc: str = "train"):
        self.ds, self.tokenizer, self.args, self.accelerator, self.seed = ds, tokenizer, args, accelerator, seed
        self.streaming = is_stream(ds)
        self.loader = self.sampler = None
        if self.streaming:
            if not args.max_steps:
                raise ConfigError(f"[{desc}] a streamed training set needs `max_steps` (it has no epochs).")
            self.total_steps = self.steps_per_epoch = args.max_steps
            self.num_epochs = 1
            return
        # looked up in this module at call time: the multi-process test spies on it here
        self.loader = train_dataloader(ds, tokenizer, args.batch_size, seed, args.group_by_length,
                                       num_replicas=accelerator.num_processes,
                                       pad_to_multiple_of=args.pad_to_multiple_of)
        self.sampler = self.loader.batch_sampler
        batches = len(self.loader) / accelerator.num_processes
        self.steps_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
        self.total_steps = args.max_steps or self.steps_per_epoch * args.num_epochs
        self.num_epochs = math.ceil(self.total_steps / self.steps_per_epoch) if args.max_steps else args.num_epochs

    def max_shapes(self) -> Optional[int]:
        """At most how many distinct batch shapes this process trains on, when length buckets
        (``pad_to_multiple_of``) bound them; None when they do not (or a stream's lengths are unknown).
        Under several processes a short last global batch is cut in parts of two sizes: counted twice."""
        if self.streaming or self.args.pad_to_multiple_of is None:
            return None
        shapes = batch_shapes(self.ds["length"], self.args.batch_size, self.args.pad_to_multiple_of)
        return len(shapes) * (2 if self.accelerator.num_processes > 1 else 1)

    def prepare(self) -> None:
        """Shard the map-style loader over the processes (``accelerator.prepare``)."""
        if not self.streaming:
            self.loader = self.accelerator.prepare(self.loader)

    def consumed(self, epoch: int, batch: int) -> int:
        """Batches this process has trained on before ``batch`` of ``epoch`` (after :meth:`prepare`)."""
        return batch if self.streaming else epoch * len(self.loader) + batch

    def epoch(self, epoch: int, skip: int = 0) -> Iterator:
        """The batches of ``epoch`` on this process's device, from batch ``skip`` on."""
        acc = self.accelerator
        if self.streaming:  # replay the seeded stream, dropping the batches already trained on
            loader = stream_dataloader(self.ds, self.tokenizer, self.args.batch_size, self.seed,
                                       self.args.group_by_length, rank=acc.process_index,
                                       world_size=acc.num_processes, skip_batches=skip,
                                       pad_to_multiple_of=self.args.pad_to_multiple_of)
            return (batch.to(acc.device) for batch in loader)
        loader = acc.skip_first_batches(self.loader, skip) if skip else self.loader
        # Accelerate's loader re-sets the sampler's epoch to its own iteration count when
        # iterated; a resumed run starts that count at 0, so it is set explicitly.
        set_epoch(epoch, loader, self.sampler)
        return iter(loader)


def set_epoch(epoch: int, *objects) -> None:
    for obj in objects:
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def aux_batches(ds, tokenizer, args: TrainingConfig, accelerator: Accelerator, seed: int,
                start: int = 0) -> Iterator:
    """Endless batches of ``ds`` (reshuffled each pass), sharded like the main loader, starting
    after ``start`` batches (a resumed run continues where the auxiliary stream was).

    ``seed`` is the stage's; the auxiliary set uses :func:`aux_seed` of it.
    """
    acc, seed = accelerator, aux_seed(seed)
    if is_stream(ds):  # endless already; sharded per process like the main stream
        loader = stream_dataloader(ds, tokenizer, args.batch_size, seed, args.group_by_length,
                                   rank=acc.process_index, world_size=acc.num_processes, skip_batches=start,
                                   pad_to_multiple_of=args.pad_to_multiple_of)
        yield from (batch.to(acc.device) for batch in rng_neutral(loader))
        return
    loader = train_dataloader(ds, tokenizer, args.batch_size, seed, args.group_by_length,
                              num_replicas=acc.num_processes, pad_to_multiple_of=args.pad_to_multiple_of)
    sampler = loader.batch_sampler
    loader = acc.prepare(loader)
    epoch, skip = divmod(start, max(len(loader), 1))
    while True:
        set_epoch(epoch, loader, sampler)
        yield from rng_neutral(acc.skip_first_batches(loader, skip) if skip else loader)
        skip = 0
        epoch += 1


def rng_neutral(source: Iterable) -> Iterator:
    """Iterate ``source`` without drawing from the global torch RNG to start it.

    Starting a DataLoader pass draws its base seed from the global RNG. An auxiliary pass starts
    at a different moment in a resumed run than in an uninterrupted one, so that draw would
    shift dropout's random stream; forking the RNG around it keeps the stream identical.
    """
    with torch.random.fork_rng():
        batches = iter(source)
        first = next(batches, None)
    if first is not None:
        yield first
        yield from batches
