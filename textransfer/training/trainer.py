"""The training loop of one stage (source, target or baseline), on Accelerate.

Why a loop of our own rather than ``transformers.Trainer``: a transfer run trains several
stages in one process with different heads and freezing, and strategies change the loss and
add heads without touching the loop. On speed (``benchmarks/throughput.py``): the optimiser is
fused AdamW (``optimization.py``), and batches are grouped by length and padded dynamically
(``data/batching.py``); our grouping pads about 9% fewer tokens than Trainer's
``group_by_length`` on 2,000 SST-2 sentences. Two defaults cut work that changes no number: the
plain classification loss and evaluation compute the last encoder layer for the first token only
(``first_token_last_layer``, ``modeling/first_token.py``: the classifier reads nothing else), and
the word embedding's gradient is filled with the batch's rows in a buffer kept for the stage
(``sparse_embedding_gradient``, ``embedding_gradient.py``). A third, ``sparse_embedding_update``
(the same file), clips and updates that embedding on the rows the stage has reached (the other rows
get AdamW's weight decay alone, as AdamW gives them): 1.19x on XLM-R base, whose vocabulary is most
of the model, nothing measurable on MiniLM. Two more change which kernels do the same work, on a
CPU: dropout masks drawn with NumPy instead of torch's slow ``bernoulli_`` (``numpy_dropout_masks``,
``modeling/dropout_masks.py``), and the linear layers' fp32 products on oneDNN instead of MKL
(``onednn_linear``, ``modeling/onednn_linear.py``). The rest of a step is the model's own
matrix arithmetic. Options that attack it, off by default and measured in the same benchmark:
``torch_compile`` (``compilation.py``: the step runs a compiled wrapper,
``TrainingRun.step_model``; everything else the plain model) with ``pad_to_multiple_of`` length
buckets, and ``model.attn_implementation``.

Everything else is Accelerate's: device placement, DDP, mixed precision, gradient
accumulation, gathering predictions across processes, checkpoints (``save_state``).

The loop, top to bottom: :meth:`StageTrainer.train` sets up a :class:`TrainingRun` (loaders,
optimiser, schedule), restores a checkpoint's :class:`LoopState` or starts a fresh one, then
alternates ``_train_epoch`` (each batch through ``_training_step``, each optimiser step counted,
checkpointed or stopped in ``_count_optimizer_step``) and ``_end_epoch`` (evaluation, best
weights, patience, checkpoint). Only :class:`LoopState` travels through checkpoints.

LP-FT (``head_warmup_steps`` / ``head_warmup_epochs``; Kumar et al., ICLR 2022): for the first
steps only the head trains on the frozen encoder, then everything does. It is part of the stage's
budget and of its one learning-rate schedule: the head trains at its group's scheduled rate
(``head_learning_rate``, else ``learning_rate``, under ``warmup_ratio``'s ramp) and the encoder
joins at whatever rate the schedule has reached when the warm-up ends. Kumar et al. run the
linear probe to convergence first (a separate fit); here it is a budgeted phase of one run, so a
warm-up too short to fit the head only softens the random head's first updates. The backward
pass still runs through the encoder during the warm-up (its gradients are dropped after the
all-reduce, ``_prepare_gradients``), so a warm-up step costs what a full step costs: under DDP
every process must all-reduce the same parameters at every step. Each epoch's history entry
records ``head_warmup_steps``: the stage's head-only optimiser steps so far.

With trackers (``report_to``, started by the run: ``accelerator.start_tracking``), the stage
logs ``<stage>/train_loss`` and ``<stage>/learning_rate`` every ``logging_steps`` optimiser
steps and ``<stage>/eval_*`` after each epoch (``_log_step``, ``_log_epoch``), on one run-wide
step axis: the target stage's steps follow the source stage's.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from accelerate import Accelerator
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..config import RunConfig, TrainingConfig
from ..data.batching import eval_dataloader, sort_by_length
from ..metrics.scores import compute_metrics
from ..errors import ConfigError
from ..modeling.dropout_masks import numpy_dropout_masks
from ..modeling.first_token import first_token_last_layer
from ..modeling.onednn_linear import onednn_linear_layers
from ..modeling.layerwise import GradualUnfreezing, HeadWarmup
from .accelerator import advance_tracking, is_tracking, log_metrics, make_accelerator, tracking_step
from .checkpointing import StageCheckpoints, StopOnInterrupt, capture_rng, restore_rng
from .compilation import compile_for_training
from .embedding_gradient import EmbeddingGradient, RowStep
from .loaders import TrainBatches, aux_batches
from .loop_state import LossWindow, LoopState, StageResult
from .optimization import create_adamw, create_scheduler, parameter_groups
from .selection import is_better

# make_accelerator lives in accelerator.py; it is also named here, where callers have long found it
__all__ = ["StageTrainer", "StageResult", "make_accelerator"]

# the epoch summary line shows 4 significant digits, not 4 decimals: a learning rate of 2.7e-05
# must not print as 0.0
SUMMARY_FORMAT = ".4g"


@dataclass
class TrainingRun:
    """What one call of :meth:`StageTrainer.train` works with, besides the :class:`LoopState`."""

    model: torch.nn.Module  # as prepared by Accelerate (DDP-wrapped under several processes)
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    batches: TrainBatches
    eval_loader: Optional[DataLoader] = None  # validation, evaluated after each epoch
    unfreezing: Optional[GradualUnfreezing] = None
    head_warmup: Optional[HeadWarmup] = None  # LP-FT
    checkpoints: Optional[StageCheckpoints] = None
    aux: Optional[Iterator] = None  # the auxiliary batches, one per main batch
    best_weights: Optional[Dict[str, torch.Tensor]] = None  # on the CPU, for load_best_model_at_end
    pending_rng: Optional[Dict[str, Any]] = None  # RNG states to put back once a resumed epoch's first batch is in
    bar: Optional[tqdm] = None
    stop: Optional[StopOnInterrupt] = None
    clock: float = 0.0  # when the training time last counted (time.perf_counter)
    log_start: int = 0  # the run-wide tracker step this stage's steps count from
    loss_window: LossWindow = field(default_factory=LossWindow)  # batches since the last log
    # what the training step calls: `model`, or its torch.compile wrapper (`torch_compile`, compilation.py)
    step_model: Optional[torch.nn.Module] = None
    # the word embedding's stage-long gradient buffer (`sparse_embedding_gradient`, embedding_gradient.py)
    embedding_gradient: Optional[EmbeddingGradient] = None

    def restore_pending_rng(self) -> None:
        if self.pending_rng is not None:
            restore_rng(self.pending_rng)
            self.pending_rng = None

    def count_train_time(self, result: StageResult) -> None:
        """Add the time since the clock last counted to ``result.train_time_s``."""
        now = time.perf_counter()
        result.train_time_s += now - self.clock
        self.clock = now


class StageTrainer:
    """Train and evaluate one model with the settings of one stage.

    Args:
        model: a sequence-classification model (frozen parameters already set).
        tokenizer: its tokenizer (for padding).
        args (`TrainingConfig`): the stage's settings.
        accelerator (`Accelerator`): shared by the run.
        metrics (`list[str]`): metric names (see ``metrics/scores.py``).
        seed (`int`): seed of shuffling and dropout.
        head_parameters (`list[str]`, *optional*): names of the new head's parameters, which
            get ``args.head_learning_rate`` when set.
        checkpoint_dir (`Path`, *optional*): where checkpoints go (``checkpointing.py``).
        resume (`bool`): continue from the newest complete checkpoint in ``checkpoint_dir``.
        desc (`str`): label of the progress bar, and the stage's prefix in the trackers' keys.
        logging_steps (`int`): optimiser steps between two logs of the loss to the
            accelerator's trackers (when it has any).

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
        logging_steps: int = RunConfig.logging_steps,
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
        self.logging_steps = logging_steps

    # ------------------------------------------------------------------ hooks
    def parameter_groups(self) -> List[Dict[str, Any]]:
        """AdamW groups (``optimization.parameter_groups``): no weight decay on biases and
        LayerNorm; the head's own rate; with ``layerwise_lr_decay``, lower rates further down."""
        return parameter_groups(self.model, self.args, self.head_parameters)

    def create_optimizer(self) -> torch.optim.Optimizer:
        return create_adamw(self.parameter_groups(), self.args.learning_rate)

    def compute_loss(self, model, batch, aux_batch=None) -> torch.Tensor:
        with self.logits_only(model):
            return model(**batch).loss

    def logits_only(self, model):
        """A context for forward passes whose only output read is the logits (or the loss on them):
        the last encoder layer runs for the first token alone (``first_token_last_layer``,
        ``modeling/first_token.py``). Off under ``torch_compile``, whose graph is traced once."""
        enabled = self.args.first_token_last_layer and not self.args.torch_compile
        return first_token_last_layer(self.accelerator.unwrap_model(model), enabled)

    @contextmanager
    def step_kernels(self, model) -> Iterator[None]:
        """A context for the training step's forward pass: on a CPU, the model's dropout masks are
        drawn with NumPy (``numpy_dropout_masks``, ``modeling/dropout_masks.py``) and its linear
        layers' fp32 products run on oneDNN (``onednn_linear``, ``modeling/onednn_linear.py``).
        Off under ``torch_compile``, whose graph is traced once with torch's own kernels."""
        args, plain = self.args, self.accelerator.unwrap_model(model)
        with numpy_dropout_masks(plain, args.numpy_dropout_masks and not args.torch_compile), \
                onednn_linear_layers(plain, args.onednn_linear and not args.torch_compile):
            yield

    def on_step(self, step: int, total_steps: int) -> None:
        """Called before each forward pass with the optimiser steps done so far; a no-op here."""

    # ------------------------------------------------------------------ train
    def train(self, train_ds, eval_ds=None, aux_ds=None) -> StageResult:
        """Train on ``train_ds``, evaluating on ``eval_ds`` after each epoch; ``aux_ds`` (e.g.
        unlabelled target text) is cycled alongside and passed to :meth:`compute_loss`.

        With ``checkpoint_dir`` set, a checkpoint is written every ``args.save_steps``
        optimiser steps, after each epoch when ``args.save_checkpoints``, and when Ctrl-C
        stops training; with ``resume`` set, training continues from the newest complete one
        (see ``checkpointing.py``).
        """
        run = self._start_run(train_ds, eval_ds)
        state = self._restore_checkpoint(run)
        if aux_ds is not None:  # one auxiliary batch per main batch: skip as many as were trained on
            run.aux = aux_batches(aux_ds, self.tokenizer, self.args, self.accelerator, self.seed,
                                  start=run.batches.consumed(state.epoch, state.batch))
        run.bar = tqdm(total=run.batches.total_steps, initial=state.result.optimizer_steps, desc=self.desc,
                       disable=not self.accelerator.is_local_main_process, dynamic_ncols=True)
        try:
            with StopOnInterrupt(self.accelerator) as run.stop:
                while state.epoch < run.batches.num_epochs:
                    self._train_epoch(run, state)
                    if self._end_epoch(run, state):
                        break
        except BaseException:  # stopped (Ctrl-C, an error): the model keeps no gradient buffer nor hook
            if run.embedding_gradient:
                run.embedding_gradient.release()
            raise
        run.bar.close()
        return self._finish_run(run, state)

    def _start_run(self, train_ds, eval_ds=None) -> TrainingRun:
        """Loaders, optimiser and schedule of this stage, prepared by the accelerator."""
        args, acc = self.args, self.accelerator
        # One accelerator serves every stage; what earlier stages (or an evaluation) prepared
        # must not be in this stage's checkpoints, or a resumed run, which skips finished
        # stages, would load another stage's weights into this model.
        acc.free_memory()
        set_seed(self.seed)
        acc.gradient_accumulation_steps = args.gradient_accumulation_steps
        batches = TrainBatches(train_ds, self.tokenizer, args, acc, self.seed, self.desc)
        head_warmup = self._head_warmup(batches)
        optimizer = self.create_optimizer()
        # stepped here, once per real optimiser step, and saved in our checkpoints (optimization.py)
        scheduler = create_scheduler(args, optimizer, batches.total_steps)
        model, optimizer = acc.prepare(self.model, optimizer)
        batches.prepare()
        unfreezing = GradualUnfreezing(self.model, args.unfreeze_every_steps) if args.gradual_unfreezing else None
        eval_loader = None
        if eval_ds is not None and args.eval_every_epoch:
            eval_loader = acc.prepare(eval_dataloader(sort_by_length(eval_ds), self.tokenizer, args.eval_batch_size))
        checkpoints = StageCheckpoints(self.checkpoint_dir, acc) if self.checkpoint_dir is not None else None
        return TrainingRun(model=model, step_model=compile_for_training(model, args, batches.max_shapes()),
                           optimizer=optimizer, scheduler=scheduler, batches=batches,
                           eval_loader=eval_loader, unfreezing=unfreezing, checkpoints=checkpoints,
                           head_warmup=head_warmup, log_start=tracking_step(acc),
                           embedding_gradient=EmbeddingGradient.for_stage(acc.unwrap_model(model), args, acc))

    def _head_warmup(self, batches: TrainBatches) -> Optional[HeadWarmup]:
        """LP-FT's warm-up, when ``head_warmup_steps`` or ``head_warmup_epochs`` asks for one."""
        args = self.args
        if args.head_warmup_steps is None and not args.head_warmup_epochs:
            return None
        warmup = HeadWarmup(self.model, self.head_parameters, args.head_warmup_steps, args.head_warmup_epochs)
        if not warmup.head_ids & {id(p) for p in self.model.parameters() if p.requires_grad}:
            raise ConfigError(f"[{self.desc}] `head_warmup_steps`/`head_warmup_epochs`: this stage has no trainable "
                              "head parameters to warm up; set them to null/0, or unfreeze the head.")
        if warmup.length(batches.steps_per_epoch) >= batches.total_steps and self.accelerator.is_local_main_process:
            tqdm.write(f"[{self.desc}] warning: the head warm-up covers the whole budget ({batches.total_steps} "
                       "optimiser steps), so the encoder never trains (a linear probe); lower head_warmup_steps/epochs "
                       "to fine-tune after it.")
        return warmup

    def _restore_checkpoint(self, run: TrainingRun) -> LoopState:
        """The newest complete checkpoint's loop state when resuming (weights, optimiser,
        schedule and RNG restored with it); otherwise a fresh one."""
        if run.checkpoints is None or not self.resume or (latest := run.checkpoints.latest()) is None:
            return LoopState()
        saved = run.checkpoints.load(latest)
        run.scheduler.load_state_dict(saved.scheduler)
        run.best_weights = saved.best_weights
        state = saved.loop
        # Creating the resumed data iterator draws from the global RNG (torch's DataLoader
        # seeds its workers from it). Mid-epoch, an uninterrupted run drew that at the
        # epoch's start, before the checkpoint, so the RNG states are put back once the first
        # batch is in. At an epoch boundary (batch 0) the uninterrupted run draws it after
        # the checkpoint too, so nothing is put back.
        run.pending_rng = capture_rng() if state.batch else None
        if self.accelerator.is_local_main_process:
            tqdm.write(f"[{self.desc}] resuming from {latest} (epoch {state.epoch + 1}, batch {state.batch}, "
                       f"step {state.result.optimizer_steps})")
        return state

    def _train_epoch(self, run: TrainingRun, state: LoopState) -> None:
        """One pass over the training batches (or what a resumed run has left of one)."""
        run.model.train()
        run.clock = time.perf_counter()
        state.start_epoch()
        for batch in run.batches.epoch(state.epoch, skip=state.batch):
            run.restore_pending_rng()
            stepped = self._training_step(run, state, batch)
            if stepped and self._count_optimizer_step(run, state):
                break  # the step budget is spent
        run.restore_pending_rng()  # resumed at the very end of an epoch: no batch came
        run.count_train_time(state.result)
        state.result.train_samples += state.epoch_samples * self.accelerator.num_processes

    def _training_step(self, run: TrainingRun, state: LoopState, batch) -> bool:
        """Forward and backward on one batch; True when it completed an optimiser step (with
        gradient accumulation, only every ``gradient_accumulation_steps``-th batch does)."""
        acc, model = self.accelerator, run.step_model
        self.on_step(state.result.optimizer_steps, run.batches.total_steps)
        sparse_embedding = run.embedding_gradient.sparse_backward() if run.embedding_gradient else nullcontext()
        with acc.accumulate(run.model):
            with sparse_embedding, self.step_kernels(run.model):
                if run.aux is not None:
                    loss = self.compute_loss(model, batch, aux_batch=next(run.aux))
                else:
                    loss = self.compute_loss(model, batch)
            acc.backward(loss)
            rows = self._prepare_gradients(run, state) if acc.sync_gradients else None
            run.optimizer.step()  # a no-op while accumulating (Accelerate skips it)
            if rows is not None:  # the word embedding's step, on its reached rows
                rows.apply()
            if acc.sync_gradients:
                run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)  # a no-op while accumulating, too
            if acc.sync_gradients and run.embedding_gradient:
                run.embedding_gradient.reset()
        value = loss.detach().float().item()
        state.add_batch(value, batch["input_ids"].shape[0])
        run.loss_window.add(value)
        return acc.sync_gradients

    def _prepare_gradients(self, run: TrainingRun, state: LoopState) -> Optional[RowStep]:
        """Before an optimiser step, after the all-reduce: gradual unfreezing drops the
        gradients of still-frozen layers and the head warm-up those outside the head
        (``layerwise.py``), then the norm is clipped (over what trains). Returns the word
        embedding's step on its reached rows where it is taken out of the optimiser's
        (``sparse_embedding_update``, ``embedding_gradient.py``), else None."""
        for mask in (run.unfreezing, run.head_warmup):
            if mask is not None:
                mask.mask_gradients(run.model.parameters(), state.result.optimizer_steps, state.epoch)
        rows = run.embedding_gradient.row_step(run.optimizer) if run.embedding_gradient else None
        if self.args.max_grad_norm:
            if rows is not None:  # CPU, one process, no gradient scaler: Accelerate's clipping is torch's
                rows.clip(run.model.parameters(), self.args.max_grad_norm)
            else:
                self.accelerator.clip_grad_norm_(run.model.parameters(), self.args.max_grad_norm)
        return rows

    def _count_optimizer_step(self, run: TrainingRun, state: LoopState) -> bool:
        """Count the step, then checkpoint or stop if due; True once the step budget is spent."""
        result, save_steps = state.result, self.args.save_steps
        result.optimizer_steps += 1
        run.bar.update(1)
        run.bar.set_postfix(loss=f"{state.mean_loss:.4f}", epoch=state.epoch + 1)
        if result.optimizer_steps % self.logging_steps == 0:
            self._log_step(run, result.optimizer_steps)
        if result.optimizer_steps >= run.batches.total_steps:
            return True
        interrupted = run.stop.requested()  # every process asks, so all agree
        if run.checkpoints is not None and (interrupted or (save_steps and result.optimizer_steps % save_steps == 0)):
            run.count_train_time(result)  # the checkpoint's result includes this epoch's time so far
            self._save_checkpoint(run, state)
        if interrupted:
            raise KeyboardInterrupt(f"{self.desc}: stopped at step {result.optimizer_steps}")
        return False

    def _end_epoch(self, run: TrainingRun, state: LoopState) -> bool:
        """Evaluate, keep the best weights, count patience, checkpoint; True when training is over."""
        args, result, epoch = self.args, state.result, state.epoch
        entry: Dict[str, Any] = {"epoch": epoch + 1, "step": result.optimizer_steps, "train_loss": state.mean_loss,
                                 "learning_rate": run.scheduler.get_last_lr()[0]}
        if run.head_warmup is not None:  # the stage's head-only steps so far
            warmup_length = run.head_warmup.length(run.batches.steps_per_epoch)
            entry["head_warmup_steps"] = min(result.optimizer_steps, warmup_length)
        if run.eval_loader is not None:
            entry.update(self._evaluate_epoch(run, state))
        result.history.append(entry)
        self._log_epoch(run, entry)
        if self.accelerator.is_local_main_process:
            shown = {k: float(format(v, SUMMARY_FORMAT)) if isinstance(v, float) else v for k, v in entry.items()}
            run.bar.write(f"[{self.desc}] {shown}")
        if args.early_stopping_patience and state.epochs_without_improvement >= args.early_stopping_patience:
            result.stopped_early = True
        finished = result.optimizer_steps >= run.batches.total_steps or result.stopped_early
        interrupted = run.stop.requested()
        state.end_epoch(run.batches.num_epochs if finished else epoch + 1)
        if run.checkpoints is not None and (args.save_checkpoints or interrupted):
            self._save_checkpoint(run, state)
        if interrupted and not finished:
            raise KeyboardInterrupt(f"{self.desc}: stopped after epoch {epoch + 1}")
        return finished

    def _evaluate_epoch(self, run: TrainingRun, state: LoopState) -> Dict[str, float]:
        """Validation metrics (``eval_*``); a new best keeps its weights and resets the patience."""
        args, result = self.args, state.result
        t0 = time.perf_counter()
        metrics, _, _ = self._evaluate_loader(run.model, run.eval_loader)
        result.eval_time_s += time.perf_counter() - t0
        value = metrics[args.metric_for_best_model]
        if is_better(value, result.best_metric, args.metric_for_best_model):
            result.best_metric, result.best_epoch, state.epochs_without_improvement = value, state.epoch + 1, 0
            if args.load_best_model_at_end:
                weights = self.accelerator.unwrap_model(run.model).state_dict()
                run.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
        else:
            state.epochs_without_improvement += 1
        return {f"eval_{k}": v for k, v in metrics.items()}

    def _log_step(self, run: TrainingRun, step: int) -> None:
        """Log the mean loss since the last log (over every process) and the learning rate."""
        acc = self.accelerator
        if not is_tracking(acc):
            return
        loss = run.loss_window.take()
        if acc.num_processes > 1:  # every process reaches this step together: the mean is collective
            loss = acc.reduce(torch.tensor(loss, device=acc.device), reduction="mean").item()
        log_metrics(acc, {f"{self.desc}/train_loss": loss, f"{self.desc}/learning_rate": run.scheduler.get_last_lr()[0]},
                    step, run.log_start)

    def _log_epoch(self, run: TrainingRun, entry: Dict[str, Any]) -> None:
        """Log the epoch's validation metrics (``eval_*``) and the epoch number."""
        if is_tracking(self.accelerator):
            values = {f"{self.desc}/{k}": v for k, v in entry.items() if k.startswith("eval_") or k == "epoch"}
            log_metrics(self.accelerator, values, entry["step"], run.log_start)

    def _save_checkpoint(self, run: TrainingRun, state: LoopState) -> None:
        run.checkpoints.save(state, run.scheduler.state_dict(), run.best_weights)

    def _finish_run(self, run: TrainingRun, state: LoopState) -> StageResult:
        """Load the best weights if kept, hand the plain model back and release Accelerate's references."""
        model = self.accelerator.unwrap_model(run.model)
        if run.embedding_gradient:
            run.embedding_gradient.release()
        advance_tracking(self.accelerator, run.log_start + state.result.optimizer_steps)
        if run.best_weights is not None:
            model.load_state_dict(run.best_weights)
        self.model = model
        self.accelerator.free_memory()
        return state.result

    # ------------------------------------------------------------------ evaluate
    @torch.no_grad()
    def _predict_loader(self, model, loader) -> Tuple[List[int], List[int], List[List[float]]]:
        """Predicted ids, reference ids and class probabilities of every example of ``loader``,
        gathered from all processes in the loader's order."""
        model.eval()
        preds, refs, probs = [], [], []
        for batch in loader:
            labels = batch.pop("labels")
            with self.logits_only(model):
                logits = model(**batch).logits
            # probabilities in float32 whatever the autocast dtype: they are written out and compared
            gathered = (logits.argmax(dim=-1), labels, logits.float().softmax(dim=-1))
            p, r, s = self.accelerator.gather_for_metrics(gathered)
            preds.append(p.cpu())
            refs.append(r.cpu())
            probs.append(s.cpu())
        if not preds:
            return [], [], []
        return torch.cat(preds).tolist(), torch.cat(refs).tolist(), torch.cat(probs).tolist()

    def _evaluate_loader(self, model, loader):
        preds, refs, _ = self._predict_loader(model, loader)
        return compute_metrics(preds, refs, self.metrics), preds, refs

    def evaluate(self, ds) -> Dict[str, Any]:
        """Metrics on ``ds`` plus predictions, references, class probabilities (``scores``) and the
        dataset's ``row`` ids (``rows``, when ``ds`` has that column), all in ``ds``'s
        length-sorted order."""
        t0 = time.perf_counter()
        ordered = sort_by_length(ds)
        loader = self.accelerator.prepare(eval_dataloader(ordered, self.tokenizer, self.args.eval_batch_size))
        model = self.accelerator.prepare(self.model)
        preds, refs, scores = self._predict_loader(model, loader)
        self.model = self.accelerator.unwrap_model(model)
        out: Dict[str, Any] = {"metrics": compute_metrics(preds, refs, self.metrics), "predictions": preds,
                               "references": refs, "scores": scores}
        if "row" in ordered.column_names:  # gather_for_metrics keeps the loader's order: row i is prediction i
            out["rows"] = list(ordered["row"])
        out["eval_time_s"] = time.perf_counter() - t0
        return out
