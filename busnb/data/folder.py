"""A user's own data: ``<root>/images/<name>.<ext>`` and ``<root>/masks/<name>[_mask].<ext>``.

An optional ``<root>/labels.csv`` with columns ``id,class[,group]`` gives the class used
to stratify splits and a duplicate/patient group; without it every image is ``lesion``.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .io import IMAGE_SUFFIXES, DataError
from .record import Sample


def _stem_of_mask(name: str) -> str:
    stem = Path(name).stem
    return stem[: -len("_mask")] if stem.endswith("_mask") else stem


def load_folder(root: str | Path) -> list[Sample]:
    root = Path(root)
    idir, mdir = root / "images", root / "masks"
    for d in (idir, mdir):
        if not d.is_dir():
            raise DataError(f"{d}: folder missing. Fix: put images in {idir} and masks with the same names in {mdir}.")
    images = {f.stem: f for f in sorted(idir.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES}
    if not images:
        raise DataError(f"{idir}: no images ({', '.join(IMAGE_SUFFIXES)}). Fix: add images or check the path.")
    masks: dict[str, list[Path]] = {}
    for f in sorted(mdir.iterdir()):
        if f.suffix.lower() in IMAGE_SUFFIXES:
            masks.setdefault(_stem_of_mask(f.name), []).append(f)
    for stem in sorted(masks.keys() - images.keys()):
        raise DataError(f"{masks[stem][0]}: mask without image. Fix: add images/{stem}.png or remove the mask.")
    labels: dict[str, dict] = {}
    lab = root / "labels.csv"
    if lab.is_file():
        with lab.open(newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh), start=2):
                if "id" not in row or "class" not in row:
                    raise DataError(f"{lab}:{i}: needs columns 'id,class'. Fix: add a header line 'id,class'.")
                labels[row["id"]] = row
    out = []
    for stem, path in images.items():
        if stem not in masks:
            raise DataError(f"{path}: image without mask. Fix: add masks/{stem}.png (all zero if there is no lesion).")
        row = labels.get(stem, {})
        out.append(Sample(stem, path, tuple(masks[stem]), row.get("class") or "lesion", row.get("group") or stem))
    return out
