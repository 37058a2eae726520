"""Row transforms and checks that a table (``loading``) and a stream (``streaming``) share:
the configured columns must exist, ``filters`` are parsed and applied, text columns joined.

The transforms are classes, not closures, so that ``datasets`` can pickle and fingerprint
them and reuse its cached result.
"""

from __future__ import annotations

import ast
import operator
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..config import TaskConfig
from ..errors import ConfigError, DataError

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


def parse_filter(expr: str, task_name: str) -> Tuple[str, str, Any]:
    """Parse ``"column op value"``; the value is a Python literal or a bare word."""
    m = _FILTER_RE.match(expr)
    if not m:
        raise ConfigError(
            f"task '{task_name}': cannot parse filter '{expr}'. Write `column op value`, e.g. "
            f"\"domain == 'books'\" or \"rating >= 4\" (ops: == != < <= > >= in, not in)."
        )
    column, op, raw = m.group(1), re.sub(r"\s+", " ", m.group(2)), m.group(3)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare word such as books
    if op in ("in", "not in") and not isinstance(value, (list, tuple, set)):
        raise ConfigError(f"task '{task_name}': filter '{expr}': `{op}` needs a list, e.g. ['books', 'dvd'].")
    return column, op, value


class RowFilter:
    """Keep the rows where ``column op value`` holds (a null never matches)."""

    def __init__(self, column: str, op: str, value: Any):
        self.column, self.op, self.value = column, op, value

    def __call__(self, batch):
        fn = _OPS[self.op]
        return [v is not None and fn(v, self.value) for v in batch[self.column]]


class JoinText:
    """The ``text`` column (the text columns joined by ``sep``, blanks left out) and, for a pair
    task, ``text_pair``."""

    def __init__(self, columns: List[str], sep: str, pair: Optional[str]):
        self.columns, self.sep, self.pair = columns, sep, pair

    def __call__(self, batch):
        n = len(batch[self.columns[0]])
        out = {}
        texts = []
        for i in range(n):
            parts = [batch[c][i] for c in self.columns]
            parts = [str(p).strip() for p in parts if p is not None and str(p).strip()]
            texts.append(self.sep.join(parts))
        out["text"] = texts
        if self.pair:
            out["text_pair"] = [("" if v is None else str(v).strip()) for v in batch[self.pair]]
        return out


def check_columns(task: TaskConfig, columns: Sequence[str], split: str, origin: str) -> None:
    """The text, pair and label columns the task names must be among the split's ``columns``."""
    wanted = list(task.text_columns) + ([task.text_pair_column] if task.text_pair_column else [])
    wanted.append(task.label_column)
    for col in wanted:
        if col not in columns:
            option = "label_column" if col == task.label_column else (
                "text_pair_column" if col == task.text_pair_column else "text_columns")
            hint = ""
            if col == task.label_column:
                hint = (" If this split has no labels (like SST-2's test split), use another split for "
                        "`test_split`/`validation_split`.")
            raise DataError(
                f"task '{task.name}': column '{col}' (from `{option}`) not found in split '{split}' ({origin}). "
                f"Columns there: {columns}. Fix `{option}`, or set `column_names` for a file without a "
                f"header.{hint}"
            )


def check_filter_column(task: TaskConfig, column: str, columns: Sequence[str], split: str, origin: str) -> None:
    """A filter's column must be among the split's ``columns``."""
    if column not in columns:
        raise DataError(
            f"task '{task.name}': filter on column '{column}', which split '{split}' "
            f"({origin}) does not have. Columns there: {columns}."
        )
