"""One stage of a run (source, target, baseline, or a strategy's own), trained end to end:
freezing, the trainer, the test split, and the record that lets ``--resume`` skip it.

This is what strategies call to train (``RunContext.train_stage``), so they need nothing from
the run layer above them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import datasets
from tqdm.auto import tqdm

from ..config import TrainingConfig
from ..modeling.freezing import freeze
from ..modeling.layerwise import classification_model
from ..modeling.loading import head_parameter_names
from .checkpointing import StageCheckpoints, load_stage_model, record_stage, stage_done
from .trainer import StageTrainer


def freeze_for_stage(model, args: TrainingConfig):
    return freeze(
        model,
        embeddings=args.freeze_embeddings,
        layers=args.freeze_layers,
        patterns=args.freeze_patterns,
        word_embeddings=not args.train_word_embeddings,
    )


def train_stage(name, model, tokenizer, data, tokenized, args: TrainingConfig, cfg, accelerator,
                checkpoint_root: Optional[Path], trainer_factory=None, aux_ds=None, train_ds=None):
    """Freeze, train, test and (with a checkpoint root) record one stage -> ``(model, summary, test)``.

    A stage that a killed run finished is loaded from its record instead (``--resume``).
    """
    # trainer_factory / aux_ds / train_ds: a strategy's trainer subclass, its second dataset,
    # or a replacement training set (see textransfer/strategies)
        # A stage that a killed run finished is not trained again (checkpointing.py)
    done = stage_done(checkpoint_root, name) if checkpoint_root is not None and cfg.resume else None
    if done is not None:
        if accelerator.is_main_process:
            tqdm.write(f"[{name}] finished in an earlier run; its results and model are reused (--resume)")
        return load_stage_model(checkpoint_root, name), done["summary"], done["test"]
    report = freeze_for_stage(model, args)
    if accelerator.is_main_process:
        tqdm.write(f"[{name}] {data.name}: {report.trainable:,} / {report.total:,} parameters trainable "
                   f"({100 * report.trainable / report.total:.1f}%), "
                   f"{train_rows_text(tokenized['train'])} training examples")
    trainer = (trainer_factory or StageTrainer)(
        model, tokenizer, args, accelerator, cfg.metrics, seed=cfg.seed,
        head_parameters=head_parameter_names(model),
        checkpoint_dir=checkpoint_root / name if checkpoint_root else None,
        desc=name, resume=cfg.resume,
    )
    train_ds = tokenized["train"] if train_ds is None else train_ds
    result = trainer.train(train_ds, tokenized["validation"], **({"aux_ds": aux_ds} if aux_ds is not None else {}))
    test = trainer.evaluate(tokenized["test"])
    summary = {
        "task": data.name,
        "metrics": test["metrics"],
        "history": result.history,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "optimizer_steps": result.optimizer_steps,
        "train_time_s": round(result.train_time_s, 3),
        "train_time_per_epoch_s": round(result.train_time_s / max(len(result.history), 1), 4),
        "train_samples_per_s": round(result.train_samples_per_s, 2),
        "parameters": report.as_dict(),
    }
    if checkpoint_root is not None:
        # every stage's model is kept: a later stage, a strategy (e.g. a source-only baseline
        # tested on the target) or the outputs may need it after a resume
        record_stage(checkpoint_root, name, {"summary": summary, "test": test}, model=classification_model(trainer.model),
                     tokenizer=tokenizer, accelerator=accelerator)
        if not args.save_checkpoints:  # the stage's step checkpoints are of no use once it is recorded
            StageCheckpoints(checkpoint_root / name, accelerator).clear()
    return trainer.model, summary, test


def train_rows_text(ds) -> str:
    return "streamed" if isinstance(ds, datasets.IterableDataset) else f"{len(ds):,}"


