"""The one sample record every dataset reader returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One image and its lesion annotation.

    ``masks`` may hold several files; the lesion is their union. ``group`` keeps images
    together in splits: readers set it to ``id`` or to a user-given group (a patient, a
    BUS-BRA case), and :func:`busnb.data.duplicates.assign_groups` merges identical or
    near-identical images' groups into one (never splitting a group).
    ``meta`` carries dataset-specific facts (e.g. the phantom's lesion shapes).
    """

    id: str
    image: Path
    masks: tuple[Path, ...]
    cls: str
    group: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def with_group(self, group: str) -> "Sample":
        return Sample(self.id, self.image, self.masks, self.cls, group, self.meta)
