"""One stage of a run (source, target, baseline, or a strategy's own), trained end to end:
freezing, the trainer, the test split, and the record that lets ``--resume`` skip it.

This is what strategies call to train (``RunContext.train_stage``), so they need nothing from
the run layer above them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Optional

import datasets
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..config import RunConfig, TrainingConfig
from ..modeling.freezing import FreezeReport, freeze
from ..modeling.layerwise import classification_model
from ..modeling.loading import head_parameter_names
from .checkpointing import StageCheckpoints, load_stage_model, record_stage, stage_done
from .contrastive import contrastive_phase
from .linear_probe import linear_probe
from .results import StageSummary, TestPredictions
from .trainer import StageTrainer

if TYPE_CHECKING:
    from .trainer import StageResult

# builds a stage's trainer with `StageTrainer`'s arguments (a strategy's subclass, or a wrapper of the model)
TrainerFactory = Callable[..., StageTrainer]


@dataclass(frozen=True)
class StageEnvironment:
    """What every stage of a run shares."""

    cfg: RunConfig  # its seed, metrics and `resume`
    accelerator: Accelerator
    tokenizer: PreTrainedTokenizerBase
    checkpoint_root: Optional[Path] = None  # None: stages are not recorded (no output folder, no --resume)


@dataclass
class StageSpec:
    """One stage: the task it trains on, its settings and its trainer."""

    task_name: str
    splits: Mapping[str, Any]  # the task's tokenized "train", "validation" and "test" splits
    args: TrainingConfig
    trainer_factory: Optional[TrainerFactory] = None  # default: `StageTrainer`
    aux_ds: Optional[Any] = None  # a second dataset the trainer draws a batch of each step (joint, adaptation)
    train_ds: Optional[Any] = None  # trains on this instead of splits["train"]


class StageOutcome(NamedTuple):
    """A trained stage. A tuple, so ``model, summary, test = train_stage(...)`` unpacks it."""

    model: PreTrainedModel  # the Hugging Face model, out of any strategy wrapper the trainer held
    summary: StageSummary
    test: TestPredictions


def freeze_for_stage(model, args: TrainingConfig) -> FreezeReport:
    return freeze(
        model,
        embeddings=args.freeze_embeddings,
        layers=args.freeze_layers,
        patterns=args.freeze_patterns,
        word_embeddings=not args.train_word_embeddings,
    )


def train_stage(name: str, model, spec: StageSpec, env: StageEnvironment) -> StageOutcome:
    """Freeze, train, test and (with a checkpoint root) record one stage.

    A stage that a killed run finished is loaded from its record instead (``--resume``).
    """
    done = finished_stage(name, env)
    if done is not None:
        return done
    report = freeze_for_stage(model, spec.args)
    if env.accelerator.is_main_process:
        tqdm.write(f"[{name}] {spec.task_name}: {report.trainable:,} / {report.total:,} parameters trainable "
                   f"({100 * report.trainable / report.total:.1f}%), "
                   f"{train_rows_text(spec.splits['train'])} training examples")
    train_ds = spec.splits["train"] if spec.train_ds is None else spec.train_ds
    # SetFit's encoder phase (`args.contrastive`), on the HF model before any strategy wraps it:
    # the classification training below then runs on the standard forward, as pipeline does
    contrastive = contrastive_phase(name, model, train_ds, spec.args, env.tokenizer, env.accelerator, env.cfg.seed)
    probe = linear_probe(name, model, train_ds, spec.args, env.tokenizer, env.accelerator)  # LP-FT's converged LP
    trainer = (spec.trainer_factory or StageTrainer)(
        model, env.tokenizer, spec.args, env.accelerator, env.cfg.metrics, seed=env.cfg.seed,
        head_parameters=head_parameter_names(model),
        checkpoint_dir=env.checkpoint_root / name if env.checkpoint_root else None,
        desc=name, resume=env.cfg.resume, logging_steps=env.cfg.logging_steps,
    )
    aux = {"aux_ds": spec.aux_ds} if spec.aux_ds is not None else {}
    result = trainer.train(train_ds, spec.splits["validation"], **aux)
    test = TestPredictions.from_dict(trainer.evaluate(spec.splits["test"]))
    summary = summarise(spec.task_name, result, test, report)
    if contrastive is not None:
        summary.extra["contrastive"] = contrastive.to_dict()
    if probe is not None:
        summary.extra["linear_probe"] = probe.to_dict()
    outcome = StageOutcome(classification_model(trainer.model), summary, test)
    if env.checkpoint_root is not None:
        # every stage's model is kept: a later stage, a strategy (e.g. a source-only baseline
        # tested on the target) or the outputs may need it after a resume
        record_stage(env.checkpoint_root, name, {"summary": outcome.summary.to_dict(), "test": test.to_dict()},
                     model=outcome.model, tokenizer=env.tokenizer, accelerator=env.accelerator)
        if not spec.args.save_checkpoints:  # the stage's step checkpoints are of no use once it is recorded
            StageCheckpoints(env.checkpoint_root / name, env.accelerator).clear()
    return outcome


def finished_stage(name: str, env: StageEnvironment) -> Optional[StageOutcome]:
    """The stage as a killed run recorded it, when resuming and it finished; else None."""
    if env.checkpoint_root is None or not env.cfg.resume:
        return None
    done = stage_done(env.checkpoint_root, name)
    if done is None:
        return None
    if env.accelerator.is_main_process:
        tqdm.write(f"[{name}] finished in an earlier run; its results and model are reused (--resume)")
    return StageOutcome(load_stage_model(env.checkpoint_root, name), StageSummary.from_dict(done["summary"]),
                        TestPredictions.from_dict(done["test"]))


def summarise(task_name: str, result: StageResult, test: TestPredictions, report: FreezeReport) -> StageSummary:
    """A trained stage's record: its test metrics, its training history and costs."""
    return StageSummary(
        task=task_name, metrics=test.metrics, history=result.history, parameters=report.as_dict(),
        best_epoch=result.best_epoch, stopped_early=result.stopped_early, optimizer_steps=result.optimizer_steps,
        train_time_s=round(result.train_time_s, 3),
        train_time_per_epoch_s=round(result.train_time_s / max(len(result.history), 1), 4),
        train_samples_per_s=round(result.train_samples_per_s, 2),
    )


def train_rows_text(ds) -> str:
    return "streamed" if isinstance(ds, datasets.IterableDataset) else f"{len(ds):,}"
