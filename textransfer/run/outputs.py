"""What a finished run writes into its output folder, on the main process.

``model/`` (the shipped arm) and ``models/<arm>/`` (the other), each with its card
(``shipping.py``); ``test_predictions.jsonl``; ``config.yaml``; the plots; ``results.json``
last. Then ``checkpoints/`` is removed unless the config keeps it.

``test_predictions.jsonl`` has one JSON object per target test row, in the split's row order::

    {"row": 1, "text": "...", "label": "positive",
     "transfer": {"label": "positive", "scores": {"negative": 0.12, "positive": 0.88}},
     "baseline": {"label": "negative", "scores": {"negative": 0.61, "positive": 0.39}}}

``row`` is the dataset's row id (1-based, in the test split as loaded, before any empty-text
drop); ``text_pair`` follows ``text`` for a pair task; ``scores`` are the class probabilities
(left out for a strategy that does not produce them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config import RunConfig
from ..data.batching import sort_by_length
from ..data.loading import TaskData
from ..files import atomic_write_text, write_json
from ..publish.hub import push_run
from ..publish.report import plot_confusion_matrix, plot_learning_curves, plot_transfer_gain
from ..strategies import RunContext, TransferOutcome
from ..training.checkpointing import keeps_checkpoints, remove_checkpoints
from ..training.results import RunResults, TestPredictions
from .shipping import SharedBaseline, ship_models

TEST_PREDICTIONS = "test_predictions.jsonl"


def finish_run(out: Path, cfg: RunConfig, run: RunContext, results: RunResults, outcome: TransferOutcome,
               baseline: Optional[SharedBaseline]) -> None:
    """Write the outputs on the main process, remove the checkpoints, then push when asked."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_outputs(out, cfg, run, results, outcome, baseline)
        if not keeps_checkpoints(cfg):  # results.json is written: the run is finished, nothing to resume
            remove_checkpoints(out)
    accelerator.wait_for_everyone()
    # after the barrier: a failed push raises on the main process alone, and the other
    # processes, past every collective call, exit instead of waiting for it
    if cfg.push_to_hub and accelerator.is_main_process:
        push_run(out, cfg.hub_repo_id, private=cfg.hub_private, revision=cfg.hub_revision)


def write_outputs(out: Path, cfg: RunConfig, run: RunContext, results: RunResults, outcome: TransferOutcome,
                  baseline: Optional[SharedBaseline]) -> None:
    """Both arms' models (with cards), ``test_predictions.jsonl``, ``config.yaml``, the plots and
    ``results.json`` (last: its presence means the run finished)."""
    out.mkdir(parents=True, exist_ok=True)
    # the baseline's record in this run's checkpoints is moved, unless the checkpoints are kept
    move = (baseline is not None and baseline.model_dir is not None and run.checkpoint_root is not None
            and not keeps_checkpoints(cfg) and Path(run.checkpoint_root) in Path(baseline.model_dir).parents)
    ship_models(out, cfg.to_dict(), results, outcome.model, run.tokenizer, baseline, move_baseline=move)
    tests = {"transfer": outcome.test}
    if baseline is not None:
        tests["baseline"] = baseline.baseline.test
    target = run.tasks["target"]
    write_test_predictions(out / TEST_PREDICTIONS, target, run.tokenized["target"]["test"], tests)
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    results.plots = write_plots(out, cfg, results, tests[results.shipped_arm])
    write_json(out / "results.json", results.to_dict())


def write_plots(out: Path, cfg: RunConfig, results: RunResults, shipped: TestPredictions) -> Dict[str, str]:
    """The learning curves, the transfer gain and the shipped model's confusion matrix; plot name -> file."""
    plots = {}
    if plot_learning_curves(results, out / "learning_curves.png", metric=cfg.target_training.metric_for_best_model):
        plots["learning_curves"] = "learning_curves.png"
    if plot_transfer_gain(results, out / "transfer_gain.png"):
        plots["transfer_gain"] = "transfer_gain.png"
    target = results.target
    plot_confusion_matrix(shipped.predictions, shipped.references, target.label_names, out / "confusion_matrix.png",
                          title=f"{target.task}: shipped {results.shipped_arm} model, test split")
    plots["confusion_matrix"] = "confusion_matrix.png"
    return plots


def arm_by_row(test: TestPredictions, tokenized_test, label_names: List[str]) -> Dict[int, Dict[str, Any]]:
    """One arm's predicted label (and class probabilities) per dataset row id.

    Predictions are in the test split's length-sorted order; a strategy that recorded no row
    ids predicted in that same order (``TestPredictions``' contract), so they are read from it.
    """
    rows = test.rows if test.rows is not None else list(sort_by_length(tokenized_test)["row"])
    if len(rows) != len(test.predictions):
        raise RuntimeError(f"{len(test.predictions)} test predictions for {len(rows)} test rows")
    out = {}
    for i, (row, pred) in enumerate(zip(rows, test.predictions)):
        entry: Dict[str, Any] = {"label": label_names[pred]}
        if test.scores is not None:
            entry["scores"] = dict(zip(label_names, test.scores[i]))
        out[row] = entry
    return out


def write_test_predictions(path: Path, task: TaskData, tokenized_test, arms: Dict[str, TestPredictions]) -> None:
    """``test_predictions.jsonl``: each test row's text, gold label and every arm's prediction (see the
    module's docstring)."""
    split, names = task.splits["test"], task.label_names
    by_arm = {arm: arm_by_row(test, tokenized_test, names) for arm, test in arms.items()}
    columns = ["row", "text"] + (["text_pair"] if "text_pair" in split.column_names else []) + ["labels"]
    data = {c: split[c] for c in columns}
    lines = []
    for i, row in enumerate(data["row"]):
        line: Dict[str, Any] = {c: data[c][i] for c in columns if c != "labels"}
        line["label"] = names[data["labels"][i]]
        line.update({arm: predictions[row] for arm, predictions in by_arm.items()})
        lines.append(json.dumps(line))
    atomic_write_text(path, "\n".join(lines) + "\n")
