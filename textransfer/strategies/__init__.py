"""Layer 6, strategies: how the transfer arm of a run is trained, one module each, registered
by name (``registry``); their options live in ``textransfer.config.strategies``.

May import: ``config``, ``data``, ``modeling``, ``metrics``, ``training`` and the leaves; a
strategy trains through ``training.stage.train_stage``, never through the run layer.

| name | what the source contributes |
| --- | --- |
| `finetune` | its fine-tuned encoder (parameter transfer; the default) |
| `scratch` | nothing: same architecture, re-initialised, trained on the target only |
| `features` | a frozen encoder whose features are computed once; a head trains on them |
| `l2sp` | fine-tuning pulled toward the source weights (L2-SP penalty) |
| `joint` | a shared encoder trained on both tasks at once, one head each |
| `dann` | domain-adversarial training on labelled source + unlabelled target text |
| `mmd` | source/target feature alignment by multi-kernel MMD |
| `coral` | source/target feature alignment by CORAL (covariances) |
| `udalm` | source classification mixed with masked-LM on unlabelled target text (one encoder) |
| `self_training` | a source model whose confident, class-balanced pseudo-labels of target text are trained on |
| `instance_weighting` | source examples weighted by a domain classifier's density ratio |
| `relational_distillation` | the source-tuned encoder's pairwise feature structure, kept on target batches |

Any strategy may add ``adaptive_pretraining`` (masked LM on domain text before a stage,
``training/pretraining.py``) and LP-FT (``*_training.head_warmup_steps``).

```python
import textransfer
print(textransfer.available_strategies())
cfg = textransfer.RunConfig.from_yaml("recipes/news_to_sentiment.yaml", overrides=["strategy.name=l2sp"])
```
"""

from ..config import StrategyConfig, strategy_config
from .base import Baseline, RunContext, Strategy, TransferOutcome, train_baseline
from .registry import available_strategies, get_strategy, register_strategy
from . import (finetune, scratch, features, l2sp, joint, dann, mmd, coral, udalm, self_training,  # noqa: E402, F401
               instance_weighting, relational_distillation)  # (importing them registers them)

__all__ = ["Baseline", "RunContext", "Strategy", "StrategyConfig", "TransferOutcome", "available_strategies", "get_strategy",
           "register_strategy", "strategy_config", "train_baseline"]
