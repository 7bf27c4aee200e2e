"""Seeded, class-stratified, duplicate-aware split files (UniMatch-style: one file per list).

Layout: ``splits/<dataset>/seed<k>/`` holding ``train.txt``, ``val.txt``, ``test.txt``,
``labeled_<r>.txt`` and ``unlabeled_<r>.txt`` for each labeled ratio ``r`` (% of train),
and ``meta.json`` with everything needed to re-derive them.

Rules:

* the unit of assignment is the duplicate **group** (:mod:`busnb.data.duplicates`), so a
  group never straddles train / val / test;
* groups are stratified by class (a group's class is its members' most common class)
  and drawn in a seeded order until each part reaches its share of images;
* labeled subsets are nested (2.5 c 10 c 20 c 100): one seeded order of the train groups
  per class, and each ratio takes a longer prefix of it (whole groups, at least one per class).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .data.record import Sample
from .paths import repo_root

RATIOS = (2.5, 10.0, 20.0, 100.0)


class SplitError(ValueError):
    """A split file disagrees with its dataset or with its own seed."""


def ratio_name(r: float) -> str:
    return f"{r:g}"


def _group_class(samples: list[Sample]) -> dict[str, str]:
    by_group: dict[str, Counter] = {}
    for s in samples:
        by_group.setdefault(s.group or s.id, Counter())[s.cls] += 1
    return {g: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for g, c in by_group.items()}


def make_splits(samples: list[Sample], seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.2,
                ratios=RATIOS) -> dict:
    """Split ids: ``{"train", "val", "test": [...], "labeled": {r: [...]}, "unlabeled": {r: [...]}}``."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[str]] = {}
    for s in samples:
        members.setdefault(s.group or s.id, []).append(s.id)
    gcls = _group_class(samples)
    parts = {"train": [], "val": [], "test": []}
    train_groups: dict[str, list[str]] = {}
    for cls in sorted(set(gcls.values())):
        groups = sorted(g for g, c in gcls.items() if c == cls)
        groups = [groups[i] for i in rng.permutation(len(groups))]
        n = sum(len(members[g]) for g in groups)
        want = {"test": round(test_frac * n), "val": round(val_frac * n)}
        got = {"test": 0, "val": 0}
        for g in groups:
            part = next((p for p in ("test", "val") if got[p] < want[p]), "train")
            if part != "train":
                got[part] += len(members[g])
            parts[part].extend(members[g])
            if part == "train":
                train_groups.setdefault(cls, []).append(g)
    labeled = {}
    for r in sorted(ratios):
        ids = []
        for cls, groups in train_groups.items():
            n = sum(len(members[g]) for g in groups)
            target, count = max(1, math.ceil(r / 100 * n - 1e-9)), 0
            for g in groups:  # already in seeded order: prefixes are nested
                if count >= target:
                    break
                ids.extend(members[g])
                count += len(members[g])
        labeled[r] = sorted(ids)
    train = sorted(parts["train"])
    return {
        "train": train, "val": sorted(parts["val"]), "test": sorted(parts["test"]),
        "labeled": labeled,
        "unlabeled": {r: sorted(set(train) - set(ids)) for r, ids in labeled.items()},
    }


def split_dir(dataset: str, seed: int, root: str | Path | None = None) -> Path:
    return Path(root or repo_root() / "splits") / dataset / f"seed{seed}"


def write_splits(splits: dict, out: str | Path, meta: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train", "val", "test"):
        _write_list(out / f"{name}.txt", splits[name])
    for r in splits["labeled"]:
        _write_list(out / f"labeled_{ratio_name(r)}.txt", splits["labeled"][r])
        _write_list(out / f"unlabeled_{ratio_name(r)}.txt", splits["unlabeled"][r])
    write_json(out / "meta.json", meta)
    return out


def _write_list(path: Path, ids: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids))


def read_splits(path: str | Path) -> tuple[dict, dict]:
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise SplitError(f"{path}: no meta.json. Fix: create the split with `busnb splits --dataset ... --seed ...`.")
    meta = json.loads((path / "meta.json").read_text())
    rd = lambda f: [x for x in (path / f).read_text().splitlines() if x.strip()]  # noqa: E731
    splits = {n: rd(f"{n}.txt") for n in ("train", "val", "test")}
    splits["labeled"] = {float(r): rd(f"labeled_{ratio_name(r)}.txt") for r in meta["ratios"]}
    splits["unlabeled"] = {float(r): rd(f"unlabeled_{ratio_name(r)}.txt") for r in meta["ratios"]}
    return splits, meta


def check_splits(splits: dict, samples: list[Sample], where: str = "split") -> None:
    """Disjoint parts, every id known, no duplicate group across parts, nested labeled sets."""
    known = {s.id: s for s in samples}
    seen: dict[str, str] = {}
    for part in ("train", "val", "test"):
        for i in splits[part]:
            if i not in known:
                raise SplitError(f"{where}/{part}.txt lists '{i}', which is not in the dataset. "
                                 "Fix: regenerate the split for this copy of the dataset (`busnb splits`).")
            if i in seen:
                raise SplitError(f"{where}: '{i}' is in both {seen[i]} and {part}.")
            seen[i] = part
    group_part: dict[str, str] = {}
    for i, part in seen.items():
        g = known[i].group or i
        if group_part.setdefault(g, part) != part:
            raise SplitError(f"{where}: duplicate group '{g}' straddles {group_part[g]} and {part} (at '{i}').")
    prev: set = set()
    for r in sorted(splits["labeled"]):
        cur = set(splits["labeled"][r])
        if not prev <= cur or not cur <= set(splits["train"]):
            raise SplitError(f"{where}: labeled_{ratio_name(r)} is not nested in the larger ratios / train.")
        prev = cur


def verify_splits(path: str | Path, samples: list[Sample]) -> dict:
    """Re-derive the split from ``meta.json`` and compare it file by file; return the splits."""
    splits, meta = read_splits(path)
    check_splits(splits, samples, str(path))
    again = make_splits(samples, meta["seed"], meta["val_frac"], meta["test_frac"], meta["ratios"])
    for key in ("train", "val", "test"):
        if again[key] != splits[key]:
            raise SplitError(f"{path}/{key}.txt differs from the one re-derived with seed {meta['seed']}. "
                             "Fix: the dataset copy or its duplicate groups changed; regenerate with `busnb splits`.")
    if {float(r): v for r, v in again["labeled"].items()} != splits["labeled"]:
        raise SplitError(f"{path}: labeled lists differ from the ones re-derived with seed {meta['seed']}.")
    return splits


def split_meta(dataset: str, samples: list[Sample], splits: dict, seed: int, val_frac: float,
               test_frac: float, ratios=RATIOS) -> dict:
    cls = {s.id: s.cls for s in samples}
    counts = {p: dict(Counter(cls[i] for i in splits[p])) for p in ("train", "val", "test")}
    counts.update({f"labeled_{ratio_name(r)}": len(v) for r, v in splits["labeled"].items()})
    return {"dataset": dataset, "seed": seed, "val_frac": val_frac, "test_frac": test_frac,
            "ratios": list(ratios), "n_images": len(samples),
            "n_duplicate_groups": sum(1 for g in Counter(s.group for s in samples).values() if g > 1),
            "counts": counts}


def load_or_make(dataset: str, samples: list[Sample], seed: int = 0, root=None,
                 val_frac: float = 0.1, test_frac: float = 0.2) -> dict:
    """Committed split if present (checked against ``samples``), else derive and write it."""
    path = split_dir(dataset, seed, root)
    if (path / "meta.json").is_file():
        splits, _ = read_splits(path)
        check_splits(splits, samples, str(path))
        return splits
    splits = make_splits(samples, seed, val_frac, test_frac)
    write_splits(splits, path, split_meta(dataset, samples, splits, seed, val_frac, test_frac))
    return splits


def subsets(samples: list[Sample], splits: dict, ratio: float) -> dict[str, list[Sample]]:
    """Samples of ``labeled``, ``unlabeled``, ``val`` and ``test`` for one labeled ratio."""
    by_id = {s.id: s for s in samples}
    r = float(ratio)
    if r not in splits["labeled"]:
        raise SplitError(f"ratio {ratio}% has no split file; available: {sorted(splits['labeled'])}.")
    return {"labeled": [by_id[i] for i in splits["labeled"][r]],
            "unlabeled": [by_id[i] for i in splits["unlabeled"][r]],
            "val": [by_id[i] for i in splits["val"]], "test": [by_id[i] for i in splits["test"]]}
