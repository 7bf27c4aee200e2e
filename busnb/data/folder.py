"""A user's own data: ``<root>/images/<name>.<ext>`` and its mask(s) in ``<root>/masks/``.

Layout, and what happens to everything else (each case is a clear :class:`DataError` or
a printed, counted decision):

* the mask of image ``x`` is ``masks/x.<ext>`` or ``masks/x_mask.<ext>``; an image with
  several lesions may have ``x_mask.<ext>``, ``x_mask_1.<ext>``, ``x_mask_2.<ext>`` ... and
  its lesion is their union (as in BUSI). ``x.png`` together with ``x_mask.png`` is
  ambiguous: error. A mask of no image, or an image without a mask: error (an image
  without lesion needs an all-zero mask);
* two files of one stem (``x.png`` and ``x.jpg``) in ``images/`` or for one mask: error
  naming both;
* dot-files (macOS ``._x.png`` AppleDouble files, ``.DS_Store``) are metadata: skipped, and
  their count printed; other files that are not images (``README.txt``) and sub-folders are
  skipped and printed by name;
* optional ``labels.csv`` (UTF-8, a byte-order mark is accepted; surrounding spaces are
  stripped) with columns ``id,class[,group]``: ``class`` stratifies the splits, ``group``
  (a patient, say) keeps images together: duplicate detection at split time merges groups,
  never splits them. Every row must name an image (``id`` is the file name without
  extension) and every image must have a row: both are errors naming the rows / images.
  Without ``labels.csv`` every image is class ``lesion`` in a group of its own.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from .io import DataError, examples, list_image_files
from .record import Sample

_MASK_NAME = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?$")
_PLAIN = -1  # slot of a mask named exactly like its image


def read_labels(path: Path, what: str = "images") -> dict[str, dict]:
    """Rows of a ``labels.csv`` (``id,class[,group]``) by id; each row also holds its ``_line``."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or []]
        if "id" not in fields or "class" not in fields:
            raise DataError(f"{path}: header is {fields or 'empty'}, needs the columns 'id,class' (and optionally "
                            "'group'). Fix: make the first line 'id,class' (or 'id,class,group').")
        rows: dict[str, dict] = {}
        for i, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if isinstance(k, str)}
            rid = row["id"]
            if not rid:
                raise DataError(f"{path}:{i}: empty id. Fix: write the {what[:-1]} file name without extension, "
                                "or remove the line.")
            if rid in rows:
                raise DataError(f"{path}:{i}: id '{rid}' is listed twice (first on line {rows[rid]['_line']}). "
                                "Fix: keep one row per image.")
            if not row["class"]:
                raise DataError(f"{path}:{i}: no class for '{rid}'. Fix: fill in its class (e.g. benign), "
                                "or give every image the same class.")
            row["_line"] = i
            rows[rid] = row
    return rows


def check_labels(path: Path, labels: dict[str, dict], images: dict[str, Path], idir: Path) -> None:
    """Every row names an image and every image has a row, else :class:`DataError`."""
    unknown = [r for r in labels.values() if r["id"] not in images]
    if unknown:
        r = unknown[0]
        more = f" ({len(unknown)} such rows: {examples([u['id'] for u in unknown])})" if len(unknown) > 1 else ""
        raise DataError(f"{path}:{r['_line']}: id '{r['id']}' matches no image in {idir}{more}. Fix: correct the id "
                        "(the image file name without extension) or remove the row.")
    missing = [s for s in images if s not in labels]
    if missing:
        raise DataError(f"{path}: no row for {len(missing)} image(s) of {idir}: {examples(missing)}. Fix: add a "
                        "row 'id,class' for each, or delete labels.csv to give every image the class 'lesion'.")


def _images(idir: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for f in list_image_files(idir):
        if f.stem in images:
            raise DataError(f"{images[f.stem]} and {f}: two images named '{f.stem}'. Fix: keep one of them "
                            "(remove or rename the other, and its mask).")
        images[f.stem] = f
    return images


def _masks(mdir: Path, images: dict[str, Path]) -> dict[str, tuple[Path, ...]]:
    slots: dict[str, dict[int, Path]] = {}
    for f in list_image_files(mdir):
        owners = []
        if f.stem in images:
            owners.append((f.stem, _PLAIN))
        m = _MASK_NAME.match(f.stem)
        if m and m["stem"] in images:
            owners.append((m["stem"], int(m["k"] or 0)))
        if not owners:
            stem = m["stem"] if m else f.stem
            raise DataError(f"{f}: mask without image. Fix: add images/{stem}.png or remove the mask "
                            "(masks are named <image>.png, <image>_mask.png or <image>_mask_<n>.png).")
        if len(owners) > 1:
            raise DataError(f"{f}: ambiguous, it is the mask of images/{images[owners[0][0]].name} and a mask file of "
                            f"images/{images[owners[1][0]].name}. Fix: rename one of these images.")
        stem, k = owners[0]
        slot = slots.setdefault(stem, {})
        if k in slot:
            raise DataError(f"{slot[k]} and {f}: the same mask of images/{images[stem].name} twice. "
                            "Fix: keep one of them.")
        slot[k] = f
    out = {}
    for stem, slot in slots.items():
        if _PLAIN in slot and len(slot) > 1:
            other = next(p for k, p in sorted(slot.items()) if k != _PLAIN)
            raise DataError(f"{slot[_PLAIN]} and {other}: both are masks of images/{images[stem].name}, which is "
                            f"ambiguous. Fix: name one lesion's mask '{stem}.png', or several lesions' masks "
                            f"'{stem}_mask.png', '{stem}_mask_1.png', ... (read as their union).")
        out[stem] = tuple(p for _, p in sorted(slot.items()))
    return out


def load_folder(root: str | Path) -> list[Sample]:
    """Samples of a folder in the layout above, sorted by image name."""
    root = Path(root)
    idir, mdir = root / "images", root / "masks"
    for d in (idir, mdir):
        if not d.is_dir():
            raise DataError(f"{d}: folder missing. Fix: put images in {idir} and masks with the same names in {mdir}.")
    images = _images(idir)
    if not images:
        raise DataError(f"{idir}: no images. Fix: add images (.png, .jpg, .bmp, .tif) or check the path.")
    masks = _masks(mdir, images)
    lab = root / "labels.csv"
    labels = read_labels(lab) if lab.is_file() else None
    if labels is not None:
        check_labels(lab, labels, images, idir)
    out = []
    for stem, path in images.items():
        if stem not in masks:
            raise DataError(f"{path}: image without mask. Fix: add masks/{stem}.png (all zero if there is no lesion).")
        row = labels[stem] if labels is not None else {}
        out.append(Sample(stem, path, masks[stem], row.get("class") or "lesion", row.get("group") or stem))
    return out
