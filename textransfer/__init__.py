"""textransfer: cross-domain text-classification transfer on the Hugging Face stack.

```python
import textransfer
cfg = textransfer.RunConfig.from_yaml("recipes/news_to_sentiment.yaml")
results = textransfer.run_transfer(cfg, output_dir="runs/demo")
print(textransfer.results_table(results))
```
"""

__version__ = "0.1.0"

from .config import ModelConfig, RunConfig, TaskConfig, TrainingConfig
from .data import TaskData, load_task, sample_per_class
from .errors import ConfigError, DataError, OutputDirError, TextransferError
from .freezing import FreezeReport, encoder_layers, freeze, parameter_report, unfreeze
from .metrics import compute_metrics, load_metric
from .modeling import attach_head, load_for_classification, load_tokenizer, save_model, swap_head
from .report import results_table
from .tokenization import tokenize_dataset, tokenize_splits
from .trainer import StageTrainer, make_accelerator
from .transfer import run_transfer
from .strategies import Strategy, StrategyConfig, available_strategies, get_strategy, register_strategy

__all__ = [
    "ModelConfig", "RunConfig", "TaskConfig", "TrainingConfig",
    "TaskData", "load_task", "sample_per_class",
    "ConfigError", "DataError", "OutputDirError", "TextransferError",
    "FreezeReport", "encoder_layers", "freeze", "parameter_report", "unfreeze",
    "compute_metrics", "load_metric",
    "attach_head", "load_for_classification", "load_tokenizer", "save_model", "swap_head",
    "results_table", "tokenize_dataset", "tokenize_splits",
    "StageTrainer", "make_accelerator", "run_transfer",
    "Strategy", "StrategyConfig", "available_strategies", "get_strategy", "register_strategy",
]
