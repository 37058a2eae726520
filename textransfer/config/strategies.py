"""Strategy options: the config dataclass of every built-in strategy, and the registry of
strategy names to config classes.

This module is a leaf that imports no torch, so ``RunConfig`` checks a strategy's name and
options (did-you-mean included) before any model code loads. Implementations live in
``textransfer/strategies/<name>.py`` and register themselves with
``textransfer.strategies.register_strategy(name, ConfigClass)``, which also records the config
class here; the built-in configs are registered below so that a config can be checked without
importing any implementation (peft keeps its registry maps in a leaf module the same way).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Type

from ..errors import ConfigError
from .schema import build, option

FEATURE_HEADS = ("linear", "logistic", "mlp")

_CONFIGS: Dict[str, Type["StrategyConfig"]] = {}


@dataclass
class StrategyConfig:
    """Options every strategy has.

    Args:
        name (`str`): the registered strategy name (``textransfer.available_strategies()``).
    """

    name: str = option("finetune", help="Strategy: finetune, scratch, features, l2sp, joint, dann, mmd, coral, udalm, "
                                        "self_training, instance_weighting, relational_distillation, or auto "
                                        "(choose among candidates).")


def register_strategy_config(name: str, config_class: Type[StrategyConfig]) -> None:
    """Record ``config_class`` as the options of strategy ``name``."""
    if not name.isidentifier():
        raise ValueError(f"strategy name {name!r} must be an identifier")
    if not (dataclasses.is_dataclass(config_class) and issubclass(config_class, StrategyConfig)):
        raise TypeError(f"{config_class!r} must be a dataclass subclassing StrategyConfig")
    if _CONFIGS.get(name, config_class) is not config_class:
        raise ValueError(f"a strategy named {name!r} is already registered with {_CONFIGS[name].__name__}")
    _CONFIGS[name] = config_class


def strategy_names() -> List[str]:
    """The names of every registered strategy."""
    return sorted(_CONFIGS)


def config_class_of(name: str) -> Type[StrategyConfig]:
    """The config class of strategy ``name``; an unknown name is a ConfigError with a did-you-mean."""
    if name not in _CONFIGS:
        close = difflib.get_close_matches(str(name), list(_CONFIGS), n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(f"unknown strategy `{name}`.{hint} Available: {', '.join(strategy_names())}.")
    return _CONFIGS[name]


def strategy_config(data: Any, prefix: str = "strategy.") -> StrategyConfig:
    """Build (and type-check) the config dataclass of the strategy named in ``data``.

    ``data`` is a mapping such as ``{"name": "l2sp", "alpha": 0.01}``, a bare name, ``None``
    (the default, ``finetune``), or already a `StrategyConfig`.
    """
    if isinstance(data, StrategyConfig):
        return data
    if data is None:
        data = {}
    if isinstance(data, str):
        data = {"name": data}
    if not isinstance(data, dict):
        raise ConfigError(f"`strategy` must be a mapping such as {{name: l2sp, alpha: 0.01}}, got {data!r}.")
    return build(config_class_of(data.get("name", "finetune")), data, prefix=prefix)


def require_non_negative(config: StrategyConfig, *names: str) -> None:
    """A ConfigError naming the first of ``names`` whose value is negative."""
    for name in names:
        if getattr(config, name) < 0:
            raise ConfigError(f"`strategy.{name}` must be >= 0, got {getattr(config, name)}.")


@dataclass
class FinetuneConfig(StrategyConfig):
    """The stages' ``*_training`` sections set ``finetune`` up.

    Args:
        target_labels (`bool`): fine-tune on the target labels after the source stage; ``false``
            tests the source model on the target without them (against the ``source_only``
            baseline): with ``adaptive_pretraining`` on target text before the source stage,
            that is DAPT for unsupervised domain adaptation.
    """

    target_labels: bool = option(True, help="finetune: train on the target labels (false: the source model is tested "
                                            "on the target, e.g. after adaptive pretraining on target text).")


@dataclass
class ScratchConfig(StrategyConfig):
    """``scratch`` has no options of its own; it trains with ``target_training``."""


@dataclass
class FeaturesConfig(StrategyConfig):
    """Args:
        head (`str`): ``linear``, ``logistic`` or ``mlp``.
        encoder (`str`): ``source`` (fine-tune on the source first, then freeze) or
            ``pretrained`` (freeze the pretrained encoder).
        head_learning_rate (`float`): AdamW rate of the linear / mlp head.
        mlp_hidden (`int`): no effect (kept so that older recipes load): the mlp head is the
            architecture's own classification head, whose hidden size is the model's.
        l2 (`float`): L2 penalty of the logistic head.
    """

    head: str = option("linear", help="features: head on the cached features: linear, logistic or mlp.")
    encoder: str = option("source", help="features: 'source' (source-tuned) or 'pretrained' frozen encoder.")
    head_learning_rate: float = option(1e-3, help="features: learning rate of the linear/mlp head.")
    mlp_hidden: int = option(256, help="features: no effect (older recipes): the mlp head is the architecture's own.")
    l2: float = option(1e-3, help="features: L2 penalty of the logistic head.")

    def __post_init__(self):
        if self.head not in FEATURE_HEADS:
            raise ConfigError(f"`strategy.head` must be one of {', '.join(FEATURE_HEADS)}, got '{self.head}'.")
        if self.encoder not in ("source", "pretrained"):
            raise ConfigError(f"`strategy.encoder` must be 'source' or 'pretrained', got '{self.encoder}'.")
        if self.head_learning_rate <= 0 or self.mlp_hidden < 1 or self.l2 < 0:
            raise ConfigError("`strategy.head_learning_rate` must be > 0, `mlp_hidden` >= 1 and `l2` >= 0.")


@dataclass
class L2SPConfig(StrategyConfig):
    """Args:
        alpha (`float`): weight of ``||w_encoder - w_source||^2 / 2``.
        beta (`float`): weight of ``||w_head||^2 / 2``.
    """

    alpha: float = option(0.01, help="l2sp: weight of ||w - w_source||^2 / 2 on the encoder.")
    beta: float = option(0.01, help="l2sp: weight of ||w_head||^2 / 2 on the new head.")

    def __post_init__(self):
        require_non_negative(self, "alpha", "beta")


@dataclass
class JointConfig(StrategyConfig):
    """Args:
        alpha (`float`): weight of the source loss; the target loss gets ``1 - alpha``.
    """

    alpha: float = option(0.5, help="joint: loss = alpha * L_source + (1 - alpha) * L_target.")

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"`strategy.alpha` must be in [0, 1], got {self.alpha}.")


@dataclass
class AdaptationConfig(StrategyConfig):
    """Options of every domain-adaptation strategy.

    Args:
        target_labels (`bool`): fine-tune on the target labels after adapting; ``false`` is
            unsupervised adaptation (the adapted source model is tested on the target).
        unlabelled_files (`list[str]`): files of unlabelled target text; empty means the target
            train split with its labels ignored.
        unlabelled_text_column (`str`): the text column of ``unlabelled_files``.
        max_unlabelled (`int`, *optional*): cap on unlabelled examples (seeded sample).
    """

    target_labels: bool = option(True, help="DA: also fine-tune on target labels (false: unsupervised DA).")
    unlabelled_files: List[str] = option(default_factory=list, help="DA: files of unlabelled target text (default: target train, labels ignored).")
    unlabelled_text_column: str = option("text", help="DA: text column of unlabelled_files.")
    max_unlabelled: Optional[int] = option(None, help="DA: cap on unlabelled target examples.")


@dataclass
class DANNConfig(AdaptationConfig):
    """Args:
        lambda_max (`float`): the reversal weight reached at the end of training.
        gamma (`float`): steepness of the schedule.
        domain_hidden (`int`): hidden units of the domain classifier.
        domain_dropout (`float`): dropout inside the domain classifier.
    """

    lambda_max: float = option(1.0, help="dann: final gradient-reversal weight.")
    gamma: float = option(10.0, help="dann: steepness of lambda_p = 2/(1+exp(-gamma p)) - 1.")
    domain_hidden: int = option(256, help="dann: hidden units of the domain classifier.")
    domain_dropout: float = option(0.1, help="dann: dropout inside the domain classifier.")

    def __post_init__(self):
        if not 0.0 <= self.domain_dropout < 1.0:
            raise ConfigError(f"`strategy.domain_dropout` must be in [0, 1); got {self.domain_dropout}.")
        if self.lambda_max < 0 or self.gamma <= 0 or self.domain_hidden < 1:
            raise ConfigError("`strategy.lambda_max` must be >= 0, `strategy.gamma` > 0 and "
                              f"`strategy.domain_hidden` >= 1; got {self.lambda_max}, {self.gamma}, {self.domain_hidden}.")


@dataclass
class MMDConfig(AdaptationConfig):
    """Args:
        weight (`float`): weight of the MMD term.
        kernel_multipliers (`list[float]`): Gaussian bandwidths, as multiples of the mean
            squared pairwise distance.
    """

    weight: float = option(1.0, help="mmd/coral: weight of the alignment loss.")
    kernel_multipliers: List[float] = option(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0],
                                            help="mmd: Gaussian bandwidths (x mean squared distance).")

    def __post_init__(self):
        if self.weight < 0:
            raise ConfigError(f"`strategy.weight` must be >= 0, got {self.weight}.")
        if not self.kernel_multipliers or any(float(m) <= 0 for m in self.kernel_multipliers):
            raise ConfigError(f"`strategy.kernel_multipliers` must be positive numbers, got {self.kernel_multipliers}.")
        self.kernel_multipliers = [float(m) for m in self.kernel_multipliers]


@dataclass
class CORALConfig(AdaptationConfig):
    """Args:
        weight (`float`): weight of the CORAL term.
    """

    weight: float = option(1.0, help="mmd/coral: weight of the alignment loss.")

    def __post_init__(self):
        if self.weight < 0:
            raise ConfigError(f"`strategy.weight` must be >= 0, got {self.weight}.")


@dataclass
class UDALMConfig(AdaptationConfig):
    """UDALM (Karouzos et al., NAACL 2021): the source stage minimises
    ``lambda * L_cls(source batch) + (1 - lambda) * L_mlm(target batch)`` on one encoder.

    Args:
        cls_weight (`float`, *optional*): ``lambda``. Unset (the default): the paper's
            weighting, ``lambda = n / (n + m)`` with ``n`` labelled source training examples and
            ``m`` unlabelled target examples, so each loss counts as much as its share of the
            data. (The paper draws mixed batches in that ratio; here every optimiser step takes
            one source batch and one target batch of ``batch_size`` each, and ``lambda`` sets the
            balance.)
        mlm_probability (`float`): share of the target batch's tokens masked (BERT's 15%, as
            in the paper: 80% of them become the mask token, 10% a random token, 10% stay).
        fresh_head_warmup (`float`): when the checkpoint has no masked-LM head (the paper's
            BERT has one; sentence-transformers models do not), the share of the steps in which
            the fresh head learns alone: its masked-LM loss does not reach the encoder, which
            meanwhile learns the source task. On Amazon books->kitchen with MiniLM and a random
            head from step 0, the source classifier collapsed (53.5% on the target).
    """

    cls_weight: Optional[float] = option(None, help="udalm: lambda in lambda * L_cls(source) + (1 - lambda) * "
                                                    "L_mlm(target); unset: the paper's n_source / (n_source + "
                                                    "n_unlabelled_target).")
    mlm_probability: float = option(0.15, help="udalm: share of target tokens masked.")
    fresh_head_warmup: float = option(0.25, help="udalm: share of steps in which a fresh (random) masked-LM head "
                                                 "learns alone (its loss does not reach the encoder).")

    def __post_init__(self):
        if self.cls_weight is not None and not 0.0 < self.cls_weight <= 1.0:
            raise ConfigError(f"`strategy.cls_weight` must be in (0, 1] (or null for the paper's n/(n+m)), "
                              f"got {self.cls_weight}.")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ConfigError(f"`strategy.mlm_probability` must be in (0, 1), got {self.mlm_probability}.")
        if not 0.0 <= self.fresh_head_warmup < 1.0:
            raise ConfigError(f"`strategy.fresh_head_warmup` must be in [0, 1), got {self.fresh_head_warmup}.")


@dataclass
class SelfTrainingConfig(AdaptationConfig):
    """The source model labels the unlabelled target text; each round, a student (starting from
    the source model) trains on the confident, class-balanced pseudo-labels, and labels the text
    for the next round. Both tasks need the same ``label_names``.

    Args:
        rounds (`int`): label-then-train rounds.
        threshold (`float`): keep a pseudo-label only when the model's probability is at least this.
        max_per_class (`int`, *optional*): keep at most this many per class (the most confident);
            unset: as many as the rarest class with confident examples has (class-balanced). A
            class with no confident example keeps its most confident predictions below the
            threshold, up to that cap, rather than emptying the balance or dropping out.
        with_source (`bool`): the rounds train on the source data too (labelled), not only on the
            pseudo-labelled target text (and, with ``target_labels``, the target's labels).
    """

    rounds: int = option(1, help="self_training: label-then-train rounds.")
    threshold: float = option(0.9, help="self_training: minimum probability of a kept pseudo-label.")
    max_per_class: Optional[int] = option(None, help="self_training: kept pseudo-labels per class (default: the "
                                                     "rarest class's count: balanced).")
    with_source: bool = option(True, help="self_training: rounds also train on the labelled source data.")

    def __post_init__(self):
        if self.rounds < 1:
            raise ConfigError(f"`strategy.rounds` must be >= 1, got {self.rounds}.")
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"`strategy.threshold` must be in [0, 1), got {self.threshold}.")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise ConfigError(f"`strategy.max_per_class` must be >= 1 (or null), got {self.max_per_class}.")


@dataclass
class InstanceWeightingConfig(AdaptationConfig):
    """Args:
        max_weight (`float`): source weights are clipped to ``[min_weight, max_weight]``.
        min_weight (`float`): lower clip of the weights.
        domain_l2 (`float`): L2 penalty of the logistic domain classifier.
    """

    max_weight: float = option(10.0, help="instance_weighting: upper clip of a source example's weight.")
    min_weight: float = option(0.1, help="instance_weighting: lower clip of a source example's weight.")
    domain_l2: float = option(1e-2, help="instance_weighting: L2 penalty of the logistic domain classifier.")

    def __post_init__(self):
        if not 0.0 <= self.min_weight <= self.max_weight or self.max_weight <= 0:
            raise ConfigError("`strategy.min_weight` and `strategy.max_weight` must satisfy 0 <= min <= max, max > 0; "
                              f"got {self.min_weight} and {self.max_weight}.")
        if self.domain_l2 < 0:
            raise ConfigError(f"`strategy.domain_l2` must be >= 0, got {self.domain_l2}.")


@dataclass
class RelationalDistillationConfig(StrategyConfig):
    """Args:
        distance_weight (`float`): weight of the distance-wise relational loss (Park et al., 2019).
        angle_weight (`float`): weight of the angle-wise relational loss.
    """

    distance_weight: float = option(1.0, help="relational_distillation: weight of the pairwise-distance loss.")
    angle_weight: float = option(2.0, help="relational_distillation: weight of the triplet-angle loss.")

    def __post_init__(self):
        require_non_negative(self, "distance_weight", "angle_weight")


AUTO = "auto"
# the name the no-transfer baseline goes by among an automatic choice's candidates
BASELINE_CANDIDATE = "baseline"


@dataclass
class AutoConfig(StrategyConfig):
    """``strategy: {name: auto, candidates: [finetune, l2sp]}``: train every candidate strategy (and
    the no-transfer baseline, which is always a candidate) and ship the one with the best
    **validation** score on ``target_training.metric_for_best_model`` (``run/auto.py``).

    ``auto`` has no implementation of its own in the strategy registry: ``run_transfer`` trains
    each candidate as a run of its own (as ``compare`` does) and chooses between them.

    Args:
        candidates (`list`): strategy names (each with its default options), or mappings with
            options such as ``{name: l2sp, alpha: 0.1}``; unique, at least one, and each using the
            target's labels (the choice is made on the target's validation split).
    """

    candidates: List[Any] = option(default_factory=lambda: ["finetune", "l2sp"],
                                   help="auto: strategies to train and choose among on validation, e.g. [finetune, "
                                        "l2sp] (the no-transfer baseline always competes too).")

    def __post_init__(self):
        # `strategy.candidates=finetune,l2sp` on the command line arrives as one string
        self.candidates = [part for c in self.candidates
                           for part in ([p.strip() for p in c.split(",") if p.strip()] if isinstance(c, str) else [c])]
        self.candidate_configs()  # every check, before any training

    def candidate_configs(self) -> Dict[str, StrategyConfig]:
        """Each candidate's config, by name, in the order given."""
        if not self.candidates:
            raise ConfigError("`strategy.candidates` is empty; name at least one strategy, e.g. [finetune, l2sp] "
                              "(the no-transfer baseline is always a candidate).", option="strategy.candidates")
        configs: Dict[str, StrategyConfig] = {}
        for entry in self.candidates:
            if (entry.get("name") if isinstance(entry, dict) else entry) == BASELINE_CANDIDATE:
                raise ConfigError("`strategy.candidates` names `baseline`: the no-transfer baseline is always a "
                                  "candidate; leave it out.", option="strategy.candidates")
            try:
                config = strategy_config(entry, prefix="strategy.candidates.")
            except ConfigError as err:  # an unknown name (with its did-you-mean) or a bad option
                raise ConfigError(f"`strategy.candidates`: {err}", option=err.option or "strategy.candidates") from None
            name = config.name
            if name == AUTO:
                raise ConfigError("`strategy.candidates` names `auto`: the candidates are the strategies to "
                                  "choose among; `auto` cannot be one of them.", option="strategy.candidates")
            if name in configs:
                raise ConfigError(f"`strategy.candidates` names `{name}` twice; each candidate once.",
                                  option="strategy.candidates")
            if getattr(config, "target_labels", True) is False:
                raise ConfigError(f"candidate `{name}` has `target_labels: false`, but `auto` chooses on the "
                                  f"target's validation labels; only strategies that train on them can compete.",
                                  option="strategy.candidates")
            configs[config.name] = config
        return configs


BUILTIN_CONFIGS = {"finetune": FinetuneConfig, "scratch": ScratchConfig, "features": FeaturesConfig,
                   "l2sp": L2SPConfig, "joint": JointConfig, "dann": DANNConfig, "mmd": MMDConfig,
                   "coral": CORALConfig, "udalm": UDALMConfig, "self_training": SelfTrainingConfig,
                   "instance_weighting": InstanceWeightingConfig,
                   "relational_distillation": RelationalDistillationConfig, AUTO: AutoConfig}
for _name, _cls in BUILTIN_CONFIGS.items():
    register_strategy_config(_name, _cls)
