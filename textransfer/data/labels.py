"""A table's labels: the label set (declared, a ``ClassLabel``'s names, or inferred from the
training split), checks that name every unexpected value with the rows that hold it, and the
mapping of each label to its 0-based id.

The labels are read from ``LABEL_VALUE`` (the user's label column, whatever its name, as
``transforms.ToSchema`` put it) and the ids are written to ``LABELS``.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from datasets import ClassLabel, Dataset

from ..config import TaskConfig
from ..errors import DataError
from .transforms import LABEL_VALUE, LABELS, ROW

logger = logging.getLogger(__name__)

SHOWN_ROWS = 5  # rows listed in an error message before "..."
_SHOWN_VALUES = 5  # distinct unexpected labels listed, each with its rows, before "..."
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")  # a string label that is a number ("0", "1")


def column(ds: Dataset, name: str) -> List[Any]:
    """One column as a Python list.

    ``ds[name]`` is a lazy ``Column`` in datasets >= 4 whose iteration decodes row by row: on
    SST-2's 67k rows that took ~17 s of a 18 s load. Through Arrow it is one conversion.
    """
    return ds.with_format("arrow")[name].to_pylist()


def rows_str(rows: List[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > SHOWN_ROWS else "")


def rows_by_value(pairs: Sequence[Tuple[int, Any]]) -> str:
    """``"label '0' in row(s) 4, 9; label '1' in row(s) 6"``: each value with its own rows, in
    the order the values first appear."""
    groups: Dict[Any, List[int]] = {}
    for row, value in pairs:
        groups.setdefault(value, []).append(row)
    shown = [f"label {v!r} in row(s) {rows_str(rows)}" for v, rows in list(groups.items())[:_SHOWN_VALUES]]
    more = f"; ... ({len(groups)} labels in all)" if len(groups) > _SHOWN_VALUES else ""
    return "; ".join(shown) + more


def is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


class MapLabels:
    """Label ids: string labels through the name -> id mapping, integer ones less ``label_base``."""

    def __init__(self, mapping: Optional[Dict[Any, int]], offset: int):
        self.mapping, self.offset = mapping, offset

    def __call__(self, batch):
        values = batch[LABEL_VALUE]
        if self.mapping is not None:
            return {LABELS: [self.mapping[v] for v in values]}
        return {LABELS: [int(v) - self.offset for v in values]}


def label_set(task: TaskConfig, train: Dataset, origin: str) -> Tuple[List[str], Optional[Dict[Any, int]]]:
    """Label names and (for string labels) the value -> id mapping."""
    feature = train.features[LABEL_VALUE]
    if task.label_names is not None:
        names = task.label_names
    elif isinstance(feature, ClassLabel):
        names = list(feature.names)
    else:
        values = [v for v in column(train, LABEL_VALUE) if not is_missing(v)]
        if values and all(isinstance(v, str) for v in values):
            _check_not_mixed(task, train, origin)
            names = sorted(set(values))
        else:
            names = _integer_names(task, values)
    is_string = feature.dtype in ("string", "large_string") if hasattr(feature, "dtype") else False
    mapping = {name: i for i, name in enumerate(names)} if is_string else None
    return names, mapping


def _integer_names(task: TaskConfig, values: List[Any]) -> List[str]:
    """``"0"``, ``"1"``... up to the largest integer label."""
    ints = sorted({int(v) for v in values})
    if not ints:
        raise DataError(f"task '{task.name}': the train split has no labels in column '{task.label_column}'.")
    if task.label_base == 0 and ints[0] == 1:
        # Not an error (a class may be absent from train), but usually 1-based labels:
        # the model would get an extra class "0" that no example has.
        logger.warning(
            "task '%s': labels in column '%s' run %d..%d with no 0; if they are 1-based, set "
            "`%s: 1` (or declare `%s`), else class '0' has no examples.",
            task.name, task.label_column, ints[0], ints[-1], task.option_name("label_base"),
            task.option_name("label_names"))
    return [str(i) for i in range(max(ints) - task.label_base + 1)]


def _check_not_mixed(task: TaskConfig, train: Dataset, origin: str) -> None:
    """String labels that mix numbers and words (``positive`` beside ``0``/``1``) are a mix-up,
    not a four-class task: name the rows of the rarer kind, value by value."""
    pairs = [(r, v) for r, v in zip(column(train, ROW), column(train, LABEL_VALUE)) if not is_missing(v)]
    numbers = [(r, v) for r, v in pairs if _INTEGER.fullmatch(v)]
    words = [(r, v) for r, v in pairs if not _INTEGER.fullmatch(v)]
    if not numbers or not words:
        return
    odd, usual = (numbers, words) if len(numbers) <= len(words) else (words, numbers)
    usual_values = sorted({v for _, v in usual})
    every = json.dumps(sorted({v for _, v in pairs}))
    raise DataError(
        f"task '{task.name}': split '{task.train_split}' ({origin}), column '{task.label_column}' mixes numbers and "
        f"words: {rows_by_value(odd)}, where the other {len(usual)} row(s) hold {usual_values}. Fix those rows, "
        f"or, if all of these are classes, declare them in id order: `{task.option_name('label_names')}: {every}`."
    )


def check_labels(task: TaskConfig, ds: Dataset, split: str, origin: str, names: List[str], mapping) -> None:
    """Every row's label is present and in the label set; else an error naming the rows."""
    values, rows = column(ds, LABEL_VALUE), column(ds, ROW)
    missing = [r for v, r in zip(values, rows) if is_missing(v) or (mapping is None and v == -1)]
    if missing and len(missing) == len(values):
        raise DataError(
            f"task '{task.name}': split '{split}' ({origin}) has no labels in column '{task.label_column}' "
            f"(e.g. SST-2's test labels are hidden). Use a labelled split: set `{task.option_name('test_split')}` "
            f"or `{task.option_name('validation_split')}` to another split, or leave it unset so one is carved "
            f"from train."
        )
    if missing:
        raise DataError(
            f"task '{task.name}': split '{split}' ({origin}), column '{task.label_column}': null label in row(s) "
            f"{rows_str(missing)}. Fill them in or filter those rows out (`{task.option_name('filters')}`)."
        )
    where = f"task '{task.name}': split '{split}' ({origin}), column '{task.label_column}'"
    if mapping is not None:
        bad = [(r, v) for v, r in zip(values, rows) if v not in mapping]
        if bad:
            raise DataError(
                f"{where}: {rows_by_value(bad)}: not in the declared label set {names}. Add the label(s) to "
                f"`{task.option_name('label_names')}`, or fix or filter out those rows."
            )
        return
    bad = [(r, v) for v, r in zip(values, rows) if not _is_label_id(v, task.label_base, len(names))]
    if bad:
        lo, hi = task.label_base, task.label_base + len(names) - 1
        hint = ""
        ints = [v for _, v in bad if not isinstance(v, str)]
        if task.label_base == 0 and ints and all(v == len(names) for v in ints):
            hint = f" The labels look 1-based: set `{task.option_name('label_base')}: 1`."
        raise DataError(
            f"{where}: {rows_by_value(bad)}: outside the declared label set {names} (ids {lo}..{hi} with "
            f"`{task.option_name('label_base')}: {task.label_base}`).{hint}"
        )


def _is_label_id(v: Any, base: int, num_labels: int) -> bool:
    if isinstance(v, str) or (isinstance(v, float) and not float(v).is_integer()):
        return False
    return 0 <= int(v) - base < num_labels
