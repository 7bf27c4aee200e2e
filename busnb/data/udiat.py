"""UDIAT Dataset B (Yap et al., IEEE JBHI 2018): ``original/NNNNNN.png`` and ``GT/NNNNNN.png``.

An optional ``labels.csv`` (``id,class``) beside them gives benign / malignant.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .io import DataError
from .record import Sample


def load_udiat(root: str | Path) -> list[Sample]:
    root = Path(root)
    idir, mdir = root / "original", root / "GT"
    for d in (idir, mdir):
        if not d.is_dir():
            raise DataError(f"{d}: folder missing. Fix: point root at UDIAT Dataset B (original/ and GT/).")
    labels = {}
    if (root / "labels.csv").is_file():
        with (root / "labels.csv").open(newline="") as fh:
            labels = {r["id"]: r["class"] for r in csv.DictReader(fh)}
    out = []
    for img in sorted(idir.glob("*.png")):
        gt = mdir / img.name
        if not gt.is_file():
            raise DataError(f"{img}: image without mask {gt}. Fix: restore GT/{img.name}.")
        out.append(Sample(img.stem, img, (gt,), labels.get(img.stem, "lesion"), img.stem))
    if not out:
        raise DataError(f"{idir}: no PNG images. Fix: check the path.")
    return out
