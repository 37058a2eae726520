"""What loading a task gives: its splits and its label set (``load_task`` and, for
``streaming: true``, ``load_stream_task`` both return a :class:`TaskData`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from datasets import DatasetDict


@dataclass
class TaskData:
    """A loaded task: its splits and its label set.

    Args:
        name (`str`): the task's name.
        splits (`datasets.DatasetDict`): ``train``, ``validation`` and ``test``.
        label_names (`list[str]`): label names in id order.
        info (`dict`): what loading did (rows per split, dropped rows, carved splits).
    """

    name: str
    splits: DatasetDict
    label_names: List[str]
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> Dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def has_pair(self) -> bool:
        return "text_pair" in self.splits["validation"].column_names  # (a streamed train may not know its columns)
