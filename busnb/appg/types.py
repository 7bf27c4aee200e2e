"""Records shared by the APPG backends and pipeline."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Detection:
    """A box in pixel ``(x0, y0, x1, y1)`` of the input image, its score and the phrase that found it."""

    box: tuple[float, float, float, float]
    score: float
    phrase: str
    extra: dict = field(default_factory=dict, repr=False)
