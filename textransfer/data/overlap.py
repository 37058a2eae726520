"""Target test rows that the training data already holds.

A test text that also appears in the target's train or validation split, or in the source task,
is scored on something a model was trained on, and the accuracy it adds says nothing about new
text. Corpora built from one another make this common rather than rare: SST-2 was made from the
Rotten Tomatoes sentences (731 of SST-2's 872 dev sentences are verbatim in ``rt_polarity``), and
review dumps repeat reviews. A run counts such rows before it trains, warns, and records the count
in ``results.json`` (``seen_test_rows``), so a gain inflated by a copy is never reported as transfer.

Texts are compared after lower-casing and dropping everything but letters and digits, so that a
copy tokenised differently (``it 's`` against ``it's``) is still found.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional

import datasets

from .task import TaskData

# letters and digits only: tokenisation and punctuation spacing differ between copies of a corpus
_NOT_WORD = re.compile(r"[\W_]+")
# test texts quoted in the warning (enough to find them, not a dump)
QUOTED_EXAMPLES = 3


def normalised(text: str) -> str:
    return _NOT_WORD.sub("", str(text).lower())


@dataclass
class SeenTestRows:
    """How many target test rows appear in the training data, where, and a few of them."""

    test_rows: int
    in_target_training: int  # in the target's train or validation split
    in_source: Optional[int] = None  # in the source's train or validation split; None without a source
    examples: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    def warning(self) -> Optional[str]:
        """The warning a run logs (None when no test row is in the training data)."""
        if not self.in_target_training and not self.in_source:
            return None
        where = []
        if self.in_target_training:
            where.append(f"{self.in_target_training} in the target's train/validation splits")
        if self.in_source:
            where.append(f"{self.in_source} in the source task")
        quoted = "; ".join(repr(t[:80]) for t in self.examples)
        return (f"of the {self.test_rows} target test rows, {' and '.join(where)} (the same text up to case and "
                f"punctuation, e.g. {quoted}): their scores measure memory, not transfer. Remove those rows from "
                f"the training data (or choose a source not built from the target's corpus).")


def _texts(split: datasets.Dataset) -> Iterable[str]:
    pairs = split["text_pair"] if "text_pair" in split.column_names else None
    texts = split["text"]
    return texts if pairs is None else (f"{a} {b}" for a, b in zip(texts, pairs))


def _keys(splits: Iterable[datasets.Dataset]) -> set:
    # hashes, not the strings: a million-row source costs a set of ints; an empty text matches nothing
    return {hash(key) for split in splits for key in map(normalised, _texts(split)) if key}


def _training_splits(task: TaskData) -> List[datasets.Dataset]:
    """The splits a model fits or is chosen on (a test split is neither)."""
    return [split for name, split in task.splits.items() if name != "test"]


def seen_test_rows(tasks: Dict[str, TaskData]) -> Optional[SeenTestRows]:
    """Count the target test rows found in the training data; None for streamed data (a stream
    is read once, by training) or a target without a test split."""
    target, source = tasks["target"], tasks.get("source")
    every = list(target.splits.values()) + (list(source.splits.values()) if source else [])
    if "test" not in target.splits or not all(isinstance(s, datasets.Dataset) for s in every):
        return None
    test = list(_texts(target.splits["test"]))
    seen_in_target = _keys(_training_splits(target))
    seen_in_source = _keys(_training_splits(source)) if source is not None else set()
    keys = [hash(key) if key else None for key in map(normalised, test)]
    in_target = [k in seen_in_target for k in keys]
    in_source = [k in seen_in_source for k in keys]
    examples = [t for t, a, b in zip(test, in_target, in_source) if a or b][:QUOTED_EXAMPLES]
    return SeenTestRows(test_rows=len(test), in_target_training=sum(in_target),
                       in_source=sum(in_source) if source is not None else None, examples=examples)
