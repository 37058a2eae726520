"""Which target model a run ships as ``model/``, and where both arms' models go.

The negative-transfer guard: ``model/`` (what ``pipeline``, ``predict`` and ``push`` load) is the
arm, transfer or baseline, with the better **validation** score on
``target_training.metric_for_best_model``; the test split only reports, it never chooses. The
other arm is kept as ``models/<arm>/`` with its own card. ``ship: transfer|baseline`` overrides
the choice. In unsupervised adaptation (a ``source_only`` baseline: no target label is used) no
target label may choose either, so the adapted (transfer) model is shipped unless ``ship`` says
otherwise.

Each model is stored once: the transfer model is saved from memory, the baseline's is moved
out of its stage record in ``checkpoints/`` (copied when the checkpoints are kept, or when
``compare`` placed it in another run's folder first).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..config import RunConfig
from ..files import make_temp_dir
from ..modeling.loading import save_model_atomically
from ..publish.card import write_card
from ..strategies import Baseline
from ..training.results import ARMS, OTHER_ARMS_FOLDER, RunResults, Selection, StageSummary
from ..training.selection import is_better

# the baseline kind of unsupervised adaptation: no target label trains either arm, so none may choose
UNSUPERVISED_BASELINE = "source_only"


@dataclass
class SharedBaseline:
    """A trained no-transfer baseline and where its saved model is now.

    ``model_dir`` starts as its stage record (``checkpoints/baseline/model``) and follows the
    model when a run places it in its outputs; ``compare`` shares one per baseline kind, and each
    later run copies the model from there. None when no output folder recorded it.
    """

    baseline: Baseline
    model_dir: Optional[Path] = None


def validation_score(stage: Optional[StageSummary], metric: str, best_weights: bool) -> Optional[float]:
    """The validation ``metric`` of the model a stage ended with: its best epoch's when the best
    weights were restored (``load_best_model_at_end``), else its last epoch's; None when the stage
    has no validation score (it trained nothing on the target, or ``eval_every_epoch: false``)."""
    if stage is None:
        return None
    values = [h[f"eval_{metric}"] for h in stage.history if isinstance(h.get(f"eval_{metric}"), (int, float))]
    if not values:
        return None
    if not best_weights:
        return float(values[-1])
    best = None
    for value in values:
        if is_better(value, best, metric):
            best = value
    return float(best)


def select_arm(results: RunResults, cfg: RunConfig, baseline_kind: Optional[str]) -> Selection:
    """The arm to ship as ``model/`` and why (see the module's docstring)."""
    args = cfg.target_training
    metric = args.metric_for_best_model
    if results.target.baseline is None:
        return Selection("transfer", "no baseline was trained (`baseline: false`, or no source task for it), so "
                                     "the transfer model is the only one", {})
    if baseline_kind == UNSUPERVISED_BASELINE:
        return unsupervised_selection(cfg.ship)
    validation = {arm: validation_score(results.arm_stage(arm), metric, args.load_best_model_at_end) for arm in ARMS}
    shown = ", ".join(f"{arm} {'-' if v is None else f'{v:.4f}'}" for arm, v in validation.items())
    if cfg.ship != "best":
        return Selection(cfg.ship, f"`ship: {cfg.ship}` in the config (validation {metric}: {shown})", validation)
    t, b = validation["transfer"], validation["baseline"]
    if t is None or b is None:
        return Selection("transfer", f"an arm has no validation {metric} to compare ({shown}; "
                                     f"`eval_every_epoch: false`?), so the transfer model is shipped", validation)
    if is_better(b, t, metric):
        return Selection("baseline", f"the baseline scored better on validation {metric} ({shown}): the source "
                                     f"task did not help this target on validation", validation)
    if is_better(t, b, metric):
        return Selection("transfer", f"the transfer model scored better on validation {metric} ({shown})", validation)
    return Selection("transfer", f"validation {metric} is tied ({shown}); on a tie the transfer model is shipped",
                     validation)


def unsupervised_selection(ship: str) -> Selection:
    """Unsupervised adaptation: no target label may choose, so ``ship`` or the adapted model decides."""
    if ship != "best":
        return Selection(ship, f"`ship: {ship}` in the config (unsupervised adaptation: no target label was used "
                               f"to choose)", {})
    return Selection("transfer", "unsupervised adaptation (`target_labels: false`): no target label may choose "
                                 "between the models, so the adapted model is shipped (`ship: baseline` ships the "
                                 "source-only model)", {})


def ship_models(out: Path, config: Dict[str, Any], results: RunResults, transfer_model, tokenizer,
                baseline: Optional[SharedBaseline], move_baseline: bool) -> None:
    """Save the transfer model and place the baseline's, each with its card, where ``results.selected``
    says (``model/`` or ``models/<arm>/``); remove what an earlier run in ``out`` left of an arm."""
    selected = results.selected
    folders = {arm: out / selected.folder(arm) for arm in ARMS}

    def card(arm: str) -> Callable[[Path], Any]:
        return lambda tmp: write_card(tmp, results, config, previous=folders[arm] / "README.md", arm=arm)

    save_model_atomically(transfer_model, tokenizer, folders["transfer"], finish=card("transfer"))
    if baseline is not None:
        if baseline.model_dir is None:
            raise RuntimeError("the baseline's model was not recorded on disk; it cannot be placed in the outputs")
        baseline.model_dir = place_model(baseline.model_dir, folders["baseline"], card("baseline"), move_baseline)
    others = out / OTHER_ARMS_FOLDER
    for arm in ARMS:  # --overwrite: an arm now in model/ (or not trained) must not linger in models/
        if folders[arm] != others / arm or (arm == "baseline" and baseline is None):
            shutil.rmtree(others / arm, ignore_errors=True)
    if others.is_dir() and not any(others.iterdir()):
        others.rmdir()


def place_model(source: Path, final: Path, finish: Callable[[Path], Any], move: bool) -> Path:
    """Move (or copy) a saved model folder to ``final`` through a temp folder beside it, so ``final``
    is never half-written; ``finish(tmp)`` adds the card first. Returns ``final``."""
    source, final = Path(source), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(final.parent, prefix=f".{final.name}.")
    staged = tmp / "model"
    try:
        if move:
            shutil.move(str(source), str(staged))
        else:  # another run's card stays with that run
            shutil.copytree(source, staged, ignore=shutil.ignore_patterns("README.md"))
        finish(staged)
        if final.exists():
            shutil.rmtree(final)
        staged.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
