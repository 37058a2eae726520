"""A whole run's configuration: the sections above plus the run's own options.

```python
from textransfer import RunConfig
cfg = RunConfig.from_yaml("recipes/news_to_sentiment.yaml",
                          overrides=["target.k_per_class=16", "target_training.num_epochs=3"])
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import yaml

from ..errors import ConfigError
from .model import ModelConfig
from .paths import relative_to, resolve_task_paths
from .pretraining import AdaptivePretrainingConfig
from .schema import apply_overrides, build, option
from .strategies import AUTO, strategy_config
from .task import TaskConfig
from .training import TrainingConfig

DEFAULT_METRICS = ("accuracy", "f1", "precision", "recall")
SHIP_CHOICES = ("best", "transfer", "baseline")


@dataclass
class RunConfig:
    """A whole transfer run: source stage, target stage, and the no-transfer baseline.

    Args:
        model (`ModelConfig`): the pretrained encoder.
        source (`TaskConfig`): the labelled source task.
        target (`TaskConfig`): the target task.
        source_training / target_training (`TrainingConfig`): each stage's training; the
            baseline uses ``target_training`` so that both sides get the same budget.
        baseline (`bool`): also train the no-transfer baseline (needed for gain and the
            negative-transfer flag).
        metrics (`list[str]`): metrics computed on validation and test.
        seed (`int`): seed of model init, shuffling and dropout.
        mixed_precision (`str`): ``"no"``, ``"fp16"`` or ``"bf16"`` (Accelerate).
        output_dir (`str`, *optional*): where results and the model go.
        overwrite_output_dir (`bool`): allow writing into a non-empty output directory.
        cache_dir (`str`, *optional*): datasets cache (tokenization results are reused from it).
        strategy (`StrategyConfig`): how the transfer arm is trained, e.g.
            ``{name: l2sp, alpha: 0.01}``; each strategy's options are its config dataclass's
            fields (``textransfer/strategies``). Defaults to ``finetune``.
        adaptive_pretraining (`AdaptivePretrainingConfig`, *optional*): masked-LM training of the
            encoder on unlabelled text before the source and/or target stage
            (``config/pretraining.py``); the no-transfer baseline never gets it.
        resume (`bool`): continue the run in ``output_dir`` from its last complete checkpoint
            (``textransfer run ... --resume``); finished stages are not trained again.
        stage_cache (`bool`): reuse a finished stage that starts from the pretrained encoder (the
            source stage, a baseline, with any adaptive pretraining before it) when an earlier run
            stored one with the same inputs: model, data content, training config, seed, precision,
            versions (``training/stage_cache.py``); ``--no-cache`` sets it false.
        stage_cache_dir (`str`, *optional*): the cache's folder (default: ``$TEXTRANSFER_CACHE``,
            else ``~/.cache/textransfer``).
        push_to_hub (`bool`): push the target model, tokenizer and card to ``hub_repo_id`` at the
            end (main process only); ``hub_private`` / ``hub_revision`` as in ``textransfer push``.
    """

    # training options given at the top level, as in a transformers Trainer script -> ours
    ALIASES: ClassVar[Dict[str, Tuple[str, str]]] = {
        name: (f"`target_training.{ours}` (or `source_training.{ours}`)", "an option of each training section")
        for name, ours in {**{k: v[0] for k, v in TrainingConfig.ALIASES.items() if "`" not in v[0]},
                           "learning_rate": "learning_rate", "num_epochs": "num_epochs",
                           "batch_size": "batch_size", "weight_decay": "weight_decay",
                           "warmup_ratio": "warmup_ratio", "max_steps": "max_steps"}.items()}

    model: ModelConfig = option(default_factory=ModelConfig, help="The pretrained encoder.")
    source: Optional[TaskConfig] = option(None, help="The labelled source task (omit for target-only strategies).")
    target: Optional[TaskConfig] = option(None, help="The target task.")
    source_training: TrainingConfig = option(default_factory=TrainingConfig, help="Training of the source stage.")
    target_training: TrainingConfig = option(default_factory=TrainingConfig, help="Training of the target stage and of the baseline.")
    baseline: bool = option(True, help="Train the no-transfer baseline.")
    metrics: List[str] = option(default_factory=lambda: list(DEFAULT_METRICS), help="Metrics to compute.")
    seed: int = option(42, help="Seed of init, shuffling and dropout.")
    mixed_precision: str = option("no", help="no, fp16 or bf16.")
    output_dir: Optional[str] = option(None, help="Where results and the model go.")
    overwrite_output_dir: bool = option(False, help="Allow writing into a non-empty output directory.")
    cache_dir: Optional[str] = option(None, help="datasets cache directory.")
    noise_resamples: int = option(1000, help="Paired bootstrap resamples for the negative-transfer test.")
    strategy: Any = option(None, help="Transfer strategy and its options, e.g. {name: l2sp, alpha: 0.01}.")
    resume: bool = option(False, help="Continue the run in output_dir from its last complete checkpoint.")
    stage_cache: bool = option(True, help="Reuse finished stages (source, baseline, with their adaptive pretraining) "
                                          "that an earlier run with the same inputs stored; false: train every stage.")
    stage_cache_dir: Optional[str] = option(None, help="Where the stage cache lives (default: $TEXTRANSFER_CACHE, "
                                                       "else ~/.cache/textransfer).")
    adaptive_pretraining: Optional[AdaptivePretrainingConfig] = option(
        None, help="Masked-LM training on unlabelled domain text before the source and/or target stage "
                   "(e.g. {before: [source], text: target}); the baseline does not get it.")
    push_to_hub: bool = option(False, help="Push the target model and its card to the Hub at the end of the run.")
    hub_repo_id: Optional[str] = option(None, help="Hub repo to push to (user/name).")
    hub_private: bool = option(False, help="Create the Hub repo private.")
    hub_revision: Optional[str] = option(None, help="Hub branch to push to (default: main).")
    ship: str = option("best", help="Target model saved as model/ (and pushed): best (higher validation score; "
                                    "the adapted model without target labels), transfer or baseline.")
    keep_checkpoints: bool = option(False, help="Keep stage records and step checkpoints once the run has finished.")
    report_to: List[str] = option(default_factory=list, help="Experiment trackers (Accelerate's log_with): "
                                                              "tensorboard, wandb, mlflow, trackio, ... or all.")
    logging_steps: int = option(50, help="Log the training loss and learning rate to report_to every N optimiser steps.")
    license: Optional[str] = option(None, help="Model card license when the base model's card names none (e.g. apache-2.0).")
    language: Optional[List[str]] = option(None, help="Model card language(s) of the text, e.g. [en].")

    def __post_init__(self):
        if self.target is None:
            raise ConfigError("the config has no `target` task; add a `target:` section.")
        self.strategy = strategy_config(self.strategy)
        if self.strategy.name == AUTO and not self.baseline:
            raise ConfigError("`strategy: auto` always counts the no-transfer baseline among its candidates (it is "
                              "shipped when it scores best on validation); remove `baseline: false`.", option="baseline")
        for role in ("source", "target"):
            task = getattr(self, role)
            if task is not None:  # not a field: error messages name `target.format`, not `format`
                task.role = role
        self.check_adaptive_pretraining()
        if self.push_to_hub and not self.hub_repo_id:
            raise ConfigError("`push_to_hub: true` needs `hub_repo_id` (user/name) to push to.")
        if self.ship not in SHIP_CHOICES:
            raise ConfigError(f"`ship` must be one of {', '.join(SHIP_CHOICES)}, got '{self.ship}'.", option="ship")
        if self.logging_steps < 1:
            raise ConfigError(f"`logging_steps` must be >= 1, got {self.logging_steps}.", option="logging_steps")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ConfigError(f"`mixed_precision` must be no, fp16 or bf16, got '{self.mixed_precision}'.")
        if not self.metrics:
            raise ConfigError("`metrics` is empty; the default is accuracy, f1, precision, recall.")
        if self.target.streaming:
            raise ConfigError("`target.streaming` is not supported: streaming is for a large source task; the "
                              "target, its baseline and strategies need the target split as a table.")
        if self.source is not None and self.source.streaming and self.source_training.max_steps is None:
            raise ConfigError("`source.streaming: true` needs `source_training.max_steps`: a stream has no length, "
                              "so the budget is optimiser steps, not epochs. Set e.g. source_training.max_steps=1000.")
        for stage in ("source_training", "target_training"):
            metric = getattr(self, stage).metric_for_best_model
            if metric not in self.metrics:
                raise ConfigError(
                    f"`{stage}.metric_for_best_model: {metric}` is not among `metrics` {self.metrics}; add it there."
                )

    def check_adaptive_pretraining(self) -> None:
        """Adaptive pretraining on source text, or before the source stage, needs a source task."""
        pretraining = self.adaptive_pretraining
        if pretraining is None or self.source is not None:
            return
        if pretraining.text in ("source", "both") or "source" in pretraining.before:
            raise ConfigError("`adaptive_pretraining` uses the source task (`text: source|both` or `before: [source]`) "
                              "but the config has no `source:` task; add one, or set `adaptive_pretraining.before: "
                              "[target]` and `adaptive_pretraining.text: target`.", option="adaptive_pretraining")

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], base_dir: Optional[Path] = None) -> "RunConfig":
        cfg = build(cls, data, prefix="")
        if base_dir is not None:
            for task in (cfg.source, cfg.target):
                if task is not None:
                    resolve_task_paths(task, base_dir)
            # a strategy's own files (dann/mmd/coral's unlabelled text) resolve the same way
            resolve = relative_to(base_dir)
            if getattr(cfg.strategy, "unlabelled_files", None):
                cfg.strategy.unlabelled_files = [resolve(f) for f in cfg.strategy.unlabelled_files]
            if cfg.adaptive_pretraining is not None and cfg.adaptive_pretraining.files:
                cfg.adaptive_pretraining.files = [resolve(f) for f in cfg.adaptive_pretraining.files]
        return cfg

    @classmethod
    def from_yaml(cls, path, overrides: Optional[List[str]] = None) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of options.")
        data = apply_overrides(data, overrides or [])
        try:
            return cls.from_dict(data, base_dir=path.parent)
        except ConfigError as err:
            blamed = override_behind(err, overrides or [])
            where = f"command-line override `{blamed}`" if blamed else str(path)
            raise ConfigError(f"{where}: {err}", option=err.option) from None


def override_behind(err: ConfigError, overrides: List[str]) -> Optional[str]:
    """The command-line override an error is about (the last one setting its option), if any.

    An error names its option (``err.option``), or, from a check across options, mentions it in
    backticks; either way a typo on the command line is not blamed on the YAML file.
    """
    for item in reversed(overrides):
        key = (item[2:] if item.startswith("--") else item).split("=", 1)[0]
        if err.option is not None and (err.option == key or err.option.startswith(key + ".")):
            return item
        if err.option is None and f"`{key.split('.')[-1]}" in str(err) and key.split(".")[0] in str(err):
            return item
    return None
