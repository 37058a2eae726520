"""The training loop of one stage (source, target or baseline), on Accelerate.

Why a loop of our own rather than ``transformers.Trainer``: a transfer run trains several
stages in one process with different heads and freezing, and strategies change the loss and
add heads without touching the loop. On speed (``benchmarks/throughput.py``):

* the optimiser is ``torch.optim.AdamW(fused=True)`` where the device supports it: on 2 CPU
  cores the single-tensor AdamW step over MiniLM's 22.7M parameters takes about 150 ms, the
  fused kernel about 15-20 ms. (``transformers.Trainer`` 5.x uses the fused kernel by
  default too, so this is parity, not an edge, against it.)
* batches are grouped by length and padded dynamically (``batching.py``); our grouping pads
  about 9% fewer tokens than Trainer's ``group_by_length`` on 2,000 SST-2 sentences, which is
  most of our measured edge. The rest of a step is the model's own matrix arithmetic.

Everything else is Accelerate's: device placement, DDP, mixed precision, gradient
accumulation, gathering predictions across processes, checkpoints (``save_state``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data.batching import eval_dataloader, sort_by_length, train_dataloader
from .checkpointing import StageCheckpoints, StopOnInterrupt, capture_rng, restore_rng
from ..config import TrainingConfig
from .distributed import cpu_world
from ..errors import ConfigError
from ..metrics.scores import compute_metrics
from ..data.streaming import is_stream, stream_dataloader

logger = logging.getLogger(__name__)

LOWER_IS_BETTER = ("loss",)


def make_accelerator(mixed_precision: str = "no", cpu: bool = False) -> Accelerator:
    """An Accelerator; in a single process its state is reset if the precision changes.

    Accelerate keeps one process-wide state and refuses a second ``Accelerator`` with another
    precision. A notebook or a test suite that runs several configurations in one process
    needs that reset; under a distributed launcher the state is never reset.
    """
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision:
        if state.get("num_processes", 1) == 1:
            AcceleratorState._reset_state(reset_partial_state=False)
    # several processes on a machine without GPUs: Accelerate needs cpu=True to start gloo
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu or cpu_world())


@dataclass
class StageResult:
    """What one stage's training produced."""

    history: List[Dict[str, Any]] = field(default_factory=list)
    best_epoch: Optional[int] = None
    best_metric: Optional[float] = None
    stopped_early: bool = False
    optimizer_steps: int = 0
    train_samples: int = 0
    train_time_s: float = 0.0
    eval_time_s: float = 0.0

    @property
    def train_samples_per_s(self) -> float:
        return self.train_samples / self.train_time_s if self.train_time_s > 0 else 0.0


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or "layernorm" in name.lower()


class StageTrainer:
    """Train and evaluate one model with the settings of one stage.

    Args:
        model: a sequence-classification model (frozen parameters already set).
        tokenizer: its tokenizer (for padding).
        args (`TrainingConfig`): the stage's settings.
        accelerator (`Accelerator`): shared by the run.
        metrics (`list[str]`): metric names (see ``metrics.py``).
        seed (`int`): seed of shuffling and dropout.
        head_parameters (`list[str]`, *optional*): names of the new head's parameters, which
            get ``args.head_learning_rate`` when set.
        checkpoint_dir (`Path`, *optional*): where checkpoints go (``checkpointing.py``).
        resume (`bool`): continue from the newest complete checkpoint in ``checkpoint_dir``.
        desc (`str`): label of the progress bar.

    Subclasses change the objective by overriding :meth:`compute_loss`; strategies use the
    other hooks: ``train(..., aux_ds=...)`` cycles a second dataset alongside the main one and
    hands its batches to ``compute_loss(model, batch, aux_batch)``; :meth:`on_step` sees the
    training progress before each forward pass (for schedules such as DANN's reversal weight).
    Extra modules (a second head, a domain classifier) belong inside ``model`` so that
    ``accelerator.prepare`` wraps them too and DDP all-reduces their gradients.
    """

    def __init__(
        self,
        model,
        tokenizer,
        args: TrainingConfig,
        accelerator: Accelerator,
        metrics: List[str],
        seed: int = 42,
        head_parameters: Optional[List[str]] = None,
        checkpoint_dir: Optional[Path] = None,
        desc: str = "train",
        resume: bool = False,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.args = args
        self.accelerator = accelerator
        self.metrics = metrics
        self.seed = seed
        self.head_parameters = set(head_parameters or [])
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.desc = desc
        self.resume = resume

    # ------------------------------------------------------------------ pieces
    def parameter_groups(self) -> List[Dict[str, Any]]:
        """AdamW groups: no weight decay on biases and LayerNorm; the head's own rate; with
        ``layerwise_lr_decay``, ``learning_rate * decay ** depth`` by depth from the top."""
        head_lr = self.args.head_learning_rate or self.args.learning_rate
        depths = None
        if self.args.layerwise_lr_decay is not None:
            from ..modeling.layerwise import parameter_depths

            depths = parameter_depths(self.model)
        groups: Dict[tuple, List[torch.nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            decay = 0.0 if _no_decay(name) else self.args.weight_decay
            lr = head_lr if name in self.head_parameters else self.args.learning_rate
            if depths is not None and name not in self.head_parameters:
                lr = self.args.learning_rate * self.args.layerwise_lr_decay ** depths[id(p)]
            groups.setdefault((decay, lr), []).append(p)
        return [{"params": ps, "weight_decay": d, "lr": lr} for (d, lr), ps in groups.items()]

    def create_optimizer(self) -> torch.optim.Optimizer:
        groups = self.parameter_groups()
        if not groups:
            raise ConfigError("every parameter is frozen; nothing to train. Freeze less (freeze_layers, "
                              "freeze_patterns, freeze_embeddings).")
        try:
            # the fused kernel: ~10x faster than the default on CPU, and the fastest on GPU
            return torch.optim.AdamW(groups, lr=self.args.learning_rate, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(groups, lr=self.args.learning_rate)

    def compute_loss(self, model, batch, aux_batch=None) -> torch.Tensor:
        return model(**batch).loss

    def on_step(self, step: int, total_steps: int) -> None:
        """Called before each forward pass with the optimiser steps done so far; a no-op here."""

    def _better(self, value: float, best: Optional[float]) -> bool:
        if best is None:
            return True
        lower = any(k in self.args.metric_for_best_model for k in LOWER_IS_BETTER)
        return value < best if lower else value > best

    # ------------------------------------------------------------------ train
    def train(self, train_ds, eval_ds=None, aux_ds=None) -> StageResult:
        """Train on ``train_ds``, evaluating on ``eval_ds`` after each epoch; ``aux_ds`` (e.g.
        unlabelled target text) is cycled alongside and passed to :meth:`compute_loss`.

        With ``checkpoint_dir`` set, a checkpoint is written every ``args.save_steps``
        optimiser steps, after each epoch when ``args.save_checkpoints``, and when Ctrl-C
        stops training; with ``resume`` set, training continues from the newest complete one
        (see ``checkpointing.py``).
        """
        args, acc = self.args, self.accelerator
        # One accelerator serves every stage; what earlier stages (or an evaluation) prepared
        # must not be in this stage's checkpoints, or a resumed run, which skips finished
        # stages, would load another stage's weights into this model.
        acc.free_memory()
        acc._custom_objects.clear()
        set_seed(self.seed)
        acc.gradient_accumulation_steps = args.gradient_accumulation_steps
        streaming = is_stream(train_ds)
        if streaming:
            # A stream (streaming.py) has no length: the whole budget of max_steps is one "epoch"
            # of an endless loader, evaluated at its end. Each process reads its own part of
            # the stream; the loader is not passed to `prepare`, because Accelerate would
            # dispatch an iterable's batches from the main process (which then reads it all).
            if not args.max_steps:
                raise ConfigError(f"[{self.desc}] a streamed training set needs `max_steps` (it has no epochs).")

            def stream_loader(skip_batches: int = 0):
                return stream_dataloader(train_ds, self.tokenizer, args.batch_size, self.seed, args.group_by_length,
                                         rank=acc.process_index, world_size=acc.num_processes,
                                         skip_batches=skip_batches)

            loader = stream_loader()
            sampler = None
            total_steps = steps_per_epoch = args.max_steps
            num_epochs = 1
        else:
            loader = train_dataloader(train_ds, self.tokenizer, args.batch_size, self.seed, args.group_by_length,
                                      num_replicas=acc.num_processes)
            sampler = loader.batch_sampler
            steps_per_epoch = math.ceil(len(loader) / acc.num_processes / args.gradient_accumulation_steps)
            total_steps = args.max_steps or steps_per_epoch * args.num_epochs
            num_epochs = math.ceil(total_steps / steps_per_epoch) if args.max_steps else args.num_epochs
        optimizer = self.create_optimizer()
        scheduler = get_scheduler(
            args.lr_scheduler,
            optimizer,
            num_warmup_steps=int(args.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )
        # The scheduler is not passed through `prepare`: Accelerate's wrapper steps it once per
        # process on every optimiser step (it expects a schedule sized for the unsharded
        # loader), while ours is sized in this process's optimiser steps; so we step it
        # ourselves, once per real optimiser step, and register it for checkpoints.
        if streaming:
            model, optimizer = acc.prepare(self.model, optimizer)
        else:
            model, optimizer, loader = acc.prepare(self.model, optimizer, loader)
        unfreezing = None
        if args.gradual_unfreezing:
            from ..modeling.layerwise import GradualUnfreezing

            unfreezing = GradualUnfreezing(self.model, args.unfreeze_every_steps)
        acc.register_for_checkpointing(scheduler)
        eval_loader = None
        if eval_ds is not None and args.eval_every_epoch:
            eval_loader = acc.prepare(eval_dataloader(sort_by_length(eval_ds), self.tokenizer, args.eval_batch_size))

        result = StageResult()
        best_state = None
        stale = 0
        # where the loop is: (epoch, batches of this process consumed in it) and the running loss
        start_epoch, skip, running, seen_batches, epoch_samples = 0, 0, 0.0, 0, 0
        pending_rng = None
        ckpt = StageCheckpoints(self.checkpoint_dir, acc) if self.checkpoint_dir is not None else None
        if ckpt is not None and self.resume and (latest := ckpt.latest()) is not None:
            loop, best_state = ckpt.load(latest)
            result = StageResult(**loop["result"])
            stale, start_epoch, skip = loop["stale"], loop["epoch"], loop["batch"]
            running, seen_batches, epoch_samples = loop["running"], loop["seen_batches"], loop["epoch_samples"]
            # Creating the resumed data iterator draws from the global RNG (torch's DataLoader
            # seeds its workers from it). Mid-epoch, an uninterrupted run drew that at the
            # epoch's start, before the checkpoint, so the RNG states are put back once the first
            # batch is in. At an epoch boundary (skip == 0) the uninterrupted run draws it after
            # the checkpoint too, so nothing is put back.
            pending_rng = capture_rng() if skip else None
            if acc.is_local_main_process:
                tqdm.write(f"[{self.desc}] resuming from {latest} (epoch {start_epoch + 1}, batch {skip}, "
                           f"step {result.optimizer_steps})")

        # one auxiliary batch per main batch: on resume, skip as many as the main loop consumed
        aux_start = skip if streaming else start_epoch * len(loader) + skip
        aux_batches = self._cycle(aux_ds, start=aux_start) if aux_ds is not None else None

        def save(epoch: int, batch: int, elapsed: float) -> None:
            loop = {"stage": self.desc, "epoch": epoch, "batch": batch, "stale": stale, "running": running,
                    "seen_batches": seen_batches, "epoch_samples": epoch_samples,
                    "result": dict(asdict(result), train_time_s=result.train_time_s + elapsed)}
            ckpt.save(result.optimizer_steps, loop, best_state)

        bar = tqdm(total=total_steps, initial=result.optimizer_steps, desc=self.desc,
                   disable=not acc.is_local_main_process, dynamic_ncols=True)
        with StopOnInterrupt(acc) as stop:
            for epoch in range(start_epoch, num_epochs):
                model.train()
                start = time.perf_counter()
                epoch_loader, batch_index = loader, skip
                if skip and streaming:  # replay the seeded stream, dropping the batches already trained on
                    epoch_loader = stream_loader(skip)
                elif skip:
                    epoch_loader = acc.skip_first_batches(loader, skip)
                else:
                    running, seen_batches, epoch_samples = 0.0, 0, 0
                skip = 0
                # Accelerate's loader re-sets the sampler's epoch to its own iteration count when
                # iterated; a resumed run starts that count at 0, so it is set explicitly.
                for obj in (epoch_loader, sampler):
                    if hasattr(obj, "set_epoch"):
                        obj.set_epoch(epoch)
                for batch in epoch_loader:
                    if pending_rng is not None:
                        restore_rng(pending_rng)
                        pending_rng = None
                    if streaming:
                        batch = batch.to(acc.device)
                    self.on_step(result.optimizer_steps, total_steps)
                    with acc.accumulate(model):
                        if aux_batches is not None:
                            loss = self.compute_loss(model, batch, aux_batch=next(aux_batches))
                        else:
                            loss = self.compute_loss(model, batch)
                        acc.backward(loss)
                        if acc.sync_gradients and unfreezing is not None:
                            # after the all-reduce: not-yet-unfrozen parameters get no update (layerwise.py)
                            unfreezing.mask_gradients(model.parameters(), result.optimizer_steps, epoch)
                        if acc.sync_gradients and args.max_grad_norm:
                            acc.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                        optimizer.step()  # a no-op while accumulating (Accelerate skips it)
                        if acc.sync_gradients:
                            scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                    epoch_samples += batch["input_ids"].shape[0]
                    running += loss.detach().float().item()
                    seen_batches += 1
                    batch_index += 1
                    if acc.sync_gradients:
                        result.optimizer_steps += 1
                        bar.update(1)
                        bar.set_postfix(loss=f"{running / seen_batches:.4f}", epoch=epoch + 1)
                        if result.optimizer_steps >= total_steps:
                            break
                        interrupted = stop.requested()
                        if ckpt is not None and (interrupted or (args.save_steps and
                                                                 result.optimizer_steps % args.save_steps == 0)):
                            save(epoch, batch_index, time.perf_counter() - start)
                        if interrupted:
                            raise KeyboardInterrupt(f"{self.desc}: stopped at step {result.optimizer_steps}")
                if pending_rng is not None:  # resumed at the very end of an epoch: no batch came
                    restore_rng(pending_rng)
                    pending_rng = None
                result.train_time_s += time.perf_counter() - start
                result.train_samples += epoch_samples * acc.num_processes
                entry: Dict[str, Any] = {"epoch": epoch + 1, "step": result.optimizer_steps,
                                         "train_loss": running / max(seen_batches, 1),
                                         "learning_rate": scheduler.get_last_lr()[0]}
                if eval_loader is not None:
                    t0 = time.perf_counter()
                    metrics, _, _ = self._evaluate_loader(model, eval_loader)
                    result.eval_time_s += time.perf_counter() - t0
                    entry.update({f"eval_{k}": v for k, v in metrics.items()})
                    value = metrics[args.metric_for_best_model]
                    if self._better(value, result.best_metric):
                        result.best_metric, result.best_epoch, stale = value, epoch + 1, 0
                        if args.load_best_model_at_end:
                            best_state = {k: v.detach().to("cpu", copy=True)
                                          for k, v in acc.unwrap_model(model).state_dict().items()}
                    else:
                        stale += 1
                result.history.append(entry)
                if acc.is_local_main_process:
                    # 4 significant digits, not 4 decimals: a learning rate of 2.7e-05 must not print as 0.0
                    shown = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in entry.items()}
                    bar.write(f"[{self.desc}] {shown}")
                if args.early_stopping_patience and stale >= args.early_stopping_patience:
                    result.stopped_early = True
                finished = result.optimizer_steps >= total_steps or result.stopped_early
                interrupted = stop.requested()
                if ckpt is not None and (args.save_checkpoints or interrupted):
                    running, seen_batches, epoch_samples = 0.0, 0, 0
                    save(num_epochs if finished else epoch + 1, 0, 0.0)
                if finished:
                    break
                if interrupted:
                    raise KeyboardInterrupt(f"{self.desc}: stopped after epoch {epoch + 1}")
        bar.close()
        if best_state is not None:
            acc.unwrap_model(model).load_state_dict(best_state)
        self.model = acc.unwrap_model(model)
        acc.free_memory()
        return result

    def _cycle(self, ds, start: int = 0):
        """Endless batches of ``ds`` (reshuffled each pass), sharded like the main loader,
        starting after ``start`` batches (a resumed run continues where the stream was)."""
        acc = self.accelerator
        if is_stream(ds):  # endless already; sharded per process like the main stream
            yield from (b.to(acc.device) for b in stream_dataloader(
                ds, self.tokenizer, self.args.batch_size, self.seed + 1, self.args.group_by_length,
                rank=acc.process_index, world_size=acc.num_processes, skip_batches=start))
            return
        loader = train_dataloader(ds, self.tokenizer, self.args.batch_size, self.seed + 1, self.args.group_by_length,
                                  num_replicas=acc.num_processes)
        sampler = loader.batch_sampler
        loader = acc.prepare(loader)
        epoch, skip = divmod(start, max(len(loader), 1))
        while True:
            for obj in (loader, sampler):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)
            source = acc.skip_first_batches(loader, skip) if skip else loader
            skip = 0
            # Starting a pass draws a seed from the global RNG (torch's DataLoader); forking it
            # keeps dropout's random stream the same whenever this pass starts, so a resumed
            # run, which starts it at another moment, stays identical to an uninterrupted one.
            with torch.random.fork_rng():
                batches = iter(source)
                first = next(batches, None)
            if first is not None:
                yield first
                yield from batches
            epoch += 1

    # ------------------------------------------------------------------ evaluate
    @torch.no_grad()
    def _evaluate_loader(self, model, loader):
        model.eval()
        preds, refs = [], []
        for batch in loader:
            labels = batch.pop("labels")
            logits = model(**batch).logits
            p, r = self.accelerator.gather_for_metrics((logits.argmax(dim=-1), labels))
            preds.append(p.cpu())
            refs.append(r.cpu())
        preds = torch.cat(preds).tolist() if preds else []
        refs = torch.cat(refs).tolist() if refs else []
        return compute_metrics(preds, refs, self.metrics), preds, refs

    def evaluate(self, ds) -> Dict[str, Any]:
        """Metrics on ``ds`` plus predictions and references (in ``ds``'s length-sorted order)."""
        t0 = time.perf_counter()
        loader = self.accelerator.prepare(eval_dataloader(sort_by_length(ds), self.tokenizer, self.args.eval_batch_size))
        model = self.accelerator.prepare(self.model)
        metrics, preds, refs = self._evaluate_loader(model, loader)
        self.model = self.accelerator.unwrap_model(model)
        return {"metrics": metrics, "predictions": preds, "references": refs,
                "eval_time_s": time.perf_counter() - t0}
