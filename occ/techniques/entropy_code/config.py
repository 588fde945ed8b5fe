"""The torch-free config of ``type: entropy_code`` (``occ validate`` and ``occ order`` read it)."""


from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from occ.techniques.spec import StageConfig

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class EntropyCodeConfig(StageConfig):
    """Config of an ``entropy_code`` stage: no options, every tensor gets its smallest codec."""

    default_category = "coding"
