"""Dataset fingerprints: what a split, a run or a cache was made from.

* ``ids``: SHA-1 over the sorted ``id<TAB>class`` lines, the membership of a dataset.
  A resized or re-encoded copy of BUSI has the same ``ids`` fingerprint, so a split
  (which records it) travels between copies.
* ``content``: SHA-1 over the sorted ``id<TAB>class<TAB>image digest<TAB>mask digests``
  lines, the exact bytes of every image and mask file.

Both are 12 hex digits. File digests (SHA-1 of the bytes) are cached in
``cache_dir()/fingerprints.json`` by absolute path, size and modification time (ns),
so recomputing the fingerprint of an unchanged dataset reads no image.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..atomic import write_json
from ..paths import cache_dir
from .record import Sample

_memo: dict[str, dict[str, list]] = {}  # cache file -> {abs path: [size, mtime_ns, sha1]}


def _cache_file() -> Path:
    return cache_dir() / "fingerprints.json"


def _load(cache: Path) -> dict[str, list]:
    key = str(cache)
    if key not in _memo:
        try:
            _memo[key] = json.loads(cache.read_text())
        except (OSError, ValueError):  # no cache yet, or an unreadable one: digests are recomputed
            _memo[key] = {}
    return _memo[key]


def file_digests(paths) -> list[str]:
    """SHA-1 (hex) of each file's bytes, through the cache (written once, atomically)."""
    cache = _cache_file()
    known = _load(cache)
    out, changed = [], False
    for p in paths:
        p = Path(p).absolute()
        try:
            st = p.stat()
        except OSError as e:
            from .io import DataError

            raise DataError(f"{p}: cannot be read ({e.strerror}). Fix: check the dataset root.") from e
        entry = known.get(str(p))
        if entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            out.append(entry[2])
            continue
        h = hashlib.sha1()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        known[str(p)] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
        out.append(h.hexdigest())
        changed = True
    if changed:
        try:  # merge with what other processes wrote meanwhile, then replace atomically
            on_disk = json.loads(cache.read_text())
        except (OSError, ValueError):
            on_disk = {}
        merged = {**on_disk, **known}
        _memo[str(cache)] = merged
        write_json(cache, merged)
    return out


def file_digest(path) -> str:
    """SHA-1 (hex) of a file's bytes, cached by (absolute path, size, mtime_ns)."""
    return file_digests([path])[0]


def _h12(lines) -> str:
    return hashlib.sha1("\n".join(sorted(lines)).encode()).hexdigest()[:12]


def ids_fingerprint(samples: list[Sample]) -> str:
    """12 hex digits identifying the dataset's ids and classes (reads no file)."""
    return _h12(f"{s.id}\t{s.cls}" for s in samples)


def dataset_fingerprint(samples: list[Sample]) -> dict:
    """``{"ids": 12 hex, "content": 12 hex, "n_images": N}`` (see the module docstring)."""
    paths = [p for s in samples for p in (s.image, *s.masks)]
    digests = iter(file_digests(paths))
    lines = []
    for s in samples:
        img = next(digests)
        masks = ",".join(next(digests) for _ in s.masks)
        lines.append(f"{s.id}\t{s.cls}\t{img}\t{masks}")
    return {"ids": ids_fingerprint(samples), "content": _h12(lines), "n_images": len(samples)}
