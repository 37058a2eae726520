"""Layer 1, configuration: what a run is, as dataclasses with help, built from YAML and
command-line overrides, and checked before anything loads.

May import: ``textransfer.errors`` and ``textransfer.formats`` only (no torch, transformers,
datasets, accelerate or evaluate), so that a config error is reported at once.
"""

from .model import ModelConfig
from .run import DEFAULT_METRICS, RunConfig
from .schema import apply_overrides, option
from .strategies import (AutoConfig, StrategyConfig, config_class_of, register_strategy_config, strategy_config,
                         strategy_names)
from .task import TaskConfig
from .training import TrainingConfig

__all__ = ["ModelConfig", "RunConfig", "TaskConfig", "TrainingConfig", "StrategyConfig", "AutoConfig",
           "DEFAULT_METRICS", "apply_overrides", "option", "config_class_of", "register_strategy_config",
           "strategy_config", "strategy_names"]
