"""UDIAT Dataset B (Yap et al., IEEE JBHI 2018): ``original/NNNNNN.png`` and ``GT/NNNNNN.png``.

An optional ``labels.csv`` (``id,class``) beside them gives benign / malignant; when it
exists every image needs a row and every row an image (as for :mod:`busnb.data.folder`).
Dot-files (macOS ``._*``) and files that are not PNG images are skipped with a printed count.
"""
from __future__ import annotations

from pathlib import Path

from .folder import check_labels, read_labels
from .io import DataError, list_image_files
from .record import Sample


def load_udiat(root: str | Path) -> list[Sample]:
    root = Path(root)
    idir, mdir = root / "original", root / "GT"
    for d in (idir, mdir):
        if not d.is_dir():
            raise DataError(f"{d}: folder missing. Fix: point root at UDIAT Dataset B (original/ and GT/).")
    images = {f.stem: f for f in list_image_files(idir, (".png",))}
    if not images:
        raise DataError(f"{idir}: no PNG images. Fix: check the path.")
    lab = root / "labels.csv"
    labels = read_labels(lab) if lab.is_file() else None
    if labels is not None:
        check_labels(lab, labels, images, idir)
    out = []
    for stem, img in images.items():
        gt = mdir / img.name
        if not gt.is_file():
            raise DataError(f"{img}: image without mask {gt}. Fix: restore GT/{img.name}.")
        out.append(Sample(stem, img, (gt,), labels[stem]["class"] if labels is not None else "lesion", stem))
    return out
