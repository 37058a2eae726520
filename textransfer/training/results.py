"""Typed results: one stage's summary and test predictions, and a whole run's ``results.json``.

Every class serialises with ``to_dict()`` to exactly the dict ``results.json`` holds (the same
keys in the same order; a key that does not apply is left out, as it always was, rather than
written as ``null``) and reads one back with ``from_dict()``, so the card and ``push`` can read
a run from disk. ``from_dict`` keeps keys it does not know (a custom strategy's, a newer
version's) in ``extra``, and ``to_dict`` writes them back.

No torch here: the publishing layer reads these without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

Metrics = Dict[str, Any]  # metric name -> value (floats; a custom metric may return another type)


def _put(d: Dict[str, Any], key: str, value: Any) -> None:
    """``d[key] = value`` unless ``value`` is None (a key that does not apply stays absent)."""
    if value is not None:
        d[key] = value


def _known(cls) -> set:
    return {f.name for f in fields(cls)}


def _unknown(d: Mapping[str, Any], known: Iterable[str]) -> Dict[str, Any]:
    known = set(known)
    return {k: v for k, v in d.items() if k not in known}


@dataclass
class TestPredictions:
    """A model's predictions on a test split (length-sorted order) and their metrics.

    ``scores`` (each prediction's class probabilities, in label-id order) and ``rows`` (the
    dataset's ``row`` id of each prediction) come from `StageTrainer.evaluate`; they are None
    where a strategy predicted some other way. They travel in a stage's record (``--resume``)
    and ``test_predictions.jsonl``, never in ``results.json``.
    """

    __test__ = False  # not a pytest test class, whatever its name

    metrics: Metrics
    predictions: List[int]
    references: List[int]
    eval_time_s: Optional[float] = None  # None when the predictions did not come from `StageTrainer.evaluate`
    scores: Optional[List[List[float]]] = None
    rows: Optional[List[int]] = None

    def to_dict(self) -> Dict[str, Any]:
        d = {"metrics": self.metrics, "predictions": self.predictions, "references": self.references}
        _put(d, "eval_time_s", self.eval_time_s)
        _put(d, "scores", self.scores)
        _put(d, "rows", self.rows)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TestPredictions":
        return cls(d["metrics"], list(d["predictions"]), list(d["references"]), d.get("eval_time_s"),
                   d.get("scores"), d.get("rows"))


@dataclass
class DataSummary:
    """A task's rows and class counts per split, as loaded."""

    rows: Optional[Dict[str, int]] = None
    class_counts: Optional[Dict[str, List[int]]] = None
    dropped_empty_text: Optional[Any] = None  # per split, only when rows with empty text were dropped
    carved_splits: Optional[List[str]] = None  # only when splits were carved out of another

    @classmethod
    def from_task_info(cls, info: Mapping[str, Any]) -> "DataSummary":
        """From ``TaskData.info``: the optional entries only when there is something to say."""
        return cls(info.get("rows"), info.get("class_counts"), info.get("dropped_empty") or None,
                   info.get("carved") or None)

    def to_dict(self) -> Dict[str, Any]:
        d = {"rows": self.rows, "class_counts": self.class_counts}
        _put(d, "dropped_empty_text", self.dropped_empty_text)
        _put(d, "carved_splits", self.carved_splits)
        return d

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> "DataSummary":
        d = d or {}
        return cls(d.get("rows"), d.get("class_counts"), d.get("dropped_empty_text"), d.get("carved_splits"))


# the optional entries a strategy or the run adds to a stage, in their results.json order
_STAGE_EXTRAS = ("head", "encoder", "initialisation", "source_loss_weight", "unlabelled_target_examples",
                 "label_names", "source_metrics", "note", "data", "kind", "from_cache")


@dataclass
class StageSummary:
    """One stage's record in ``results.json`` (``source``, ``target.transfer``, ``target.baseline``).

    ``trained=False`` marks a stage that trained nothing (the adapted source model tested on the
    target); it has no best epoch, early stop or time per epoch, and those keys are left out.
    The optional fields below ``trained`` are None where they do not apply (and left out).
    """

    task: str
    metrics: Metrics
    history: List[Dict[str, Any]]
    parameters: Dict[str, Any]
    optimizer_steps: int = 0
    train_time_s: float = 0.0
    train_samples_per_s: float = 0.0
    best_epoch: Optional[int] = None
    stopped_early: bool = False
    train_time_per_epoch_s: float = 0.0
    trained: bool = True
    feature_extraction_s: Optional[float] = None  # features: the one encoder pass over the target
    head: Optional[str] = None  # features: the head's kind
    encoder: Optional[str] = None  # features: which encoder made the features
    initialisation: Optional[str] = None  # scratch: how the weights were made
    source_loss_weight: Optional[float] = None  # joint: alpha
    unlabelled_target_examples: Optional[int] = None  # dann/mmd/coral: the target text aligned to
    label_names: Optional[List[str]] = None  # the source stage: its labels
    source_metrics: Optional[Metrics] = None  # source-only baseline: its score on the source task
    note: Optional[str] = None  # what the metrics are when they are not the stage's own test
    data: Optional[DataSummary] = None  # the source stage: its task's rows
    kind: Optional[str] = None  # a baseline: "target" or "source_only"
    from_cache: Optional[str] = None  # the stage-cache key it was reused from (``stage_cache.py``); None: trained
    extra: Dict[str, Any] = field(default_factory=dict)  # anything else, written last

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"task": self.task, "metrics": self.metrics, "history": self.history}
        if self.trained:
            d.update(best_epoch=self.best_epoch, stopped_early=self.stopped_early)
        d["optimizer_steps"] = self.optimizer_steps
        d["train_time_s"] = self.train_time_s
        if self.trained:
            d["train_time_per_epoch_s"] = self.train_time_per_epoch_s
        d["train_samples_per_s"] = self.train_samples_per_s
        _put(d, "feature_extraction_s", self.feature_extraction_s)
        d["parameters"] = self.parameters
        for name in _STAGE_EXTRAS:
            value = getattr(self, name)
            _put(d, name, value.to_dict() if isinstance(value, DataSummary) else value)
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StageSummary":
        known = _known(cls) - {"trained", "extra", "data"}
        values = {k: d[k] for k in known if k in d}
        values.setdefault("history", [])
        values.setdefault("parameters", {})
        return cls(**values, trained="stopped_early" in d or "best_epoch" in d,
                   data=DataSummary.from_dict(d["data"]) if d.get("data") is not None else None,
                   extra=_unknown(d, known | {"data"}))


@dataclass
class PretrainingSummary:
    """One adaptive-pretraining stage's record (``results.json``'s ``adaptive_pretraining.<stage>``,
    ``training/pretraining.py``).

    ``heldout_perplexity_before`` / ``_after`` are the masked-token perplexity (exp of the mean
    masked-LM loss over the masked tokens) of the held-out texts, with the same positions masked
    both times; None when no text was held out (``heldout_fraction: 0``).
    """

    before: str  # the stage it preceded: "source" or "target"
    text: str  # which text: target, source, both or files
    texts: int  # texts trained on
    heldout_texts: int
    mlm_probability: float
    heldout_perplexity_before: Optional[float] = None
    heldout_perplexity_after: Optional[float] = None
    heldout_masked_tokens: Optional[int] = None
    history: List[Dict[str, Any]] = field(default_factory=list)  # per epoch: step, train_loss, learning_rate
    loss_curve: List[Dict[str, Any]] = field(default_factory=list)  # per logging_steps: step, loss
    optimizer_steps: int = 0
    train_time_s: float = 0.0
    train_samples_per_s: float = 0.0
    mlm_head: Optional[str] = None  # "pretrained" (the checkpoint's) or "fresh" (tied to the word embeddings)
    frozen_without_gradient: List[str] = field(default_factory=list)  # parameters the masked-LM loss never reaches
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d = {k: v for k, v in d.items() if v is not None}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PretrainingSummary":
        known = _known(cls) - {"extra"}
        return cls(**{k: d[k] for k in known if k in d}, extra=_unknown(d, known))


@dataclass
class NoiseTest:
    """How the gain's interval was computed."""

    metric: str
    resamples: int
    method: str = "paired bootstrap over test examples"
    confidence: float = 0.95

    def to_dict(self) -> Dict[str, Any]:
        return {"method": self.method, "resamples": self.resamples, "confidence": self.confidence,
                "metric": self.metric}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NoiseTest":
        return cls(d.get("metric", "accuracy"), d.get("resamples", 0), d.get("method", cls.method),
                   d.get("confidence", cls.confidence))


NO_BASELINE_VERDICT = "No baseline was trained (baseline: false or no source task); gain unknown."


@dataclass
class Verdict:
    """The transfer model against the no-transfer baseline: gains, their intervals, the call."""

    gain: Dict[str, float] = field(default_factory=dict)
    negative_transfer: Optional[bool] = None  # None: no baseline, unknown
    text: str = NO_BASELINE_VERDICT
    gain_ci: Optional[Dict[str, Dict[str, float]]] = None  # metric -> {low, high, std}
    noise_test: Optional[NoiseTest] = None

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"gain": self.gain}
        _put(d, "gain_ci", self.gain_ci)
        d["negative_transfer"] = self.negative_transfer
        _put(d, "noise_test", self.noise_test.to_dict() if self.noise_test else None)
        d["verdict"] = self.text
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        return cls(d.get("gain") or {}, d.get("negative_transfer"), d.get("verdict", ""), d.get("gain_ci"),
                   NoiseTest.from_dict(d["noise_test"]) if d.get("noise_test") else None)

    def disagreement(self) -> Tuple[List[str], List[str]]:
        """``(metrics whose gain interval is wholly above 0, those wholly below 0)``: when both are
        non-empty, the transfer model is better beyond noise on some measures and worse on others."""
        intervals = self.gain_ci or {}
        above = [k for k, ci in intervals.items() if ci["low"] > 0]
        below = [k for k, ci in intervals.items() if ci["high"] < 0]
        return above, below


ARMS = ("transfer", "baseline")
SHIPPED_FOLDER = "model"  # the shipped arm: what `pipeline`, `predict` and `push` load by default
OTHER_ARMS_FOLDER = "models"  # the arm not shipped, as models/<arm>/


@dataclass
class Selection:
    """Which target model a run ships as ``model/`` and why (``results.json``'s ``selected``).

    ``validation`` holds each arm's validation score on ``metric_for_best_model`` (the score
    the choice was made on; empty when no target label could be used to choose).
    """

    arm: str  # one of ARMS
    reason: str
    validation: Dict[str, Optional[float]] = field(default_factory=dict)

    def folder(self, arm: str) -> str:
        """Where ``arm``'s model is, relative to the run directory."""
        return SHIPPED_FOLDER if arm == self.arm else f"{OTHER_ARMS_FOLDER}/{arm}"

    def to_dict(self) -> Dict[str, Any]:
        return {"arm": self.arm, "reason": self.reason, "validation": self.validation}

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> Optional["Selection"]:
        """None for a run written before runs chose an arm (its ``model/`` is the transfer model)."""
        if not d:
            return None
        return cls(d["arm"], d.get("reason", ""), dict(d.get("validation") or {}))


BASELINE_CANDIDATE = "baseline"  # the no-transfer baseline among an automatic choice's candidates


@dataclass
class Candidate:
    """One candidate of an automatic choice (``strategy: auto``, ``compare --select``): its
    validation score, the one the choice reads, and its test metrics, which are reported only."""

    validation: Optional[float]  # on metric_for_best_model; None when it has none (it cannot be chosen)
    test: Metrics
    model: str  # its model folder, relative to the run (or comparison) directory
    train_time_s: Optional[float] = None  # its transfer arm's training (source and target stages)

    def to_dict(self) -> Dict[str, Any]:
        d = {"validation": self.validation, "test": self.test, "model": self.model}
        _put(d, "train_time_s", self.train_time_s)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Candidate":
        return cls(d.get("validation"), dict(d.get("test") or {}), d.get("model", ""), d.get("train_time_s"))


@dataclass
class AutoSelection:
    """Which candidate an automatic choice shipped as ``model/`` and why: ``results.json``'s ``auto``
    (``strategy: auto``) and ``comparison.json``'s ``selected`` (``compare --select``).

    ``candidates`` holds every candidate strategy in the order given, then ``baseline``.
    """

    chosen: str  # a candidate strategy's name, or "baseline"
    reason: str
    metric: str  # the validation metric the choice was made on (target_training.metric_for_best_model)
    candidates: Dict[str, Candidate] = field(default_factory=dict)

    def folder(self, name: str) -> str:
        """Where candidate ``name``'s model is, relative to the run (or comparison) directory."""
        return SHIPPED_FOLDER if name == self.chosen else self.candidates[name].model

    def to_dict(self) -> Dict[str, Any]:
        return {"chosen": self.chosen, "reason": self.reason, "metric": self.metric,
                "candidates": {name: c.to_dict() for name, c in self.candidates.items()}}

    @classmethod
    def from_dict(cls, d: Optional[Mapping[str, Any]]) -> Optional["AutoSelection"]:
        if not d:
            return None
        return cls(d["chosen"], d.get("reason", ""), d.get("metric", "accuracy"),
                   {name: Candidate.from_dict(c) for name, c in (d.get("candidates") or {}).items()})


@dataclass
class TargetResults:
    """The target task and both of its models' stages."""

    task: str
    label_names: List[str]
    test_rows: int
    data: DataSummary
    transfer: StageSummary
    baseline: Optional[StageSummary] = None  # None: no baseline was trained

    def to_dict(self) -> Dict[str, Any]:
        d = {"task": self.task, "label_names": self.label_names, "test_rows": self.test_rows,
             "data": self.data.to_dict(), "transfer": self.transfer.to_dict()}
        _put(d, "baseline", self.baseline.to_dict() if self.baseline else None)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TargetResults":
        return cls(d["task"], list(d.get("label_names") or []), d.get("test_rows"), DataSummary.from_dict(d.get("data")),
                   StageSummary.from_dict(d["transfer"]),
                   StageSummary.from_dict(d["baseline"]) if d.get("baseline") else None)


_RUN_KEYS = ("model", "seed", "strategy", "source", "target", "baseline_reused", "gain", "gain_ci",
             "negative_transfer", "noise_test", "verdict", "selected", "auto", "timings", "train_samples_per_s", "world_size",
             "plots", "seen_test_rows")


@dataclass
class RunResults:
    """A whole run: what ``results.json`` holds and ``run_transfer`` returns (as ``to_dict()``)."""

    model: str  # the base encoder's name or path
    seed: int
    strategy: Union[Dict[str, Any], str]  # the strategy's config ({"name": ..., options}); older runs: a name
    target: TargetResults
    verdict: Verdict = field(default_factory=Verdict)
    source: Optional[StageSummary] = None
    extra: Dict[str, Any] = field(default_factory=dict)  # a strategy's own top-level entries (after `source`)
    baseline_reused: bool = False  # the baseline came from an earlier run of `compare`
    timings: Dict[str, float] = field(default_factory=dict)
    train_samples_per_s: Dict[str, float] = field(default_factory=dict)
    world_size: int = 1
    plots: Optional[Dict[str, str]] = None  # plot name -> file, once the outputs are written
    selected: Optional[Selection] = None  # the arm shipped as model/ (None: a run from before the choice)
    # strategy: auto: every candidate's scores and which one model/ is; the results above are then the best
    # transfer candidate's (by validation) against the baseline
    auto: Optional[AutoSelection] = None
    # target test rows found in the training data (`data/overlap.py`); None: not counted (streamed data)
    seen_test_rows: Optional[Dict[str, Any]] = None

    def stages(self) -> Dict[str, StageSummary]:
        """The stages that ran, by name: ``source``, ``transfer``, ``baseline``."""
        named = {"source": self.source, "transfer": self.target.transfer, "baseline": self.target.baseline}
        return {name: stage for name, stage in named.items() if stage is not None}

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"model": self.model, "seed": self.seed, "strategy": self.strategy}
        _put(d, "source", self.source.to_dict() if self.source else None)
        d.update(self.extra)
        d["target"] = self.target.to_dict()
        if self.baseline_reused:
            d["baseline_reused"] = True
        d.update(self.verdict.to_dict())
        _put(d, "selected", self.selected.to_dict() if self.selected else None)
        _put(d, "auto", self.auto.to_dict() if self.auto else None)
        _put(d, "seen_test_rows", self.seen_test_rows)
        d.update(timings=self.timings, train_samples_per_s=self.train_samples_per_s, world_size=self.world_size)
        _put(d, "plots", self.plots)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunResults":
        return cls(model=d.get("model"), seed=d.get("seed"), strategy=d.get("strategy") or {"name": "finetune"},
                   target=TargetResults.from_dict(d["target"]), verdict=Verdict.from_dict(d),
                   source=StageSummary.from_dict(d["source"]) if d.get("source") else None,
                   extra=_unknown(d, _RUN_KEYS), baseline_reused=bool(d.get("baseline_reused")),
                   timings=dict(d.get("timings") or {}), train_samples_per_s=dict(d.get("train_samples_per_s") or {}),
                   world_size=d.get("world_size", 1), plots=d.get("plots"),
                   selected=Selection.from_dict(d.get("selected")), auto=AutoSelection.from_dict(d.get("auto")),
                   seen_test_rows=d.get("seen_test_rows"))

    @property
    def strategy_name(self) -> str:
        """The transfer arm's strategy (``results.json`` holds its config; older runs hold a name)."""
        return self.strategy if isinstance(self.strategy, str) else self.strategy.get("name", "finetune")

    def model_folder(self, arm: str) -> str:
        """Where ``arm``'s model (``transfer`` or ``baseline``) is, relative to the run directory:
        ``model/`` when it was shipped, else ``models/<arm>/``, or with ``strategy: auto``
        ``models/<strategy>/`` (``models/baseline/``)."""
        if self.auto is not None:
            return self.auto.folder(BASELINE_CANDIDATE if arm == "baseline" else self.strategy_name)
        return self.selected.folder(arm) if self.selected else SHIPPED_FOLDER

    @property
    def shipped_arm(self) -> str:
        """The arm in ``model/`` (the transfer model for a run from before runs chose)."""
        return self.selected.arm if self.selected else "transfer"

    def arm_stage(self, arm: str) -> Optional[StageSummary]:
        """The target stage of ``arm`` (``transfer`` or ``baseline``)."""
        return self.target.transfer if arm == "transfer" else self.target.baseline


def as_run_results(results: Union[RunResults, Mapping[str, Any]]) -> RunResults:
    """``results`` typed: a `RunResults` as is, a ``results.json`` dict read with ``from_dict``."""
    return results if isinstance(results, RunResults) else RunResults.from_dict(results)
