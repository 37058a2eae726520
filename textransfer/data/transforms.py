"""Row transforms and checks that a table (``loading``) and a stream (``streaming``) share:
the configured columns must exist, ``filters`` are parsed and applied, and the user's columns
are turned into the package's own schema.

The schema: every loaded split has only the columns ``row`` (1-based row number in its source
split), ``text`` (the text columns joined), ``text_pair`` (pair tasks) and ``labels`` (0-based
ids). The user's columns are read once, by :class:`ToSchema`, and all of them are dropped in
that same step, so a user's column may have any name, ours included (``labels``, ``text``,
``row``, ``input_ids``...): no name of theirs ever meets one of ours.

The transforms are classes, not closures, so that ``datasets`` can pickle and fingerprint
them and reuse its cached result.
"""

from __future__ import annotations

import ast
import operator
import re
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from datasets import Features, Value

from ..config import TaskConfig
from ..errors import ConfigError, DataError

# The loaded splits' columns (see the module docstring); tokenization and batching rely on them.
ROW, TEXT, TEXT_PAIR, LABELS = "row", "text", "text_pair", "labels"
# The label as the data holds it (a string, an int, a ClassLabel id), between reading the user's
# columns and mapping it to an id in LABELS; never in a loaded split.
LABEL_VALUE = "label_value"

_OPS: Dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "not in": lambda a, b: a not in b,
    "in": lambda a, b: a in b,
}
# `in` / `not in` are whole words: without \b, "domain is books" parsed as column "doma", op "in".
_FILTER_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|<=|>=|<|>|\bnot\s+in\b|\bin\b)\s*(.+?)\s*$")


def parse_filter(expr: str, task: TaskConfig) -> Tuple[str, str, Any]:
    """Parse ``"column op value"``; the value is a Python literal or a bare word."""
    m = _FILTER_RE.match(expr)
    option = task.option_name("filters")
    if not m:
        raise ConfigError(
            f"task '{task.name}': cannot parse filter '{expr}' in `{option}`. Write `column op value`, e.g. "
            f"\"domain == 'books'\" or \"rating >= 4\" (ops: == != < <= > >= in, not in).", option=option
        )
    column, op, raw = m.group(1), re.sub(r"\s+", " ", m.group(2)), m.group(3)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare word such as books
    if op in ("in", "not in") and not isinstance(value, (list, tuple, set)):
        raise ConfigError(f"task '{task.name}': filter '{expr}' in `{option}`: `{op}` needs a list, "
                          f"e.g. ['books', 'dvd'].", option=option)
    return column, op, value


class RowFilter:
    """Keep the rows where ``column op value`` holds (a null never matches)."""

    def __init__(self, column: str, op: str, value: Any):
        self.column, self.op, self.value = column, op, value

    def __call__(self, batch):
        fn = _OPS[self.op]
        return [v is not None and fn(v, self.value) for v in batch[self.column]]


def fresh_column(name: str, columns: Sequence[str]) -> str:
    """``name``, or ``_name``, ``__name``...: the first that is not among ``columns`` (a column
    we add beside the user's before their columns are dropped, e.g. the row numbers)."""
    while name in columns:
        name = "_" + name
    return name


class ToSchema:
    """The user's columns as the package's schema: ``row`` (from ``row_column``), ``text`` (the
    text columns joined by ``sep``, blanks left out), ``text_pair`` for a pair task, and the raw
    label in ``label_value``. Applied with every input column removed."""

    def __init__(self, task: TaskConfig, row_column: str):
        self.columns, self.sep, self.pair = list(task.text_columns), task.text_separator, task.text_pair_column
        self.label, self.row = task.label_column, row_column

    def __call__(self, batch):
        texts = []
        for parts in zip(*(batch[c] for c in self.columns)):
            parts = [str(p).strip() for p in parts if p is not None and str(p).strip()]
            texts.append(self.sep.join(parts))
        out = {ROW: batch[self.row], TEXT: texts, LABEL_VALUE: batch[self.label]}
        if self.pair:
            out[TEXT_PAIR] = [("" if v is None else str(v).strip()) for v in batch[self.pair]]
        return out


def schema_features(task: TaskConfig, features: Optional[Features]) -> Optional[Features]:
    """The features :class:`ToSchema` gives, the label's kept as the data declares it (a Hub
    dataset's ``ClassLabel`` keeps its names); None when the data's features are not known yet
    (a stream of json lines)."""
    if not features or task.label_column not in features:
        return None
    out = {ROW: Value("int64"), TEXT: Value("string"), LABEL_VALUE: features[task.label_column]}
    if task.text_pair_column:
        out[TEXT_PAIR] = Value("string")
    return Features(out)


def check_columns(task: TaskConfig, columns: Sequence[str], split: str, origin: str) -> None:
    """The text, pair and label columns the task names must be among the split's ``columns``."""
    wanted = list(task.text_columns) + ([task.text_pair_column] if task.text_pair_column else [])
    wanted.append(task.label_column)
    for col in wanted:
        if col not in columns:
            option = task.option_name("label_column" if col == task.label_column else (
                "text_pair_column" if col == task.text_pair_column else "text_columns"))
            hint = ""
            if col == task.label_column:
                hint = (f" If this split has no labels (like SST-2's test split), use another split for "
                        f"`{task.option_name('test_split')}`/`{task.option_name('validation_split')}`.")
            raise DataError(
                f"task '{task.name}': column '{col}' (from `{option}`) not found in split '{split}' ({origin}). "
                f"Columns there: {list(columns)}. Fix `{option}`, or set `{task.option_name('column_names')}` "
                f"for a file without a header.{hint}"
            )


def filter_column(task: TaskConfig, column: str, columns: Sequence[str], row_column: str, split: str,
                  origin: str) -> str:
    """The column a filter reads: one of the split's ``columns``; a filter on ``row`` where the
    data has no such column reads the row numbers (``row_column``)."""
    if column in columns:
        return column
    if column == ROW:
        return row_column
    raise DataError(
        f"task '{task.name}': filter on column '{column}' (from `{task.option_name('filters')}`), which split "
        f"'{split}' ({origin}) does not have. Columns there: {list(columns)}."
    )
