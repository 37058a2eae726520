"""The automatic choice: ``strategy: {name: auto, candidates: [finetune, l2sp]}`` and
``textransfer compare --strategies ... --select``.

Every candidate strategy is trained as a run of its own on the same split and seed, sharing one
no-transfer baseline, which is always a candidate too. The one with the best **validation**
score on ``target_training.metric_for_best_model`` is shipped (its best epoch's when the best
weights are restored, else its last: ``shipping.validation_score``); the test split is reported
for every candidate and never read by the choice. Ties go to the candidate listed first, and a
strategy tied with the baseline is shipped (as a run ships the transfer arm on a tie);
``ship: baseline`` ships the baseline, ``ship: transfer`` the best strategy.

A ``strategy: auto`` run writes the layout of any run: ``model/`` is the chosen model, every other
candidate is in ``models/<strategy>/`` (the baseline in ``models/baseline/``), each with its card;
``results.json`` holds the best transfer candidate's results against the baseline, as a run of
that strategy would, plus ``auto``: the choice, why, and every candidate's validation and test
scores. While it trains, each candidate's run is in ``checkpoints/candidates/<strategy>/``.

This module sits below ``transfer.py`` (which trains the candidates) and ``compare.py``: it
chooses and places, and trains nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from accelerate import PartialState

from ..config import RunConfig, StrategyConfig
from ..files import atomic_write_text, write_json
from ..publish.card import write_card
from ..publish.report import format_score
from ..training.checkpointing import CHECKPOINTS_FOLDER, keeps_checkpoints, remove_checkpoints
from ..training.results import (BASELINE_CANDIDATE, OTHER_ARMS_FOLDER, SHIPPED_FOLDER, AutoSelection, Candidate,
                                RunResults, Selection)
from ..training.selection import is_better
from .outputs import TEST_PREDICTIONS
from .shipping import SharedBaseline, place_model, validation_score

# where a `strategy: auto` run trains its candidates, each as a run of its own (removed once it finishes)
CANDIDATES_FOLDER = f"{CHECKPOINTS_FOLDER}/candidates"


def with_strategy(cfg: RunConfig, strategy: StrategyConfig) -> RunConfig:
    """A copy of ``cfg`` with only its strategy changed (``compare``'s run of one strategy)."""
    run_cfg = copy.deepcopy(cfg)
    run_cfg.strategy = strategy
    return run_cfg


def candidate_config(cfg: RunConfig, strategy: StrategyConfig) -> RunConfig:
    """The run of one candidate: ``cfg`` with only ``strategy`` changed (and no push: the choice pushes)."""
    run_cfg = with_strategy(cfg, strategy)
    run_cfg.push_to_hub = False
    return run_cfg


def auto_folder(name: str, chosen: str) -> str:
    """Where candidate ``name``'s model goes in a ``strategy: auto`` run: ``model/`` or ``models/<name>/``."""
    return SHIPPED_FOLDER if name == chosen else f"{OTHER_ARMS_FOLDER}/{name}"


def validation_scores(runs: Dict[str, RunResults], cfg: RunConfig) -> Dict[str, Optional[float]]:
    """Each candidate's validation score, the strategies in order, then the (shared) baseline's."""
    args = cfg.target_training

    def score(stage):
        return validation_score(stage, args.metric_for_best_model, args.load_best_model_at_end)

    scores = {name: score(run.target.transfer) for name, run in runs.items()}
    scores[BASELINE_CANDIDATE] = score(next(iter(runs.values())).target.baseline)
    return scores


def best_strategy(scores: Dict[str, Optional[float]], metric: str) -> str:
    """The strategy with the best validation score; the first listed among ties, or when none has one."""
    strategies = [name for name in scores if name != BASELINE_CANDIDATE]
    best = strategies[0]
    for name in strategies:
        if scores[name] is not None and (scores[best] is None or is_better(scores[name], scores[best], metric)):
            best = name
    return best


def pick(scores: Dict[str, Optional[float]], ship: str, metric: str) -> Tuple[str, str]:
    """``(chosen candidate, why)`` from the validation scores (see the module's docstring)."""
    shown = ", ".join(f"{name} {format_score(v) if v is not None else '-'}" for name, v in scores.items())
    best = best_strategy(scores, metric)
    top, base = scores[best], scores[BASELINE_CANDIDATE]
    if ship == "baseline":
        return BASELINE_CANDIDATE, f"`ship: baseline` in the config (validation {metric}: {shown})"
    if ship == "transfer":
        return best, f"`ship: transfer` in the config: {best} is the best strategy on validation {metric} ({shown})"
    if top is None:
        return best, (f"no candidate strategy has a validation {metric} to compare ({shown}; `eval_every_epoch: "
                      f"false`?), so the first one listed, {best}, is shipped")
    if base is not None and is_better(base, top, metric):
        return BASELINE_CANDIDATE, (f"the no-transfer baseline scored best on validation {metric} ({shown}): no "
                                    f"candidate strategy helped this target on validation")
    tied = [n for n, v in scores.items() if n != best and v is not None and not is_better(top, v, metric)]
    why = f"{best} scored best on validation {metric} ({shown})"
    if tied:
        why += f"; tied with {', '.join(tied)}: the strategy listed first wins, and a strategy wins over the baseline"
    return best, why


def choose(runs: Dict[str, RunResults], cfg: RunConfig, folder_of: Callable[[str, str], str]) -> AutoSelection:
    """The automatic choice among ``runs`` (one per candidate strategy, in order, sharing a baseline):
    chosen on validation only; ``folder_of(name, chosen)`` says where each candidate's model is."""
    metric = cfg.target_training.metric_for_best_model
    scores = validation_scores(runs, cfg)
    chosen, reason = pick(scores, cfg.ship, metric)
    first = next(iter(runs.values()))
    candidates = {name: Candidate(scores[name], dict(run.target.transfer.metrics), folder_of(name, chosen),
                                  round(run.timings.get("source_s", 0.0) + run.timings.get("target_s", 0.0), 3))
                  for name, run in runs.items()}
    candidates[BASELINE_CANDIDATE] = Candidate(scores[BASELINE_CANDIDATE], dict(first.target.baseline.metrics),
                                               folder_of(BASELINE_CANDIDATE, chosen),
                                               first.timings.get("baseline_s"))
    return AutoSelection(chosen, reason, metric, candidates)


def with_choice(run: RunResults, auto: AutoSelection) -> RunResults:
    """A candidate's results with the automatic choice attached; ``selected`` (transfer or baseline)
    says the same as ``auto`` in the two-arm terms that ``push --arm``, the table and the card read."""
    arm = "baseline" if auto.chosen == BASELINE_CANDIDATE else "transfer"
    validation = {"transfer": auto.candidates[run.strategy_name].validation,
                  "baseline": auto.candidates[BASELINE_CANDIDATE].validation}
    return dataclasses.replace(run, auto=auto, selected=Selection(arm, auto.reason, validation))


def auto_results(runs: Dict[str, RunResults], cfg: RunConfig) -> RunResults:
    """A ``strategy: auto`` run's results: the best transfer candidate's against the baseline, with the choice."""
    auto = choose(runs, cfg, auto_folder)
    best = best_strategy({n: c.validation for n, c in auto.candidates.items()}, auto.metric)
    return with_choice(runs[best], auto)


def finish_auto(out: Optional[Path], cfg: RunConfig, runs: Dict[str, RunResults], work: Optional[Path],
                baseline: SharedBaseline) -> RunResults:
    """Choose, then (with an output folder, on the main process) place every candidate's model,
    write the run's outputs and remove the candidates' runs."""
    results = auto_results(runs, cfg)
    state = PartialState()
    state.wait_for_everyone()  # every candidate's run has written its outputs
    if out is not None and state.is_main_process:
        place_candidates(out, cfg, runs, work, results, baseline)
        write_auto_outputs(out, cfg, work, results)
        if not keeps_checkpoints(cfg):
            remove_checkpoints(out)
    state.wait_for_everyone()
    return results


def place_candidates(out: Path, cfg: RunConfig, runs: Dict[str, RunResults], work: Path, results: RunResults,
                     baseline: SharedBaseline) -> None:
    """Move every candidate's model from its run to ``model/`` or ``models/<name>/``, with a card that
    tells the choice; remove what an earlier run in ``out`` left in ``models/``."""
    auto, config = results.auto, cfg.to_dict()

    def card(run: RunResults, arm: str, final: Path):
        return lambda tmp: write_card(tmp, run, config, previous=final / "README.md", arm=arm)

    for name, run in runs.items():
        final = out / auto.folder(name)
        place_model(work / name / run.model_folder("transfer"), final, card(with_choice(run, auto), "transfer", final),
                    move=True)
    final = out / auto.folder(BASELINE_CANDIDATE)
    baseline.model_dir = place_model(baseline.model_dir, final, card(results, "baseline", final), move=True)
    others = out / OTHER_ARMS_FOLDER
    kept = {Path(auto.folder(name)).name for name in auto.candidates if auto.folder(name) != SHIPPED_FOLDER}
    for stale in (others.iterdir() if others.is_dir() else []):  # --overwrite over another run
        if stale.name not in kept:
            shutil.rmtree(stale, ignore_errors=True)


def write_auto_outputs(out: Path, cfg: RunConfig, work: Path, results: RunResults) -> None:
    """``test_predictions.jsonl`` (every candidate's column), ``config.yaml``, the best transfer
    candidate's plots (its run chose between it and the baseline as this one did) and ``results.json``."""
    best = work / results.strategy_name
    merge_test_predictions(out / TEST_PREDICTIONS, {name: work / name / TEST_PREDICTIONS
                                                    for name in results.auto.candidates if name != BASELINE_CANDIDATE},
                           best / TEST_PREDICTIONS)
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    for plot in (results.plots or {}).values():
        shutil.copyfile(best / plot, out / plot)
    write_json(out / "results.json", results.to_dict())


def select_comparison(out: Path, cfg: RunConfig, runs: Dict[str, RunResults],
                      baseline: SharedBaseline) -> AutoSelection:
    """``compare --select``: the automatic choice among the compared strategies and the baseline;
    the chosen model is copied (its run keeps its own) to ``out/model/``, with a card that tells the choice."""
    def folder_of(name: str, chosen: str) -> str:  # where each model is in the comparison folder
        if name == BASELINE_CANDIDATE:
            return Path(baseline.model_dir).relative_to(out).as_posix()
        return f"{name}/{runs[name].model_folder('transfer')}"

    auto = choose(runs, cfg, folder_of)
    state = PartialState()
    if state.is_main_process:
        best = best_strategy({n: c.validation for n, c in auto.candidates.items()}, auto.metric)
        arm = "baseline" if auto.chosen == BASELINE_CANDIDATE else "transfer"
        run = with_choice(runs[best if arm == "baseline" else auto.chosen], auto)
        final = out / SHIPPED_FOLDER
        place_model(out / auto.candidates[auto.chosen].model, final,
                    lambda tmp: write_card(tmp, run, cfg.to_dict(), previous=final / "README.md", arm=arm), move=False)
    state.wait_for_everyone()
    return auto


def merge_test_predictions(path: Path, candidates: Dict[str, Path], best: Path) -> None:
    """The best candidate's ``test_predictions.jsonl`` (``transfer``, ``baseline``) with one more
    column per candidate strategy, by name: its transfer model's label and scores."""
    lines = [json.loads(line) for line in best.read_text().splitlines()]
    for name, file in candidates.items():
        theirs: List[dict] = [json.loads(line) for line in file.read_text().splitlines()]
        if [t["row"] for t in theirs] != [line["row"] for line in lines]:
            raise RuntimeError(f"candidate {name}'s test rows differ from the others' ({file})")
        for line, other in zip(lines, theirs):
            line[name] = other["transfer"]
    atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in lines))
