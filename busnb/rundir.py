"""One writer per run folder, leftovers cleaned, and a finished run reused only when it is the same run.

* :class:`RunLock` - ``run.lock`` holds the owner's pid, host and start time, created with ``O_EXCL``;
  a second writer gets :class:`RunBusy`; a lock whose process is gone (same host) is stale and replaced,
  with a message. ``wait=True`` polls instead (stages shared by concurrent sweep jobs).
* :func:`clean_tmp` - temporary files of interrupted atomic writes (``.<name>.*.tmp``) are removed.
* :func:`check_identity` - ``run.json`` records what a run *is* (dataset fingerprint, split, method and
  options, profile, code version); a folder holding another run is an error listing what differs.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from .atomic import write_json

PUBLISHED_STAGES = "_stages"  # <runs' parent>/_stages/<kind>-<key>/metrics.json: a stage's own score beside its runs


class RunBusy(RuntimeError):
    """Another live process writes to this folder."""


class RunConflict(RuntimeError):
    """The folder holds a different run (other data, settings or code)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    def __init__(self, folder: str | Path, wait: bool = False, poll: float = 2.0, quiet: bool = False):
        self.folder, self.wait, self.poll, self.quiet = Path(folder), wait, poll, quiet
        self.path = self.folder / "run.lock"
        self.held = False

    def _try(self) -> dict | None:
        """Take the lock; return None on success, else the owner's record."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = json.loads(self.path.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                owner = {}
            if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", -1))):
                if not self.quiet:
                    print(f"{self.path}: stale lock of pid {owner.get('pid')} (process gone); taking it over")
                self.path.unlink(missing_ok=True)
                return self._try()
            if not owner:  # being written right now, or unreadable: treat as held
                owner = {"pid": "?", "host": "?"}
            return owner
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%F %T")}, fh)
        return None

    def __enter__(self):
        while True:
            owner = self._try()
            if owner is None:
                self.held = True
                return self
            if not self.wait:
                raise RunBusy(
                    f"{self.folder} is being written by another busnb process (pid {owner.get('pid')} on "
                    f"{owner.get('host')}, since {owner.get('started', '?')}). Fix: wait for it to finish, or "
                    f"write to another folder (--out). If that process is gone for good (another machine), "
                    f"delete {self.path}.")
            time.sleep(self.poll)

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def clean_tmp(folder: str | Path, quiet: bool = False) -> int:
    """Remove leftovers of interrupted atomic writes in ``folder`` (not recursive); returns the count."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for f in folder.glob(".*.tmp"):
        if f.is_dir():
            shutil.rmtree(f, ignore_errors=True)
        else:
            f.unlink(missing_ok=True)
        n += 1
    if n and not quiet:
        print(f"{folder}: removed {n} temporary file(s) left by an interrupted write")
    return n


def _diff(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    if old != new:
        return [f"{prefix[:-1]}: {old!r} -> {new!r}"]
    return []


RUN_FILES = ("last.pt", "best.pt", "history.json", "config.json", "metrics.json", "test_per_image.csv", "run.json")


def check_identity(folder: str | Path, identity: dict, force: bool = False, info: dict | None = None,
                   retrain: bool = False) -> str:
    """Compare ``identity`` with the folder's ``run.json``. Returns ``"new"`` (nothing there yet: run.json
    written), ``"resume"`` (same run, unfinished) or ``"finished"`` (same run, metrics.json present).
    A different run raises :class:`RunConflict` naming each difference, unless ``force``, which clears the
    folder's run files and starts anew. A folder with checkpoints but no ``run.json`` is foreign too.
    ``retrain`` (``busnb train --force``) clears the folder's run files whatever they hold, the same run too."""
    folder = Path(folder)
    identity = json.loads(json.dumps(identity, sort_keys=True, default=str))  # tuples -> lists, as stored
    meta = folder / "run.json"
    has_run = any((folder / f).exists() for f in ("last.pt", "best.pt", "metrics.json"))
    if meta.is_file() or has_run:
        old = json.loads(meta.read_text())["identity"] if meta.is_file() else None
        diffs = ["no run.json (made by an older busnb or by hand)"] if old is None else _diff(old, identity)
        if not diffs and not retrain:
            return "finished" if (folder / "metrics.json").is_file() else "resume"
        if diffs and not (force or retrain):
            shown = "\n  ".join(diffs[:12]) + ("\n  ..." if len(diffs) > 12 else "")
            raise RunConflict(
                f"{folder} holds a different run:\n  {shown}\n"
                "Fix: write to a new folder (busnb train / busnb run --out NEW), or delete that run and train this one "
                "there (busnb train --force; in Python run_experiment(..., force=True)).")
        for f in RUN_FILES:
            (folder / f).unlink(missing_ok=True)
        print(f"{folder}: --force: previous run deleted "
              + (f"({len(diffs)} difference(s))" if diffs else "(the same run: trained anew; cached stages are reused)"))
    write_json(meta, {"identity": identity, **(info or {})})
    return "new"
