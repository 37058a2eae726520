"""The registry of strategy implementations: name -> (config class, `Strategy` subclass).

A strategy's config class is also recorded in the torch-free ``textransfer.config``
registry, so a config names and checks strategies without importing any implementation.
"""

from __future__ import annotations

from typing import Dict, List, Tuple, Type

from ..config import AutoConfig, StrategyConfig, config_class_of, register_strategy_config, strategy_config
from ..errors import ConfigError

_REGISTRY: Dict[str, Tuple[Type[StrategyConfig], type]] = {}


def register_strategy(name: str, config_class: Type[StrategyConfig]):
    """Class decorator: register a `Strategy` under ``name`` with its config dataclass."""
    register_strategy_config(name, config_class)

    def wrap(cls):
        if name in _REGISTRY and _REGISTRY[name][1] is not cls:
            raise ValueError(f"a strategy named {name!r} is already registered ({_REGISTRY[name][1].__name__})")
        cls.name = name
        cls.config_class = config_class
        _REGISTRY[name] = (config_class, cls)
        return cls

    return wrap


def available_strategies() -> List[str]:
    """The registered strategy names."""
    return sorted(_REGISTRY)


def get_strategy(config):
    """The strategy for ``config`` (a name, a mapping, or a `StrategyConfig`)."""
    cfg = strategy_config(config)
    config_class_of(cfg.name)  # an unknown name: the did-you-mean error
    if isinstance(cfg, AutoConfig):  # it trains its candidates, each a strategy of its own (run/auto.py)
        raise ConfigError("`auto` is not a strategy that trains by itself: `run_transfer` trains each of its "
                          "`candidates` and ships the best on validation; get the strategy of a candidate.")
    if cfg.name not in _REGISTRY:
        raise ConfigError(f"strategy `{cfg.name}` has options registered but no implementation; import the module "
                          f"that defines it (with @register_strategy) before running.")
    return _REGISTRY[cfg.name][1](cfg)
