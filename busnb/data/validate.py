"""Masks validated once per dataset copy, up front (``busnb splits``, dataset loading).

:func:`validate_dataset` reads every image and mask of a dataset and either raises a
:class:`DataError` naming the file and the fix, or returns a :class:`ValidationReport`
with counts, which it prints:

* every image and mask file must decode, and each mask must have its image's size: error;
* how each mask file's values were read (:func:`busnb.data.io.read_mask`): 1-bit, two-valued
  (``{0, 1}``, ``{0, 255}``, ``{0, k}``: the larger value is foreground), many-valued
  (anti-aliased, resized or JPEG masks: above half the largest value; printed by name),
  empty, constant: counted;
* images whose (union) mask is empty are kept as lesion-free images, counted and printed;
  if every mask is empty there is nothing to learn: error;
* masks that cover the whole image are counted and printed; if every mask does: error
  (inverted masks, or images in masks/).

The report is cached under ``cache_dir()/validated/`` by the dataset's content fingerprint
(:mod:`busnb.data.fingerprint`) and the version of these rules, so a dataset copy is read
once; a later call prints the cached report. Errors are not cached.

Layout problems (stray files, two images of one stem, ambiguous mask names, labels.csv
rows) are caught by the readers themselves (:mod:`busnb.data.folder`).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from ..atomic import write_json
from ..paths import cache_dir
from .fingerprint import dataset_fingerprint
from .io import DataError, examples, read_image, read_mask_kind
from .record import Sample

RULES_VERSION = 1


@dataclass
class ValidationReport:
    content: str                        # content fingerprint of the dataset copy
    n_images: int
    n_mask_files: int
    mask_kinds: dict = field(default_factory=dict)   # read rule -> number of mask files
    empty: list = field(default_factory=list)        # ids with an empty mask (lesion-free images)
    whole_image: list = field(default_factory=list)  # ids whose mask covers the whole image
    many_valued: list = field(default_factory=list)  # mask file names read with the half-maximum threshold
    cached: bool = False

    def summary(self) -> dict:
        return {"images": self.n_images, "mask_files": self.n_mask_files, **self.mask_kinds,
                "empty_masks": len(self.empty), "whole_image_masks": len(self.whole_image)}

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{v} {k}" for k, v in sorted(self.mask_kinds.items()))
        out = [f"dataset checked{' (cached)' if self.cached else ''}, content {self.content}: {self.n_images} images, "
               f"{self.n_mask_files} mask files ({kinds}; how each was read: busnb.data.validate)"]
        if self.empty:
            out.append(f"  {len(self.empty)} image(s) with an empty mask, kept as lesion-free images: "
                       f"{examples(self.empty)}")
        if self.whole_image:
            out.append(f"  {len(self.whole_image)} mask(s) cover the whole image (check they are not inverted): "
                       f"{examples(self.whole_image)}")
        if self.many_valued:
            out.append(f"  {len(self.many_valued)} mask file(s) hold more than two values (anti-aliased, resized or "
                       f"JPEG): foreground is above half their maximum: {examples(self.many_valued)}")
        return out


def _where(samples: list[Sample]) -> str:
    try:
        return os.path.commonpath([str(s.image) for s in samples])
    except ValueError:
        return "the dataset"


def _cache_path(content: str):
    return cache_dir() / "validated" / f"{content}-rules{RULES_VERSION}.json"


def validate_dataset(samples: list[Sample], progress: bool = False, quiet: bool = False) -> ValidationReport:
    """Check every image and mask once per dataset copy (see the module docstring)."""
    from ..progress import tqdm

    if not samples:
        raise DataError("the dataset has no images. Fix: check the dataset root.")
    content = dataset_fingerprint(samples)["content"]
    cached = _cache_path(content)
    if cached.is_file():
        try:
            report = ValidationReport(**{**json.loads(cached.read_text()), "cached": True})
        except (ValueError, TypeError):  # unreadable cache entry: validate again
            report = None
        if report is not None:
            if not quiet:
                print("\n".join(report.lines()))
            return report
    kinds: Counter = Counter()
    empty, whole, many = [], [], []
    n_masks = 0
    for s in tqdm(samples, desc="validate", disable=not progress):
        shape = read_image(s.image).shape
        if not s.masks:
            raise DataError(f"{s.image}: no mask file. Fix: add its mask (all zero if there is no lesion).")
        union = None
        for p in s.masks:
            m, kind = read_mask_kind(p)
            if m.shape != shape:
                raise DataError(f"{p}: mask is {m.shape[1]}x{m.shape[0]} (WxH) but its image {s.image} is "
                                f"{shape[1]}x{shape[0]}. Fix: re-export the mask at the image's size.")
            kinds[kind] += 1
            n_masks += 1
            if kind == "many-valued":
                many.append(p.name)
            union = m if union is None else union | m
        if not union.any():
            empty.append(s.id)
        elif union.all():
            whole.append(s.id)
    where = _where(samples)
    if len(empty) == len(samples):
        raise DataError(f"{where}: all {len(samples)} masks are empty (no foreground pixel): nothing to learn. "
                        "Fix: point masks/ at the lesion masks (lesion pixels non-zero, background zero).")
    if len(whole) == len(samples):
        raise DataError(f"{where}: all {len(samples)} masks cover the whole image. Fix: check the masks are not "
                        "inverted (lesion non-zero, background zero) and that masks/ does not hold the images.")
    report = ValidationReport(content, len(samples), n_masks, dict(sorted(kinds.items())), empty, whole, many)
    write_json(cached, {k: v for k, v in asdict(report).items() if k != "cached"})
    if not quiet:
        print("\n".join(report.lines()))
    return report
