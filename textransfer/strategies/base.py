"""The base classes of a strategy, and what every strategy shares.

A strategy decides how the *transfer arm* of a run is trained (what the source task
contributes and how); the run around it (data, tokenization, the no-transfer baseline, the
gain with its noise test, the negative-transfer flag, outputs) is the same for all of them
(``run/transfer.py``). A strategy is a config dataclass plus a :class:`Strategy` subclass,
registered by name (peft's ``register_peft_method`` pattern):

```python
from dataclasses import dataclass
from textransfer.strategies import Strategy, StrategyConfig, TransferOutcome, register_strategy

@dataclass
class MyConfig(StrategyConfig):
    strength: float = 0.1

@register_strategy("mine", MyConfig)
class Mine(Strategy):
    def train_transfer(self, run):
        stage = run.train_stage("target", run.pretrained("target"), "target", run.cfg.target_training)
        return TransferOutcome(model=stage.model, transfer=stage.summary, test=stage.test)
```

and a recipe selects it with ``strategy: {name: mine, strength: 0.5}`` (or
``strategy.name=mine strategy.strength=0.5`` on the command line).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Type

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..config import RunConfig, StrategyConfig
from ..config.pretraining import PRETRAINING_STAGES
from ..data.loading import TaskData
from ..errors import ConfigError
from ..modeling.layerwise import classification_model
from ..modeling.loading import load_for_classification, swap_head
from ..training.checkpointing import record_stage, stage_done
from ..training.pretraining import PretrainingTexts, pretraining_texts, train_adaptive_pretraining
from ..training.results import PretrainingSummary, StageSummary, TestPredictions
from ..training.stage import StageEnvironment, StageOutcome, StageSpec, TrainerFactory, train_stage
from ..training.stage_cache import CachedStage, StageCache, pretrained_stage_material, stage_key
from ..training.trainer import StageTrainer

logger = logging.getLogger(__name__)


@dataclass
class TransferOutcome:
    """What a strategy's transfer arm produced.

    Args:
        model (`PreTrainedModel`): the final target model, a plain sequence-classification model
            (whatever the strategy trained with, it ships as one; saved as ``model/``).
        transfer (`StageSummary`): the target stage's record.
        test (`TestPredictions`): the target test split's predictions and references.
        source (`StageSummary`, *optional*): the source stage's record, when there is one.
        extra (`dict`): anything strategy-specific for ``results.json``'s top level.
    """

    model: PreTrainedModel
    transfer: StageSummary
    test: TestPredictions
    source: Optional[StageSummary] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything loaded once per run, handed to a strategy."""

    cfg: RunConfig
    accelerator: Accelerator
    tokenizer: PreTrainedTokenizerBase
    tasks: Dict[str, TaskData]  # "source" (when there is one) and "target"
    tokenized: Dict[str, Any]  # task key -> its tokenized splits
    checkpoint_root: Optional[Path] = None
    # adaptive pretraining done in this run, by the stage it preceded ("source"/"target")
    pretraining: Dict[str, PretrainingSummary] = field(default_factory=dict)
    pretraining_data: Optional[PretrainingTexts] = None  # its texts, read once for both stages
    stage_cache: Optional[StageCache] = None  # None: every stage trains (`stage_cache: false`, --no-cache)

    @property
    def environment(self) -> StageEnvironment:
        """What every stage of this run shares."""
        return StageEnvironment(self.cfg, self.accelerator, self.tokenizer, self.checkpoint_root)

    def train_stage(self, name: str, model, task_key: str, args, trainer_factory: Optional[TrainerFactory] = None,
                    aux_ds=None, train_ds=None) -> StageOutcome:
        """Train ``model`` on task ``task_key`` (``"source"``/``"target"``) with ``args``;
        returns ``(trained model, summary, test predictions)`` (``training.stage.train_stage``), the
        model out of any wrapper ``trainer_factory`` put it in.

        A stage named ``source`` or ``target`` that ``adaptive_pretraining.before`` lists is
        preceded by adaptive pretraining of ``model``'s encoder (:meth:`pretrain_before`), so
        every strategy that trains its stages here gets it; ``baseline`` never does."""
        self.pretrain_before(name, model)
        spec = StageSpec(self.tasks[task_key].name, self.tokenized[task_key], args, trainer_factory, aux_ds, train_ds)
        # the module's `train_stage`, looked up at call time (a test spies on it)
        return train_stage(name, model, spec, self.environment)

    def train_from_pretrained(self, name: str, task_key: str, args) -> StageOutcome:
        """:meth:`train_stage` of the pretrained encoder with a fresh head (:meth:`pretrained`) on task
        ``task_key``: a stage whose result its inputs alone determine, so it is taken from the stage
        cache when an earlier run stored it, and stored there when it trains (``stage_cache.py``)."""
        material = self.cache_material(name, task_key, args)
        if material is None:
            return self.train_stage(name, self.pretrained(task_key), task_key, args)
        key = stage_key(material)
        cached = self.stage_cache.load(key)
        if cached is not None:
            return self.reuse_cached(name, cached)
        outcome = self.train_stage(name, self.pretrained(task_key), task_key, args)
        if self.accelerator.is_main_process:
            record = {"summary": outcome.summary.to_dict(), "test": outcome.test.to_dict()}
            if name in self.pretraining:
                record["pretraining"] = self.pretraining[name].to_dict()
            self.stage_cache.store(key, outcome.model, record, material)
        self.accelerator.wait_for_everyone()
        return outcome

    def cache_material(self, name: str, task_key: str, args) -> Optional[Dict[str, Any]]:
        """What keys stage ``name`` in the cache; None when it is not cached (cache off, a stage a
        killed run finished, which ``--resume`` reuses from the run's own record, or streamed data)."""
        if self.stage_cache is None or self.stage_finished(name):
            return None
        config = self.cfg.adaptive_pretraining
        pretraining = None
        if config is not None and name in config.before:  # the pretraining is part of the stage
            pretraining = (config, self.adaptive_pretraining_texts())
        return pretrained_stage_material(self.cfg, self.accelerator, self.tasks[task_key], task_key,
                                         self.tokenized[task_key], args, pretraining)

    def reuse_cached(self, name: str, cached: CachedStage) -> StageOutcome:
        """A stage from the cache, recorded in this run as if it had trained here (``--resume`` and
        the outputs find its model where they look for it), marked ``from_cache``."""
        summary = replace(StageSummary.from_dict(cached.record["summary"]), from_cache=cached.key)
        test = TestPredictions.from_dict(cached.record["test"])
        if "pretraining" in cached.record:
            self.pretraining[name] = PretrainingSummary.from_dict(cached.record["pretraining"])
        if self.checkpoint_root is not None:
            record_stage(self.checkpoint_root, name, {"summary": summary.to_dict(), "test": test.to_dict()},
                         model=cached.model, tokenizer=self.tokenizer, accelerator=self.accelerator)
        if self.accelerator.is_main_process:
            tqdm.write(f"[{name}] {summary.task}: reused from the stage cache ({self.stage_cache.entry(cached.key)}); "
                       f"--no-cache trains it again")
        return StageOutcome(cached.model, summary, test)

    def pretrain_before(self, name: str, model: PreTrainedModel) -> None:
        """Adaptive pretraining of ``model``'s encoder (in place) when ``adaptive_pretraining.before``
        lists stage ``name``; once per run and stage (``training/pretraining.py``).

        Every strategy trains its source stage before its target stage, so a target stage reached
        while pretraining before the source stage is configured but never ran means the strategy
        has no ``source`` stage: an error, before that target stage trains."""
        config = self.cfg.adaptive_pretraining
        if config is None or name not in PRETRAINING_STAGES:
            return
        if name == "target" and "source" in config.before and "source" not in self.pretraining:
            raise ConfigError(f"`adaptive_pretraining.before` lists `source`, but strategy `{self.cfg.strategy.name}` "
                              f"trains no source stage (it went straight to the target stage); set "
                              f"`adaptive_pretraining.before: [target]`.", option="adaptive_pretraining.before")
        if name not in config.before or name in self.pretraining:
            return
        # when the stage it precedes finished in a killed run, that stage's model is loaded, not this one's
        self.pretraining[name] = train_adaptive_pretraining(name, model, self.adaptive_pretraining_texts(), config,
                                                            self.environment, load_weights=not self.stage_finished(name))

    def adaptive_pretraining_texts(self) -> PretrainingTexts:
        """The adaptive-pretraining texts, read and tokenized once per run (both stages, and the stage
        cache's key, use the same ones)."""
        if self.pretraining_data is None:
            self.pretraining_data = pretraining_texts(self.cfg.adaptive_pretraining, self.tokenized, self.tokenizer,
                                                      self.cfg.model.max_length, self.cfg.seed, self.cfg.cache_dir)
        return self.pretraining_data

    def stage_finished(self, name: str) -> bool:
        """Whether a killed run finished stage ``name`` and ``--resume`` will reuse it."""
        return bool(self.cfg.resume and self.checkpoint_root is not None
                    and stage_done(self.checkpoint_root, name) is not None)

    def pretrained(self, task_key: str) -> PreTrainedModel:
        """The pretrained encoder with a fresh head for task ``task_key``, under the run's seed."""
        set_seed(self.cfg.seed)
        return load_for_classification(self.cfg.model, self.tasks[task_key].label_names)

    def evaluate(self, model, task_key: str = "target", split: str = "test") -> TestPredictions:
        """Metrics and predictions of ``model`` on a split (length-sorted order, as the baseline's)."""
        trainer = StageTrainer(model, self.tokenizer, self.cfg.target_training, self.accelerator, self.cfg.metrics,
                               seed=self.cfg.seed)
        return TestPredictions.from_dict(trainer.evaluate(self.tokenized[task_key][split]))

    def require_source(self, strategy: str) -> None:
        if "source" not in self.tasks:
            raise ConfigError(f"strategy `{strategy}` needs a `source:` task; add one, or use `strategy.name=scratch`.")

    def require_shared_labels(self, strategy: str) -> None:
        s, t = self.tasks["source"].label_names, self.tasks["target"].label_names
        if s != t:
            raise ConfigError(
                f"strategy `{strategy}` with `target_labels: false` tests the source model on the target, so both "
                f"tasks need the same `label_names` in the same order; source has {s}, target has {t}."
            )


class Strategy:
    """Base class: one way to train the transfer arm of a run.

    Class attributes:
        needs_source (`bool`): the strategy uses the source task.
        baseline_kind (`str`): which no-transfer baseline its gain is measured against:
            ``"target"`` (the pretrained encoder fine-tuned on the target, same budget and
            seed) or ``"source_only"`` (unsupervised adaptation: the source model trained
            without adaptation, tested on the target).
    """

    name: str = ""
    config_class: Type[StrategyConfig] = StrategyConfig
    needs_source: bool = True

    def __init__(self, config: StrategyConfig):
        self.config = config

    @property
    def baseline_kind(self) -> str:
        return "target"

    def pretraining_stages(self, cfg: RunConfig) -> Tuple[str, ...]:
        """The stages, among ``source`` and ``target``, that this strategy's transfer arm trains
        through `RunContext.train_stage` under those names in a run of ``cfg``: the ones
        ``adaptive_pretraining.before`` may list (checked before any training).

        The default: ``source`` when the run has a source task, ``target`` unless the strategy's
        ``target_labels`` is false. A strategy that trains other stages overrides it."""
        stages = ["source"] if cfg.source is not None else []
        if getattr(self.config, "target_labels", True):
            stages.append("target")
        return tuple(stages)

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


# ---------------------------------------------------------------------------- shared pieces
def check_adaptive_pretraining(cfg: RunConfig, strategy: Strategy) -> None:
    """``adaptive_pretraining.before`` lists only stages the strategy trains; said before any training."""
    config = cfg.adaptive_pretraining
    if config is None:
        return
    stages = strategy.pretraining_stages(cfg)
    missing = [s for s in config.before if s not in stages]
    if missing:
        trains = f"trains {', '.join(stages)}" if stages else "trains neither"
        raise ConfigError(f"`adaptive_pretraining.before` lists {missing}, but strategy `{strategy.name}` {trains} of "
                          f"the source and target stages in this run; set `adaptive_pretraining.before: "
                          f"[{', '.join(stages) or 'source'}]` or choose a strategy with that stage.",
                          option="adaptive_pretraining.before")


def pretraining_results(run: RunContext) -> Optional[Dict[str, Any]]:
    """The adaptive-pretraining records for ``results.json`` (``{source: ..., target: ...}``), or
    None when none was configured. A configured stage the strategy never trained is warned of."""
    config = run.cfg.adaptive_pretraining
    if config is None:
        return None
    missing = [s for s in config.before if s not in run.pretraining]
    if missing:
        message = (f"adaptive_pretraining.before lists {missing}, but strategy `{run.cfg.strategy.name}` trained no "
                   f"such stage, so no adaptive pretraining ran there")
        logger.warning(message)
        if run.accelerator.is_main_process:
            tqdm.write(f"Warning: {message}.")
    return {stage: run.pretraining[stage].to_dict() for stage in PRETRAINING_STAGES if stage in run.pretraining}


def source_model_on_target(run: RunContext, source: StageOutcome, note: str) -> TransferOutcome:
    """Unsupervised transfer: the source stage's model tested on the target (no target label
    used; both tasks share label names, `RunContext.require_shared_labels`)."""
    test = run.evaluate(source.model, "target", "test")
    summary = StageSummary(task=run.tasks["target"].name, metrics=test.metrics, history=[],
                           parameters=source.summary.parameters, trained=False, note=note)
    return TransferOutcome(model=source.model, transfer=summary, test=test, source=source.summary)


class Baseline(NamedTuple):
    """A no-transfer baseline's record and its predictions on the target test split."""

    summary: StageSummary
    test: TestPredictions


def train_source_then_target(run: RunContext, target_factory: Optional[TrainerFactory] = None) -> TransferOutcome:
    """Parameter transfer: source stage, head swap, target stage (the ``finetune`` arm).

    ``target_factory`` builds the target stage's trainer (default: `StageTrainer`; ``l2sp``'s).
    """
    run.require_source("finetune")
    source = run.train_from_pretrained("source", "source", run.cfg.source_training)
    target_model = swap_head(source.model, run.tasks["target"].label_names, seed=run.cfg.seed)
    target = run.train_stage("target", target_model, "target", run.cfg.target_training, trainer_factory=target_factory)
    return TransferOutcome(model=target.model, transfer=target.summary, test=target.test, source=source.summary)


def unwrap(model) -> PreTrainedModel:
    """The Hugging Face model inside a strategy's wrapper module (or ``model`` itself)."""
    return classification_model(model)


def train_baseline(run: RunContext, kind: str) -> Baseline:
    """The no-transfer baseline of ``kind`` (a `Strategy.baseline_kind`)."""
    if kind == "target":
        stage = run.train_from_pretrained("baseline", "target", run.cfg.target_training)
        return Baseline(stage.summary, stage.test)
    if kind == "source_only":
        run.require_shared_labels("source_only baseline")
        stage = run.train_from_pretrained("baseline", "source", run.cfg.source_training)
        test = run.evaluate(stage.model, "target", "test")
        summary = replace(stage.summary, source_metrics=stage.summary.metrics, metrics=test.metrics,
                          note="source-only: trained on the source without adaptation, tested on the target")
        return Baseline(summary, test)
    raise ValueError(f"unknown baseline kind {kind!r}")


def masked_mean(hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of the token states over real (unpadded) tokens: one vector per example."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def classify_with_features(model, batch: Dict[str, torch.Tensor]):
    """One forward pass of a Hugging Face classifier -> ``(outputs, pooled features)``.

    The features are the mean-pooled last hidden states: defined the same way for every
    architecture (the heads themselves pool differently: BERT's pooler, RoBERTa's first
    token), and the gradient of anything computed on them reaches every encoder layer.
    """
    out = model(**batch, output_hidden_states=True)
    return out, masked_mean(out.hidden_states[-1], batch.get("attention_mask"))


def model_inputs(batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``batch`` without its labels (unlabelled text)."""
    return {k: v for k, v in batch.items() if k != "labels"}


def make_factory(cls: Callable, **kwargs):
    """A ``trainer_factory`` building ``cls(model, tokenizer, args, accelerator, metrics, **kw, **kwargs)``."""

    def factory(*args, **kw):
        return cls(*args, **kw, **kwargs)

    return factory


def wrapping_trainer(wrap: Callable[[Any], torch.nn.Module], trainer_class=None, **kwargs):
    """A ``trainer_factory`` that puts the Hugging Face model inside ``wrap(model)`` (a module
    holding it as ``.model`` plus the strategy's extra heads) before training.

    The whole wrapper goes through ``accelerator.prepare``, so under DDP the extra heads'
    gradients are all-reduced like the encoder's. Head names are re-rooted (``model.``) and
    every parameter outside the Hugging Face model counts as a head (``head_learning_rate``).
    """
    cls = trainer_class or StageTrainer

    def factory(model, *args, head_parameters=None, **kw):
        wrapper = wrap(model)
        names = {f"model.{n}" for n in (head_parameters or [])}
        names |= {n for n, _ in wrapper.named_parameters() if not n.startswith("model.")}
        return cls(wrapper, *args, head_parameters=sorted(names), **kw, **kwargs)

    return factory
