"""Where a result came from: code version (git commit, dirty tree, package source hash) and device."""
from __future__ import annotations

import functools
import hashlib
import subprocess

from .paths import PACKAGE_DIR


@functools.lru_cache(maxsize=None)
def source_hash(*files: str) -> str:
    """12 hex digits of SHA-1 over every ``busnb/**/*.py`` file (path and bytes): the code version that
    run identities and stage caches are keyed by. Works without git (a wheel install). With ``files``
    (paths relative to the package), only those: for caches whose result depends on a few modules."""
    h = hashlib.sha1()
    for f in (sorted(PACKAGE_DIR / x for x in files) if files else sorted(PACKAGE_DIR.rglob("*.py"))):
        h.update(str(f.relative_to(PACKAGE_DIR)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def git_state() -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding the package, as it was when this
    process first asked (cached, like :func:`source_hash`: a process runs the code it imported, so a checkout
    switched to another commit during a run must not change what that run's ``metrics.json`` says).
    :func:`snapshot` asks at the start of every run."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=PACKAGE_DIR.parent, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def snapshot() -> str:
    """Fix this process's code version now - :func:`source_hash` and :func:`git_state`, both cached from here on -
    and return the source hash. Called when a run's identity is formed, before any training."""
    git_state()
    return source_hash()


def device_name(device) -> str:
    """Human-readable device, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu (2 threads)``."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        i = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    if dev.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(dev)


def provenance(device=None) -> dict:
    """What every ``metrics.json`` records about its origin."""
    import torch

    out = {"busnb_source": source_hash(), **git_state(), "torch": torch.__version__}
    if device is not None:
        out["device"] = device_name(device)
    return out
