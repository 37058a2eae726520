"""Will transfer help? Score candidate sources for a config's target task, without a run.

```
textransfer rank recipes/ag_news_to_sst2.yaml --candidates runs/ag_news_run sentence-transformers/all-MiniLM-L6-v2 \
    imdb_task.yaml --output-dir runs/rank [--tune-sources] [--max-examples 2000]
```

A candidate is either

* **a model**: a Hub id, a saved model folder, or a run directory (its shipped ``model/``). Its
  frozen, mean-pooled features of the target's train split (a seeded sample of
  ``max_examples`` rows) give **LogME** and the **H-score**; when it has a classification head,
  that head's probabilities over its own labels give **LEEP**;
* **a source task**: a YAML file holding one task, with the keys of a ``source:`` section
  (relative paths resolve against that file's folder; a recipe's ``source:`` section is read too).
  Its text and the target's, embedded by the config's ``model.name_or_path``, give the
  **centroid cosine** and the **proxy A-distance**; with ``tune_sources`` the config's model is
  fine-tuned briefly on the task (``tune_steps`` optimiser steps) and the tuned encoder is scored
  like a model.

Features are cached under ``OUTPUT_DIR/features`` (``inference/embeddings.py``) and tuned encoders
under ``OUTPUT_DIR/tuned``, so a second call with the same output folder recomputes nothing. It
writes ``rank.json`` and ``rank.png`` there. Every candidate is checked (files exist, YAML holds
a task, models load) before any feature is computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import datasets
import numpy as np
import yaml

from ..config import RunConfig, TaskConfig, TrainingConfig
from ..config.paths import resolve_task_paths
from ..config.rank import RankConfig
from ..config.schema import build
from ..data.loading import TaskData, load_task
from ..data.tokenization import tokenize_dataset
from ..errors import ConfigError, DataError, OutputDirError
from ..files import write_json
from ..inference.embeddings import FeatureCache, FeatureModel, embed, resolve_encoder
from ..metrics.transferability import centroid_cosine, h_score, leep, logme, proxy_a_distance
from ..modeling.loading import head_parameter_names, load_for_classification, load_tokenizer, save_model_atomically
from ..publish.ranking import plot_rank
from ..training.accelerator import make_accelerator
from ..training.trainer import StageTrainer

__all__ = ["RankReport", "CandidateScores", "rank", "load_task_file"]

RANK_FILE = "rank.json"
PLOT_FILE = "rank.png"
FEATURES_DIR = "features"
TUNED_DIR = "tuned"
TASK_SUFFIXES = (".yaml", ".yml")
OPTION = "--candidates"
# how each kind of candidate is put in order: models (and tuned sources) by LogME, which agreed
# best with fine-tuned accuracy on text (Bassignana et al., 2022); untuned sources by similarity
MODEL_ORDER, TASK_ORDER = "logme", "centroid_cosine"


@dataclass
class Candidate:
    """One ``--candidates`` entry, checked: a model to score, or a source task."""

    spec: str
    name: str
    kind: str  # "model" or "task"
    model: Optional[FeatureModel] = None
    task: Optional[TaskConfig] = None


@dataclass
class CandidateScores:
    """One candidate's scores (``rank.json``'s ``candidates``).

    Args:
        name (`str`): its short name in the table; ``spec`` is what was passed.
        kind (`str`): ``model`` or ``task``.
        scores (`dict`): score name (``logme``, ``h_score``, ``leep``, ``centroid_cosine``,
            ``proxy_a_distance``) -> value.
        ranked_by (`str`): the score its predicted ``rank`` comes from.
        rank (`int`): 1 for the best among the candidates ranked by the same score.
        features_cached (`bool`): every feature (and tuned encoder) came from the cache.
        seconds (`float`): time spent on it in this call.
        notes (`list[str]`): what was done (head labels, tuning).
    """

    name: str
    spec: str
    kind: str
    scores: Dict[str, float]
    ranked_by: str
    rank: int = 0
    features_cached: bool = False
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RankReport:
    """What ``rank`` found (the content of ``rank.json``, by :meth:`to_dict`)."""

    target: Dict[str, Any]
    embedding_model: str
    options: Dict[str, Any]
    candidates: List[CandidateScores]
    order: List[Dict[str, Any]]
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"target": self.target, "embedding_model": self.embedding_model, "options": self.options,
                "candidates": [c.to_dict() for c in self.candidates], "order": self.order,
                "seconds": round(self.seconds, 2)}

    def by_name(self, name: str) -> CandidateScores:
        return next(c for c in self.candidates if c.name == name)


# ---------------------------------------------------------------------------- candidates
def load_task_file(path: Path, option: str = OPTION) -> TaskConfig:
    """The one task in a YAML file: its top level is a ``source:`` section's keys (or the file has
    a ``source:`` section, as a recipe does). Relative paths resolve against the file's folder."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{option} '{path}': not valid YAML: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("source"), dict):
        data = data["source"]
    if not isinstance(data, dict) or not ({"path", "data_files"} & set(data)):
        raise ConfigError(
            f"{option} '{path}' holds no task: a task file has the keys of a `source:` section at its top level, "
            f"at least `data_files` (or `path`, a Hub dataset id), e.g.\n  name: imdb\n  data_files: "
            f"{{train: imdb/train.parquet, test: imdb/test.parquet}}\n  label_names: [negative, positive]")
    try:
        task = build(TaskConfig, data, prefix="")
    except ConfigError as err:
        raise ConfigError(f"{option} '{path}': {err}", option=err.option) from None
    if task.streaming:
        raise ConfigError(f"{option} '{path}': `streaming: true` is not supported here: ranking reads a sample of "
                          f"the task's rows; remove it (`max_train_samples` caps the rows read).")
    resolve_task_paths(task, Path(path).resolve().parent)
    return task


def short_names(specs: Sequence[str]) -> List[str]:
    """A folder's or file's own name (``runs/demo`` -> ``demo``), a Hub id as given; the full
    spec wherever two short names would clash."""
    short = [Path(s).stem if Path(s).suffix in TASK_SUFFIXES else (Path(s).name if Path(s).exists() else s)
             for s in specs]
    return [n if short.count(n) == 1 else s for n, s in zip(short, specs)]


def parse_candidates(specs: Sequence[str], cfg: RunConfig) -> List[Candidate]:
    """Check every candidate before any work: task files hold a task, models load."""
    if not specs:
        raise ConfigError(f"{OPTION}: name at least one candidate (a model, a run directory or a task YAML file).")
    twice = sorted({s for s in specs if list(specs).count(s) > 1})
    if twice:
        raise ConfigError(f"{OPTION}: {', '.join(twice)} given twice; name each candidate once.")
    out = []
    for spec, name in zip(specs, short_names(specs)):
        path = Path(spec)
        if path.suffix in TASK_SUFFIXES:
            if not path.is_file():
                raise ConfigError(f"{OPTION} '{spec}': no such file. A task candidate is a YAML file holding one "
                                  f"task; check the path (relative paths are from the current directory).")
            out.append(Candidate(spec, name, "task", task=load_task_file(path)))
        else:
            if not path.exists() and (spec.startswith((".", "/", "~")) or spec.count("/") > 1):
                raise ConfigError(f"{OPTION} '{spec}': no such file or folder. Pass a run directory, a saved model "
                                  f"folder, a Hub id (user/name) or a task YAML file (.yaml).")
            model = resolve_encoder(spec, cfg.model.max_length, option=OPTION)
            out.append(Candidate(spec, name, "model", model=model))
    return out


# ---------------------------------------------------------------------------- data
def quiet_load(task: TaskConfig, cache_dir: Optional[str]) -> TaskData:
    """``load_task`` with the datasets progress bars hidden (its small steps say nothing useful)."""
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return load_task(task, cache_dir=cache_dir)
    finally:
        if bars:
            datasets.enable_progress_bars()


def sample_rows(ds: datasets.Dataset, limit: Optional[int], seed: int) -> datasets.Dataset:
    """A seeded sample of ``limit`` rows (all of them when there are fewer, or no limit)."""
    if limit is None or len(ds) <= limit:
        return ds
    return ds.shuffle(seed=seed).select(range(limit))


def texts_of(ds: datasets.Dataset) -> Tuple[List[str], Optional[List[str]]]:
    return list(ds["text"]), (list(ds["text_pair"]) if "text_pair" in ds.column_names else None)


@dataclass
class Scoring:
    """What every candidate is scored against, shared through one call."""

    cfg: RunConfig
    options: RankConfig
    cache: FeatureCache
    out: Path
    target: TaskData
    rows: datasets.Dataset  # the sampled target train rows
    embedder: Optional[FeatureModel] = None  # the config's model, for task similarity

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.rows["labels"], dtype=np.int64)


# ---------------------------------------------------------------------------- scoring
def model_scores(model: FeatureModel, run: Scoring) -> Tuple[Dict[str, float], bool, List[str]]:
    """LogME and H-score of ``model``'s features of the target rows, and LEEP from its head."""
    texts, pairs = texts_of(run.rows)
    encoded = embed(model, texts, pairs, cache=run.cache, batch_size=run.options.batch_size)
    scores = {"logme": logme(encoded.features, run.labels), "h_score": h_score(encoded.features, run.labels)}
    notes = []
    if len(run.rows) <= encoded.features.shape[1]:  # cov(f) is singular: pinv then fits the class means exactly
        notes.append(f"H-score unreliable: {len(run.rows)} rows for {encoded.features.shape[1]} feature dimensions "
                     f"(it saturates at classes - 1); raise --max-examples")
    if encoded.probs is not None:
        scores["leep"] = leep(encoded.probs, run.labels)
        notes.append(f"LEEP from its head over {len(model.head_labels)} labels ({', '.join(model.head_labels)})")
    return scores, encoded.cached, notes


def task_scores(candidate: Candidate, run: Scoring) -> Tuple[Dict[str, float], bool, List[str]]:
    """Centroid cosine and proxy A-distance of the task's text and the target's, and with
    ``tune_sources`` the scores of the briefly source-tuned encoder."""
    task = quiet_load(candidate.task, run.cfg.cache_dir)
    source_rows = sample_rows(task.splits["train"], run.options.max_examples, run.options.seed)
    source = embed(run.embedder, *texts_of(source_rows), cache=run.cache, batch_size=run.options.batch_size)
    target = embed(run.embedder, *texts_of(run.rows), cache=run.cache, batch_size=run.options.batch_size)
    scores = {"centroid_cosine": centroid_cosine(source.features, target.features),
              "proxy_a_distance": proxy_a_distance(source.features, target.features, seed=run.options.seed)}
    cached = source.cached and target.cached
    notes = [f"{len(source_rows)} source rows of '{task.name}'"]
    if run.options.tune_sources:
        tuned, reused = tune_on_source(candidate.task, task, source_rows, run)
        tuned_scores, tuned_cached, tuned_notes = model_scores(resolve_encoder(str(tuned), run.cfg.model.max_length),
                                                               run)
        scores.update(tuned_scores)
        cached = cached and reused and tuned_cached
        notes.append(f"tuned {run.options.tune_steps} steps ({'reused' if reused else 'trained'}: {tuned})")
        notes += tuned_notes
    return scores, cached, notes


def tuning_key(task: TaskConfig, run: Scoring) -> str:
    """What a tuned encoder depends on: the base model, the task's options, the tuning options."""
    o = run.options
    parts = [run.embedder.identity, run.cfg.model.max_length, dataclasses.asdict(task), o.tune_steps,
             o.tune_batch_size, o.tune_learning_rate, o.seed, o.max_examples]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tune_on_source(config: TaskConfig, task: TaskData, rows: datasets.Dataset, run: Scoring) -> Tuple[Path, bool]:
    """The config's model fine-tuned for ``tune_steps`` optimiser steps on the source rows (a brief
    StageTrainer run, no evaluation), saved under ``OUTPUT_DIR/tuned``; an earlier call's is
    reused. Returns ``(folder, reused)``."""
    folder = run.out / TUNED_DIR / f"{task.name}-{tuning_key(config, run)}"
    if (folder / "config.json").is_file():
        return folder, True
    o, model_cfg = run.options, run.cfg.model
    tokenizer = load_tokenizer(model_cfg)
    model = load_for_classification(model_cfg, task.label_names)
    # no validation split, no best-weights restore: a fixed short budget, as cheap as the scores
    args = TrainingConfig(max_steps=o.tune_steps, batch_size=o.tune_batch_size, learning_rate=o.tune_learning_rate,
                          eval_every_epoch=False, load_best_model_at_end=False)
    trainer = StageTrainer(model, tokenizer, args, make_accelerator(), ["accuracy"], seed=o.seed,
                           head_parameters=head_parameter_names(model), desc=f"tune {task.name}")
    trainer.train(tokenize_dataset(rows, tokenizer, model_cfg.max_length, desc=f"Tokenizing {task.name}"))
    save_model_atomically(trainer.model, tokenizer, folder, max_length=model_cfg.max_length)
    return folder, False


def predicted_order(results: List[CandidateScores]) -> List[Dict[str, Any]]:
    """Rank candidates, best first, within each score used for ordering; sets each one's ``rank``."""
    order = []
    for by in (MODEL_ORDER, TASK_ORDER):
        group = sorted((r for r in results if r.ranked_by == by), key=lambda r: -r.scores[by])
        for i, r in enumerate(group, start=1):
            r.rank = i
        if group:
            order.append({"by": by, "candidates": [r.name for r in group]})
    return order


# ---------------------------------------------------------------------------- the command
def rank(config: Union[RunConfig, str, Path], candidates: Sequence[str], output_dir: Union[str, Path],
         options: Optional[RankConfig] = None, overrides: Optional[List[str]] = None) -> RankReport:
    """Score each candidate for the target task of ``config`` and write ``rank.json`` and ``rank.png``.

    Args:
        config (`RunConfig` or `str`): a run config, or the path of a recipe YAML (its ``target``
            and ``model``; the rest is not used).
        candidates (`list[str]`): models (Hub ids, model folders, run directories) and task
            YAML files (one task with the keys of a ``source:`` section).
        output_dir (`str`): where ``rank.json``, ``rank.png`` and the feature cache go; a second
            call with the same folder reuses the cached features and tuned encoders.
        options (`RankConfig`, *optional*): rows, batch size, source tuning, seed.
        overrides (`list[str]`, *optional*): ``section.option=value`` overrides of a config path.

    Returns:
        `RankReport`.

    Example:

    ```python
    import textransfer
    report = textransfer.rank("recipes/news_to_sentiment.yaml", ["sentence-transformers/all-MiniLM-L6-v2",
                              "runs/demo"], output_dir="runs/rank")
    print([c.name for c in report.candidates], report.order)
    ```
    """
    clock = time.perf_counter()
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_yaml(config, overrides=overrides)
    options = options or RankConfig()
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--output-dir '{out}' is a file, not a directory. Choose another path.")
    parsed = parse_candidates(list(candidates), cfg)
    target = quiet_load(cfg.target, cfg.cache_dir)
    run = Scoring(cfg, options, FeatureCache(out / FEATURES_DIR), out, target=target,
                  rows=sample_rows(target.splits["train"], options.max_examples, options.seed))
    if len(set(run.labels.tolist())) < 2:
        raise DataError(f"target task '{run.target.name}': the {len(run.rows)} sampled train rows hold one class only; "
                        f"the scores compare classes. Raise --max-examples or check `target.label_column`.")
    if any(c.kind == "task" for c in parsed):
        run.embedder = resolve_encoder(cfg.model.name_or_path, cfg.model.max_length, cfg.model.revision,
                                       option="`model.name_or_path`")
    results = [score_candidate(c, run) for c in parsed]
    report = RankReport(target={"name": run.target.name, "rows": len(run.rows), "labels": run.target.label_names},
                        embedding_model=cfg.model.name_or_path, options=dataclasses.asdict(options),
                        candidates=results, order=predicted_order(results))
    report.seconds = time.perf_counter() - clock
    write_json(out / RANK_FILE, report.to_dict())
    plot_rank(report.to_dict(), out / PLOT_FILE)
    return report


def score_candidate(candidate: Candidate, run: Scoring) -> CandidateScores:
    start = time.perf_counter()
    if candidate.kind == "model":
        scores, cached, notes = model_scores(candidate.model, run)
        by = MODEL_ORDER
    else:
        scores, cached, notes = task_scores(candidate, run)
        by = MODEL_ORDER if run.options.tune_sources else TASK_ORDER
    return CandidateScores(name=candidate.name, spec=candidate.spec, kind=candidate.kind, scores=scores,
                           ranked_by=by, features_cached=cached, seconds=round(time.perf_counter() - start, 2),
                           notes=notes)
