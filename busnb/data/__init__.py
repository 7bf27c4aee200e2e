"""Dataset readers. Every reader returns a list of :class:`Sample`.

>>> samples = load_dataset("phantom")             # embedded default, generated on first use
>>> samples = load_dataset("busi")                # finds BUSI (see busnb.paths.find_dataset_root)
>>> samples = load_dataset("folder", root="my_data")

Readers give each sample its own (or a user-given) group; duplicate groups are derived from
pixels only when a split is made (:func:`busnb.splits.load_or_make`, ``busnb splits``) or
on request (``dedup=True``). :func:`validate_dataset` checks masks once per dataset copy.
"""
from __future__ import annotations

from pathlib import Path

from ..paths import find_dataset_root
from .busbra import load_busbra
from .busi import load_busi
from .duplicates import assign_groups, find_duplicates, merge_groups
from .fingerprint import dataset_fingerprint, file_digest, ids_fingerprint
from .folder import load_folder
from .io import DataError, load_pair, read_image, read_mask, read_union_mask
from .phantom import PhantomConfig, load_phantom
from .record import Sample
from .udiat import load_udiat
from .validate import ValidationReport, validate_dataset

DATASETS = ("phantom", "busi", "busi_with_normal", "busbra", "udiat", "folder")

__all__ = ["DATASETS", "DataError", "PhantomConfig", "Sample", "ValidationReport", "assign_groups",
           "dataset_fingerprint", "dataset_root", "file_digest", "find_duplicates", "ids_fingerprint",
           "load_dataset", "load_pair", "merge_groups", "read_image", "read_mask", "read_union_mask",
           "validate_dataset"]


def dataset_root(name: str, root: str | Path | None = None) -> Path:
    """Explicit ``root``, else the first known location; a clear error if none exists."""
    import os

    base = name.replace("_with_normal", "")
    env = f"BUSNB_{base.upper()}_ROOT"
    if root is not None:
        if not Path(root).exists():
            raise DataError(f"{root}: no such folder (the root given for dataset '{name}'). Fix: check the path.")
        return Path(root)
    found = find_dataset_root(base)
    if found is None:
        raise DataError(
            f"dataset '{name}' not found. Fix: download it, then pass --root DIR (in Python: root=DIR) or set "
            f"{env} (or place it under data/, see README 'Datasets')."
        )
    if not found.exists() and os.environ.get(env):
        raise DataError(f"{found}: no such folder ({env} points there). Fix: set {env} to the dataset's folder, "
                        "or unset it to use data/ or ../shared/data/.")
    return found


def load_dataset(name: str, root: str | Path | None = None, dedup: bool = False,
                 phantom: PhantomConfig | None = None, dedup_threshold: float = 0.99) -> list[Sample]:
    """Samples of a named dataset, each in its reader's group (its id, or a user-given group).

    ``dedup=True`` also reads every image to merge duplicate groups into them
    (:func:`busnb.data.duplicates.assign_groups`); splitting does this itself, so only
    code that looks at the groups (the data tour, tests) asks for it.
    """
    if name == "phantom":
        samples = load_phantom(root, phantom or PhantomConfig())
    elif name in ("busi", "busi_with_normal"):
        samples = load_busi(dataset_root(name, root), include_normal=name == "busi_with_normal")
    elif name == "busbra":
        samples = load_busbra(dataset_root(name, root))
    elif name == "udiat":
        samples = load_udiat(dataset_root(name, root))
    elif name == "folder":
        if root is None:
            raise DataError("dataset 'folder' needs root=<folder with images/ and masks/>.")
        samples = load_folder(root)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if dedup:
        samples = assign_groups(samples, find_duplicates(samples, threshold=dedup_threshold))
    return samples
