"""The source stage the benchmarks train once per (source, seed) and keep as a model folder that
their arms load (``model.name_or_path``), so the arms of one seed share one source model."""

from __future__ import annotations

from pathlib import Path


def source_folder(work: Path, source: str, seed: int) -> Path:
    """Where a benchmark keeps the source model of ``source`` trained under ``seed``."""
    return work / f"source-{source}-{seed}"


def train_source_model(cfg, folder: Path, name: str) -> None:
    """Train ``cfg``'s source stage (its ``source_training``) and save the model in ``folder``.

    Args:
        cfg (`RunConfig`): a config with the ``source`` task (a ``target`` too: a RunConfig needs one).
        folder (`Path`): where the model and tokenizer go (``save_model``, at ``cfg.model.max_length``).
        name (`str`): what the printed line calls this source stage.
    """
    from textransfer.data.tokenization import tokenize_splits
    from textransfer.modeling.loading import save_model
    from textransfer.run.transfer import prepare
    from textransfer.strategies import RunContext
    from textransfer.training.accelerator import make_accelerator

    max_length = cfg.model.max_length
    tokenizer, tasks = prepare(cfg)
    tokenized = {n: tokenize_splits(t.splits, tokenizer, max_length) for n, t in tasks.items()}
    run = RunContext(cfg, make_accelerator(), tokenizer, tasks, tokenized)
    model, summary, _ = run.train_stage("source", run.pretrained("source"), "source", cfg.source_training)
    print(f"source {name}: source test accuracy {100 * summary.metrics['accuracy']:.1f}", flush=True)
    save_model(model, tokenizer, folder, max_length=max_length)
