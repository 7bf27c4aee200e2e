"""Where data, caches and runs live. Every location can be overridden by an environment variable."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The checkout that holds this package (falls back to the working directory for a wheel install)."""
    parent = PACKAGE_DIR.parent
    return parent if (parent / "pyproject.toml").is_file() else Path.cwd()


def data_dir() -> Path:
    """Generated data (the phantom) and a place for users' datasets: ``$BUSNB_DATA`` or ``<repo>/data``."""
    return Path(os.environ.get("BUSNB_DATA", repo_root() / "data"))


def cache_dir() -> Path:
    """Pseudo-label and preprocessing caches: ``$BUSNB_CACHE`` or ``<repo>/cache``."""
    return Path(os.environ.get("BUSNB_CACHE", repo_root() / "cache"))


def runs_dir() -> Path:
    return Path(os.environ.get("BUSNB_RUNS", repo_root() / "runs"))


def weights_dir() -> Path:
    """Local model weights (Grounding DINO, SAM, encoders): ``$BUSNB_WEIGHTS`` or ``<repo>/weights``."""
    return Path(os.environ.get("BUSNB_WEIGHTS", repo_root() / "weights"))


# Where published datasets are looked for, in order, when no root is given.
_DATASET_DIRS = {
    "busi": ("BUSI/Dataset_BUSI_with_GT", "Dataset_BUSI_with_GT"),
    "busbra": ("BUSBRA", "BUS-BRA"),
    "udiat": ("UDIAT/DatasetB", "DatasetB"),
}


def find_dataset_root(name: str) -> Path | None:
    """``$BUSNB_<NAME>_ROOT``, else ``data_dir()/<layout>``, else ``<repo>/../shared/data/<layout>``."""
    env = os.environ.get(f"BUSNB_{name.upper()}_ROOT")
    if env:
        return Path(env)
    for base in (data_dir(), repo_root().parent / "shared" / "data"):
        for rel in _DATASET_DIRS.get(name, ()):
            if (base / rel).is_dir():
                return base / rel
    return None
