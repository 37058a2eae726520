"""The strategy registry, the base classes, and what every strategy shares.

A strategy decides how the *transfer arm* of a run is trained (what the source task
contributes and how); the run around it (data, tokenization, the no-transfer baseline, the
gain with its noise test, the negative-transfer flag, outputs) is the same for all of them
(``transfer.py``). A strategy is a config dataclass plus a :class:`Strategy` subclass,
registered by name (peft's ``register_peft_method`` pattern):

```python
from dataclasses import dataclass
from textransfer.strategies import Strategy, StrategyConfig, register_strategy

@dataclass
class MyConfig(StrategyConfig):
    strength: float = 0.1

@register_strategy("mine", MyConfig)
class Mine(Strategy):
    def train_transfer(self, run):
        ...  # return a TransferOutcome
```

and a recipe selects it with ``strategy: {name: mine, strength: 0.5}`` (or
``strategy.name=mine strategy.strength=0.5`` on the command line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import torch
from accelerate.utils import set_seed

from ..config import StrategyConfig
from ..training.stage import train_stage
from ..errors import ConfigError

@dataclass
class TransferOutcome:
    """What a strategy's transfer arm produced.

    Args:
        model: the final target model (saved as ``model/``).
        transfer (`dict`): the target-stage summary (``metrics``, ``history``, times...).
        test (`dict`): test predictions and references (``StageTrainer.evaluate``'s format).
        source (`dict`, *optional*): the source-stage summary, when there is one.
        extra (`dict`): anything strategy-specific for ``results.json``.
    """

    model: Any
    transfer: Dict[str, Any]
    test: Dict[str, Any]
    source: Optional[Dict[str, Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything loaded once per run, handed to a strategy."""

    cfg: Any
    accelerator: Any
    tokenizer: Any
    tasks: Dict[str, Any]
    tokenized: Dict[str, Any]
    checkpoint_root: Optional[Path] = None

    def train_stage(self, name, model, task_key: str, args, trainer_factory=None, aux_ds=None, train_ds=None):
        """Train ``model`` on task ``task_key`` (``"source"``/``"target"``) with ``args``;
        returns ``(trained model, summary, test predictions)`` (see ``transfer._train_stage``)."""
        return train_stage(name, model, self.tokenizer, self.tasks[task_key], self.tokenized[task_key], args,
                            self.cfg, self.accelerator, self.checkpoint_root,
                            trainer_factory=trainer_factory, aux_ds=aux_ds, train_ds=train_ds)

    def pretrained(self, task_key: str):
        """The pretrained encoder with a fresh head for task ``task_key``, under the run's seed."""
        from ..modeling.loading import load_for_classification

        set_seed(self.cfg.seed)
        return load_for_classification(self.cfg.model, self.tasks[task_key].label_names)

    def evaluate(self, model, task_key: str = "target", split: str = "test") -> Dict[str, Any]:
        """Metrics and predictions of ``model`` on a split (length-sorted order, as the baseline's)."""
        from ..training.trainer import StageTrainer

        trainer = StageTrainer(model, self.tokenizer, self.cfg.target_training, self.accelerator, self.cfg.metrics,
                               seed=self.cfg.seed)
        return trainer.evaluate(self.tokenized[task_key][split])

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

    def train_transfer(self, run: RunContext) -> TransferOutcome:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


# ---------------------------------------------------------------------------- shared pieces
def train_source_then_target(run: RunContext, source_factory=None, target_factory=None, aux_ds=None):
    """Parameter transfer: source stage, head swap, target stage (the ``finetune`` arm).

    ``source_factory`` / ``target_factory`` build each stage's trainer (default: `StageTrainer`).
    """
    from ..modeling.loading import swap_head

    run.require_source("finetune")
    model = run.pretrained("source")
    source_model, source_summary, _ = run.train_stage("source", model, "source", run.cfg.source_training,
                                                      trainer_factory=source_factory, aux_ds=aux_ds)
    source_summary["label_names"] = run.tasks["source"].label_names
    target_model = swap_head(unwrap(source_model), run.tasks["target"].label_names, seed=run.cfg.seed)
    del source_model
    model, summary, test = run.train_stage("target", target_model, "target", run.cfg.target_training,
                                           trainer_factory=target_factory)
    return TransferOutcome(model=unwrap(model), transfer=summary, test=test, source=source_summary)


def unwrap(model):
    """The Hugging Face model inside a strategy's wrapper module (or ``model`` itself)."""
    from ..modeling.layerwise import classification_model

    return classification_model(model)


def train_baseline(run: RunContext, kind: str):
    """The no-transfer baseline of ``kind`` -> ``(summary, test)``."""
    if kind == "target":
        model = run.pretrained("target")
        _, summary, test = run.train_stage("baseline", model, "target", run.cfg.target_training)
        return summary, test
    if kind == "source_only":
        run.require_shared_labels("source_only baseline")
        model = run.pretrained("source")
        trained, summary, _ = run.train_stage("baseline", model, "source", run.cfg.source_training)
        test = run.evaluate(unwrap(trained), "target", "test")
        summary = dict(summary, source_metrics=summary["metrics"], metrics=test["metrics"],
                       note="source-only: trained on the source without adaptation, tested on the target")
        return summary, test
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
    from ..training.trainer import StageTrainer

    cls = trainer_class or StageTrainer

    def factory(model, *args, head_parameters=None, **kw):
        wrapper = wrap(model)
        names = {f"model.{n}" for n in (head_parameters or [])}
        names |= {n for n, _ in wrapper.named_parameters() if not n.startswith("model.")}
        return cls(wrapper, *args, head_parameters=sorted(names), **kw, **kwargs)

    return factory
