"""BUSI (Al-Dhabyani et al., Data in Brief 28, 2020) in its published layout.

``Dataset_BUSI_with_GT/<class>/<class> (<n>).png`` with masks ``<class> (<n>)_mask.png``
and, for some images, ``_mask_1.png``, ``_mask_2.png``: the lesion is the union.
The lesion protocol (``include_normal=False``) keeps the 647 benign + malignant images.
"""
from __future__ import annotations

import re
from pathlib import Path

from .io import DataError, examples
from .record import Sample

CLASSES = ("benign", "malignant", "normal")
_IMG = re.compile(r"^(?P<cls>benign|malignant|normal) \((?P<n>\d+)\)\.png$")
_MASK = re.compile(r"^(?P<stem>(?:benign|malignant|normal) \(\d+\))_mask(?:_(?P<k>\d+))?\.png$")


def find_root(root: str | Path) -> Path:
    """Accept the ``Dataset_BUSI_with_GT`` folder or any parent that holds it."""
    root = Path(root)
    for cand in (root, root / "Dataset_BUSI_with_GT", root / "BUSI" / "Dataset_BUSI_with_GT"):
        if (cand / "benign").is_dir() and (cand / "malignant").is_dir():
            return cand
    raise DataError(
        f"{root}: no BUSI layout found (expected benign/ and malignant/ folders). "
        "Fix: point root at Dataset_BUSI_with_GT as published by Al-Dhabyani et al. 2020."
    )


def load_busi(root: str | Path, include_normal: bool = False) -> list[Sample]:
    """All BUSI samples, sorted by class then number. Raises :class:`DataError` on
    an image without mask, a mask without image, or an unexpected file name; sub-folders
    are skipped and printed, dot-files (macOS ``._*`` AppleDouble, ``.DS_Store``) are skipped with a printed count."""
    root = find_root(root)
    classes = CLASSES if include_normal else CLASSES[:2]
    samples: list[Sample] = []
    for cls in classes:
        d = root / cls
        if not d.is_dir():
            raise DataError(f"{d}: class folder missing. Fix: restore the '{cls}' folder of BUSI, or pass include_normal=False.")
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        hidden, folders = [], []
        for f in sorted(d.iterdir()):
            if f.name.startswith("."):
                hidden.append(f)
                continue
            if not f.is_file():
                folders.append(f)
                continue
            if m := _MASK.match(f.name):
                masks.setdefault(m["stem"], []).append((int(m["k"] or 0), f))
            elif _IMG.match(f.name):
                images[f.stem] = f
            else:
                raise DataError(f"{f}: unexpected file in BUSI layout. Fix: remove it or rename it '<class> (<n>).png'.")
        if hidden:
            print(f"{d}: skipped {len(hidden)} hidden file(s) (macOS '._*' AppleDouble / .DS_Store metadata, "
                  f"not images): {examples(hidden)}")
        if folders:
            print(f"{d}: ignored {len(folders)} sub-folder(s): {examples(folders, 20)}")
        for stem in sorted(masks.keys() - images.keys()):
            raise DataError(f"{masks[stem][0][1]}: mask without image '{stem}.png'. Fix: restore the image or remove the mask.")
        for stem, path in images.items():
            if stem not in masks:
                raise DataError(f"{path}: image without mask. Fix: add '{stem}_mask.png' (all zero for a normal image).")
            ms = tuple(p for _, p in sorted(masks[stem]))
            samples.append(Sample(id=stem, image=path, masks=ms, cls=cls, group=stem))
    key = lambda s: (CLASSES.index(s.cls), int(_IMG.match(s.image.name)["n"]))  # noqa: E731
    return sorted(samples, key=key)
