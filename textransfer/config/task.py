"""One classification task's data options (``source:`` and ``target:`` sections)."""

from __future__ import annotations

import codecs
from typing import Any, List, Optional

from ..errors import ConfigError
from ..formats import DATA_FORMATS
from .paths import PACKAGE_PREFIX, map_task_paths, package_file
from .schema import option
from dataclasses import dataclass


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

    name: str = option("task", help="Short name used in reports and output folders.")
    path: Optional[str] = option(None, help="Hub dataset id or local file/folder.")
    dataset_config: Optional[str] = option(None, help="Hub dataset configuration name.")
    data_files: Optional[Any] = option(None, help="Local file, or {split: file}.")
    format: Optional[str] = option(None, help=f"One of {DATA_FORMATS}; inferred from the extension.")
    column_names: Optional[List[str]] = option(None, help="Column names for header-less csv/tsv.")
    delimiter: Optional[str] = option(None, help="CSV delimiter (tsv implies a tab).")
    quoting: Optional[int] = option(None, help="csv quoting mode (3 = QUOTE_NONE, for SST-2).")
    text_columns: List[str] = option(default_factory=lambda: ["text"], help="Text column(s); several are joined.")
    text_separator: str = option(" ", help="Separator used to join several text columns.")
    text_pair_column: Optional[str] = option(None, help="Second text of a sentence-pair task.")
    label_column: str = option("label", help="Label column.")
    label_names: Optional[List[str]] = option(None, help="Declared label set, in id order.")
    label_base: int = option(0, help="0 for 0-based integer labels, 1 for 1-based.")
    filters: List[str] = option(default_factory=list, help="Row filters, e.g. \"domain == 'books'\".")
    train_split: str = option("train", help="Split to train on.")
    validation_split: str = option("validation", help="Split evaluated each epoch.")
    test_split: str = option("test", help="Split for the final metrics.")
    validation_fraction: float = option(0.1, help="Share of train carved off when the validation split is missing.")
    test_fraction: float = option(0.2, help="Share of train carved off when the test split is missing.")
    split_seed: int = option(0, help="Seed of carved splits and sampling.")
    k_per_class: Optional[int] = option(None, help="Keep k labelled training examples per class.")
    max_train_samples: Optional[int] = option(None, help="Cap on training examples (seeded sample).")
    max_eval_samples: Optional[int] = option(None, help="Cap on validation/test examples (seeded sample).")
    empty_text: str = option("error", help="'error' or 'drop' rows with empty or null text.")
    streaming: bool = option(False, help="Stream the training split (larger than memory); needs max_steps.")
    encoding: str = option("utf-8", help="Text encoding of local csv/tsv/json files (e.g. latin-1, cp1252).")

    def __post_init__(self):
        self._resolve_package_paths()
        if self.path is None and self.data_files is None:
            raise ConfigError(f"task '{self.name}': set `path` (a Hub dataset id or local file) or `data_files`.",
                              option="path")
        if isinstance(self.text_columns, str):
            self.text_columns = [self.text_columns]
        if not self.text_columns:
            raise ConfigError(f"task '{self.name}': `text_columns` is empty; name at least one text column.",
                              option="text_columns")
        if self.format is not None and self.format not in DATA_FORMATS:
            raise ConfigError(
                f"task '{self.name}': unknown `format: {self.format}`; use one of {', '.join(DATA_FORMATS)}.",
                option="format")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ConfigError(f"task '{self.name}': unknown `encoding: {self.encoding}`; use a Python codec name "
                              f"such as utf-8, latin-1 or cp1252.", option="encoding") from None
        if self.label_base not in (0, 1):
            raise ConfigError(f"task '{self.name}': `label_base` must be 0 or 1, got {self.label_base}.",
                              option="label_base")
        if self.empty_text not in ("error", "drop"):
            raise ConfigError(f"task '{self.name}': `empty_text` must be 'error' or 'drop', got '{self.empty_text}'.",
                              option="empty_text")
        if self.k_per_class is not None and self.k_per_class < 1:
            raise ConfigError(f"task '{self.name}': `k_per_class` must be >= 1, got {self.k_per_class}.",
                              option="k_per_class")
        for frac_name in ("validation_fraction", "test_fraction"):
            frac = getattr(self, frac_name)
            if not 0.0 <= frac < 1.0:
                raise ConfigError(f"task '{self.name}': `{frac_name}` must be in [0, 1), got {frac}.", option=frac_name)
        if self.label_names is not None:
            self.label_names = [str(n) for n in self.label_names]
            if len(set(self.label_names)) != len(self.label_names):
                raise ConfigError(f"task '{self.name}': `label_names` has duplicates: {self.label_names}.",
                                  option="label_names")

    def option_name(self, option: str) -> str:
        """``option`` as a user writes it for this task: ``target.empty_text`` in a run's config
        (``RunConfig`` sets ``role``), the bare option for a task built on its own."""
        role = getattr(self, "role", None)
        return f"{role}.{option}" if role else option

    def _resolve_package_paths(self) -> None:
        map_task_paths(self, lambda p: package_file(p) if p.startswith(PACKAGE_PREFIX) else p)


