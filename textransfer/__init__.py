"""textransfer: cross-domain text-classification transfer on the Hugging Face stack.

```python
import textransfer
cfg = textransfer.RunConfig.from_yaml("recipes/news_to_sentiment.yaml")
results = textransfer.run_transfer(cfg, output_dir="runs/demo")
print(textransfer.results_table(results))
```

The package is layered, and a module imports only from its own layer or those below it
(each folder's ``__init__`` says what it may import):

0. ``errors``, ``formats``, ``files``: leaves (no torch)
1. ``config/``: dataclasses with help, YAML and overrides, the strategy-options registry (no torch)
2. ``data/``: loading, streaming, tokenization, batching
3. ``modeling/``: encoders, heads, saving, freezing, parameter depths
4. ``metrics/``: scores, confusion matrix, paired bootstrap
5. ``training/``: the Accelerate loop, checkpoints, one stage end to end
6. ``strategies/``: the transfer arms
7. ``publish/``: results table and plots, model card, push to the Hub
8. ``inference/``: predict and evaluate
9. ``run/``: a whole run, and compare
10. ``cli``: the ``textransfer`` command

``import textransfer`` is instant: the public names below are resolved on first use (PEP 562),
so torch, transformers, datasets, accelerate and evaluate load only when something needs them.
"""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "ModelConfig": "config", "RunConfig": "config", "TaskConfig": "config", "TrainingConfig": "config",
    "ConfigError": "errors", "DataError": "errors", "OutputDirError": "errors", "TextransferError": "errors",
    "TaskData": "data.loading", "load_task": "data.loading", "sample_per_class": "data.loading",
    "FreezeReport": "modeling.freezing", "encoder_layers": "modeling.freezing", "freeze": "modeling.freezing",
    "parameter_report": "modeling.freezing", "unfreeze": "modeling.freezing",
    "compute_metrics": "metrics.scores", "load_metric": "metrics.scores",
    "attach_head": "modeling.loading", "load_for_classification": "modeling.loading",
    "load_tokenizer": "modeling.loading", "save_model": "modeling.loading", "swap_head": "modeling.loading",
    "results_table": "publish.report",
    "tokenize_dataset": "data.tokenization", "tokenize_splits": "data.tokenization",
    "StageTrainer": "training.trainer", "make_accelerator": "training.accelerator",
    "run_transfer": "run.transfer", "rank": "run.rank", "RankConfig": "config.rank",
    "Strategy": "strategies", "StrategyConfig": "config", "available_strategies": "strategies",
    "get_strategy": "strategies", "register_strategy": "strategies",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    """Import the module behind a public name on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'textransfer' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .config import ModelConfig, RunConfig, StrategyConfig, TaskConfig, TrainingConfig
    from .data.loading import TaskData, load_task, sample_per_class
    from .data.tokenization import tokenize_dataset, tokenize_splits
    from .errors import ConfigError, DataError, OutputDirError, TextransferError
    from .metrics.scores import compute_metrics, load_metric
    from .modeling.freezing import FreezeReport, encoder_layers, freeze, parameter_report, unfreeze
    from .modeling.loading import attach_head, load_for_classification, load_tokenizer, save_model, swap_head
    from .publish.report import results_table
    from .config.rank import RankConfig
    from .run.rank import rank
    from .run.transfer import run_transfer
    from .strategies import Strategy, available_strategies, get_strategy, register_strategy
    from .training.accelerator import make_accelerator
    from .training.trainer import StageTrainer
