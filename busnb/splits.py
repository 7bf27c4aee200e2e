"""Seeded, class-stratified, duplicate-aware split files (UniMatch-style: one file per list).

Layout: ``splits/<name>/seed<k>/`` holding ``train.txt``, ``val.txt``, ``test.txt``,
``labeled_<r>.txt`` and ``unlabeled_<r>.txt`` for each labeled ratio ``r`` (% of train),
and ``meta.json`` with everything needed to re-derive them, the ``groups`` the split was
made with (group id -> members, groups of more than one image) and the dataset's
``ids_fingerprint`` (:mod:`busnb.data.fingerprint`). ``<name>`` is :func:`split_name`.

Rules:

* the unit of assignment is the **group**: a user-given group (a patient, a BUS-BRA case)
  merged with the duplicate groups found from pixels (:mod:`busnb.data.duplicates`), so a
  group never straddles train / val / test. Duplicates merge groups, never split them;
* duplicate detection reads every image, so it runs only when a split is made
  (:func:`load_or_make` without a split on disk, ``busnb splits``) and in ``busnb splits
  --verify``. Loading a split checks its ids and classes against the dataset and the group
  rule with the **recorded** groups: it travels to a resized copy (BUSI at 224 px), where
  near-duplicate links can fall on the other side of the threshold;
* a dataset changed since the split (images added or removed, classes changed) is an error
  that says what changed; ``busnb splits --force`` re-splits (the test set changes);
* a split needs at least one image in each of train / val / test and in the labeled and
  unlabeled set of every ratio below 100 %, else :class:`SplitError` says how many are needed;
* groups are stratified by class (a group's class is its members' most common class)
  and drawn in a seeded order until each part reaches its share of images;
* labeled subsets are nested (2.5 c 10 c 20 c 100): one seeded order of the train groups
  per class, and each ratio takes a longer prefix of it (whole groups, at least one per class).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .data.duplicates import assign_groups, find_duplicates, group_members, merge_groups
from .data.fingerprint import ids_fingerprint
from .data.io import examples
from .data.record import Sample
from .paths import repo_root

RATIOS = (2.5, 10.0, 20.0, 100.0)
DEDUP_THRESHOLD = 0.99
# Published datasets: one split per dataset, whatever copy (root) it is read from; the ids
# fingerprint recorded in the split catches a copy that holds other images.
PUBLISHED = ("busi", "busi_with_normal", "busbra", "udiat")
_RESPLIT = "`busnb splits --dataset <dataset> [--root <folder>] --seeds {seed} --force`"


class SplitError(ValueError):
    """A split file disagrees with its dataset or with its own seed."""


def ratio_name(r: float) -> str:
    return f"{r:g}"


def _group_class(samples: list[Sample]) -> dict[str, str]:
    by_group: dict[str, Counter] = {}
    for s in samples:
        by_group.setdefault(s.group or s.id, Counter())[s.cls] += 1
    return {g: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for g, c in by_group.items()}


def split_name(dataset: str, root: str | Path | None = None, phantom=None) -> str:
    """Name of the split folder of one dataset copy.

    * published datasets (:data:`PUBLISHED`): the dataset name, whatever ``root`` (the
      committed split travels between copies; its ids fingerprint is checked on load);
    * ``phantom``: ``phantom``, or ``phantom-<config key>`` for a non-default ``phantom`` config;
    * anything else read from a ``root`` (``folder``): ``<dataset>-<folder name>-<6 hex of
      SHA-1 of the resolved absolute root>``, so ``/a/my_data`` and ``/b/my_data`` never
      share a split.
    """
    if dataset == "phantom":
        from .data.phantom import PhantomConfig

        return "phantom" if phantom is None or phantom == PhantomConfig() else f"phantom-{phantom.key()}"
    if dataset in PUBLISHED or root is None:
        return dataset
    r = Path(root).expanduser().resolve()
    return f"{dataset}-{r.name}-{hashlib.sha1(str(r).encode()).hexdigest()[:6]}"


def min_images(val_frac: float = 0.1, test_frac: float = 0.2, ratios=RATIOS) -> int | None:
    """Fewest images (one class, no duplicates) that give every part of a split an image."""
    for n in range(1, 100_000):
        t, v = round(test_frac * n), round(val_frac * n)
        tr = n - t - v
        if t < 1 or v < 1 or tr < 1:
            continue
        if all(r >= 100 or max(1, math.ceil(r / 100 * tr - 1e-9)) < tr for r in ratios):
            return n
    return None


def _too_few(samples, n_groups, part, val_frac, test_frac, ratios) -> SplitError:
    need = min_images(val_frac, test_frac, ratios)
    classes = len({s.cls for s in samples})
    hint = (f"at least {need} images are needed with val_frac={val_frac:g} and test_frac={test_frac:g} "
            "(more when a class has few images or duplicates form large groups)" if need else
            f"val_frac={val_frac:g} and test_frac={test_frac:g} leave no room for every part")
    return SplitError(f"{len(samples)} images ({n_groups} groups, {classes} class{'es' if classes > 1 else ''}) "
                      "are too few for a split: "
                      f"{part} would be empty; {hint}. Fix: add images, or change --val-frac / --test-frac.")


def make_splits(samples: list[Sample], seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.2,
                ratios=RATIOS) -> dict:
    """Split ids: ``{"train", "val", "test": [...], "labeled": {r: [...]}, "unlabeled": {r: [...]}}``.

    ``samples`` carry their final groups (see :func:`derive_groups`). Raises :class:`SplitError`
    when a part, or the labeled / unlabeled set of a ratio below 100, would be empty.
    """
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
    for part in ("train", "val", "test"):
        if not parts[part]:
            raise _too_few(samples, len(members), part, val_frac, test_frac, ratios)
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
    unlabeled = {r: sorted(set(train) - set(ids)) for r, ids in labeled.items()}
    for r in labeled:
        if r < 100 and not unlabeled[r]:
            raise _too_few(samples, len(members), f"unlabeled_{ratio_name(r)} (train has {len(train)} images, "
                           f"all labeled at {ratio_name(r)} %)", val_frac, test_frac, ratios)
    return {"train": train, "val": sorted(parts["val"]), "test": sorted(parts["test"]),
            "labeled": labeled, "unlabeled": unlabeled}


def derive_groups(samples: list[Sample], threshold: float = DEDUP_THRESHOLD, progress: bool = False,
                  quiet: bool = False) -> list[Sample]:
    """Samples with duplicate groups (read from pixels) merged into their own groups."""
    report = find_duplicates(samples, threshold=threshold, progress=progress)
    grouped = assign_groups(samples, report)
    if not quiet:
        g = group_members(grouped)
        print(f"duplicate detection (r > {threshold:g}): {len(report.exact_pairs)} exact and "
              f"{len(report.near_pairs)} near pairs; {len(g)} groups of more than one image "
              f"({sum(len(m) for m in g.values())} images)")
    return grouped


def with_recorded_groups(samples: list[Sample], meta: dict) -> list[Sample]:
    """Samples with the groups recorded in a split's ``meta.json`` merged into their own."""
    return merge_groups(samples, meta.get("groups", {}).values())


def split_dir(dataset: str, seed: int, root: str | Path | None = None) -> Path:
    return Path(root or repo_root() / "splits") / dataset / f"seed{seed}"


def write_splits(splits: dict, out: str | Path, meta: dict) -> Path:
    """Write the lists and ``meta.json``; list files of ratios no longer in the split are removed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("train", "val", "test"):
        _write_list(out / f"{name}.txt", splits[name])
    keep = set()
    for r in splits["labeled"]:
        for kind in ("labeled", "unlabeled"):
            keep.add(f"{kind}_{ratio_name(r)}.txt")
            _write_list(out / f"{kind}_{ratio_name(r)}.txt", splits[kind][r])
    for f in [*out.glob("labeled_*.txt"), *out.glob("unlabeled_*.txt")]:
        if f.name not in keep:
            f.unlink()
    write_json(out / "meta.json", meta)
    return out


def _write_list(path: Path, ids: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids))


def read_splits(path: str | Path) -> tuple[dict, dict]:
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise SplitError(f"{path}: no meta.json. Fix: create the split with `busnb splits --dataset ... --seeds ...`.")
    meta = json.loads((path / "meta.json").read_text())

    def rd(f):
        if not (path / f).is_file():
            raise SplitError(f"{path}/{f}: missing. Fix: restore the split folder (git checkout) or re-split "
                             f"with --force.")
        return [x for x in (path / f).read_text().splitlines() if x.strip()]

    splits = {n: rd(f"{n}.txt") for n in ("train", "val", "test")}
    splits["labeled"] = {float(r): rd(f"labeled_{ratio_name(r)}.txt") for r in meta["ratios"]}
    splits["unlabeled"] = {float(r): rd(f"unlabeled_{ratio_name(r)}.txt") for r in meta["ratios"]}
    return splits, meta


def check_membership(splits: dict, meta: dict, samples: list[Sample], where: str = "split") -> None:
    """The split lists exactly the dataset's ids, with the classes it was made with."""
    listed = [i for p in ("train", "val", "test") for i in splits[p]]
    known = {s.id for s in samples}
    added, removed = sorted(known - set(listed)), sorted(set(listed) - known)
    seed = meta.get("seed", 0)
    if added or removed:
        raise SplitError(
            f"{where}: the dataset differs from the one this split was made from: {len(added)} image(s) not in the "
            f"split{' (' + examples(added) + ')' if added else ''}, {len(removed)} listed but not in the dataset"
            f"{' (' + examples(removed) + ')' if removed else ''}. Fix: use the dataset copy the split was made "
            f"from, or re-split with {_RESPLIT.format(seed=seed)} (this changes the test set: results are not "
            "comparable with earlier runs).")
    recorded = meta.get("ids_fingerprint")
    if recorded and recorded != ids_fingerprint(samples):
        cls = {s.id: s.cls for s in samples}
        diffs = []
        for part in ("train", "val", "test"):
            now, then = Counter(cls[i] for i in splits[part]), meta.get("counts", {}).get(part, {})
            diffs += [f"{part} {c} {then.get(c, 0)} -> {now.get(c, 0)}" for c in sorted(set(now) | set(then))
                      if then.get(c, 0) != now.get(c, 0)]
        what = ", ".join(diffs[:6]) if diffs else "class counts per part unchanged, some images swapped classes"
        raise SplitError(
            f"{where}: the classes of the dataset changed since this split was made ({what}). Fix: restore the "
            f"classes (labels.csv), or re-split with {_RESPLIT.format(seed=seed)} (this changes the test set).")


def check_splits(splits: dict, samples: list[Sample], where: str = "split") -> None:
    """Disjoint parts, every id known, no group across parts, nested labeled sets."""
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
            raise SplitError(f"{where}: group '{g}' (duplicates or a user-given group) straddles "
                             f"{group_part[g]} and {part} (at '{i}'). Fix: re-split with --force.")
    prev: set = set()
    for r in sorted(splits["labeled"]):
        cur = set(splits["labeled"][r])
        if not prev <= cur or not cur <= set(splits["train"]):
            raise SplitError(f"{where}: labeled_{ratio_name(r)} is not nested in the larger ratios / train.")
        prev = cur


def _groups_differ(recorded: dict, derived: dict) -> str:
    a = {frozenset(m) for m in recorded.values()}
    b = {frozenset(m) for m in derived.values()}
    if a == b:
        return ""
    only_now = [sorted(m) for m in b - a]
    only_then = [sorted(m) for m in a - b]
    return (f"{len(only_now)} group(s) found now but not recorded (e.g. {only_now[:2]}), "
            f"{len(only_then)} recorded but not found now (e.g. {only_then[:2]})")


def verify_splits(path: str | Path, samples: list[Sample], rederive: bool = True, progress: bool = False) -> dict:
    """Re-derive the groups (from pixels, unless ``rederive=False``: the samples' groups are
    taken as derived) and the split from ``meta.json``, compare both with what is recorded
    file by file, and return the splits."""
    splits, meta = read_splits(path)
    check_membership(splits, meta, samples, str(path))
    if "groups" in meta:
        check_splits(splits, with_recorded_groups(samples, meta), str(path))
    threshold = meta.get("dedup_threshold", DEDUP_THRESHOLD)
    grouped = derive_groups(samples, threshold, progress=progress, quiet=True) if rederive else samples
    if "groups" in meta and (diff := _groups_differ(meta["groups"], group_members(grouped))):
        raise SplitError(f"{path}: the groups re-derived from this copy of the dataset differ from the ones "
                         f"recorded in meta.json: {diff}. A resized or re-encoded copy can move near-duplicate "
                         f"pairs across r = {threshold:g}: verify on the copy the split was made from (the split "
                         "itself still loads anywhere, with its recorded groups).")
    check_splits(splits, grouped, str(path))
    again = make_splits(grouped, meta["seed"], meta["val_frac"], meta["test_frac"], meta["ratios"])
    for key in ("train", "val", "test"):
        if again[key] != splits[key]:
            raise SplitError(f"{path}/{key}.txt differs from the one re-derived with seed {meta['seed']}. "
                             "Fix: the dataset copy or its groups changed; re-split with `busnb splits --force`, "
                             "or restore the split files (git checkout).")
    for kind in ("labeled", "unlabeled"):
        if {float(r): v for r, v in again[kind].items()} != splits[kind]:
            raise SplitError(f"{path}: {kind} lists differ from the ones re-derived with seed {meta['seed']}.")
    return splits


def split_meta(dataset: str, samples: list[Sample], splits: dict, seed: int, val_frac: float,
               test_frac: float, ratios=RATIOS, dedup_threshold: float = DEDUP_THRESHOLD) -> dict:
    """``meta.json`` of a split of ``samples`` (with their final groups)."""
    cls = {s.id: s.cls for s in samples}
    counts = {p: dict(Counter(cls[i] for i in splits[p])) for p in ("train", "val", "test")}
    counts.update({f"labeled_{ratio_name(r)}": len(v) for r, v in splits["labeled"].items()})
    groups = group_members(samples)
    return {"dataset": dataset, "seed": seed, "val_frac": val_frac, "test_frac": test_frac,
            "ratios": list(ratios), "n_images": len(samples), "ids_fingerprint": ids_fingerprint(samples),
            "dedup_threshold": dedup_threshold, "n_duplicate_groups": len(groups), "groups": groups,
            "counts": counts}


def _same(a: dict, b: dict) -> bool:
    norm = lambda d: {float(r): list(v) for r, v in d.items()}  # noqa: E731
    return all(a[k] == b[k] for k in ("train", "val", "test")) and all(
        norm(a[k]) == norm(b[k]) for k in ("labeled", "unlabeled"))


def write_split(dataset: str, samples: list[Sample], seed: int = 0, val_frac: float = 0.1,
                test_frac: float = 0.2, ratios=RATIOS, root=None, force: bool = False,
                dedup_threshold: float = DEDUP_THRESHOLD) -> tuple[Path, str]:
    """Make the split of ``samples`` (groups already derived) and write it to :func:`split_dir`.

    An existing split with the same lists only gets a fresh ``meta.json``; one with other
    lists is replaced only with ``force``, else :class:`SplitError`. Returns (folder, what happened).
    """
    path = split_dir(dataset, seed, root)
    sp = make_splits(samples, seed, val_frac, test_frac, ratios)
    status = "written"
    if (path / "meta.json").is_file():
        try:
            old, _ = read_splits(path)
        except (SplitError, ValueError, KeyError):
            old = None
        if old is not None and _same(old, sp):
            status = "unchanged (meta.json refreshed)"
        elif not force:
            what = ("it cannot be read" if old is None else
                    f"{len(set(sp['test']) - set(old['test']))} of {len(sp['test'])} test images would change")
            raise SplitError(f"{path}: a split with different content exists ({what}). Fix: keep it (`busnb splits "
                             "--verify` checks it), or replace it with --force (this changes the test set: results "
                             "of earlier runs are no longer comparable).")
        else:
            status = "replaced (--force)"
    write_splits(sp, path, split_meta(dataset, samples, sp, seed, val_frac, test_frac, ratios, dedup_threshold))
    return path, status


def load_or_make(dataset: str, samples: list[Sample], seed: int = 0, root=None,
                 val_frac: float = 0.1, test_frac: float = 0.2, dedup_threshold: float = DEDUP_THRESHOLD,
                 progress: bool = False) -> dict:
    """The split ``dataset`` (a :func:`split_name`) of ``samples`` for ``seed``.

    On disk: checked against ``samples`` (same ids and classes, no recorded or user group
    across parts, nested ratios) without reading any image. Not on disk: duplicate groups
    are derived from pixels, the split made and written with its groups.
    """
    path = split_dir(dataset, seed, root)
    if (path / "meta.json").is_file():
        splits, meta = read_splits(path)
        check_membership(splits, meta, samples, str(path))
        if "groups" not in meta:
            print(f"{path}: made before splits recorded their groups; only user-given groups are checked. "
                  f"Fix: `busnb splits --dataset <dataset> --seeds {seed}` rewrites its meta.json.")
        check_splits(splits, with_recorded_groups(samples, meta), str(path))
        return splits
    grouped = derive_groups(samples, dedup_threshold, progress=progress)
    path, _ = write_split(dataset, grouped, seed, val_frac, test_frac, root=root, dedup_threshold=dedup_threshold)
    print(f"{path}: new split of {len(samples)} images written")
    return read_splits(path)[0]


def subsets(samples: list[Sample], splits: dict, ratio: float) -> dict[str, list[Sample]]:
    """Samples of ``labeled``, ``unlabeled``, ``val`` and ``test`` for one labeled ratio."""
    by_id = {s.id: s for s in samples}
    r = float(ratio)
    if r not in splits["labeled"]:
        raise SplitError(f"ratio {ratio}% has no split file; available: {sorted(splits['labeled'])}.")
    return {"labeled": [by_id[i] for i in splits["labeled"][r]],
            "unlabeled": [by_id[i] for i in splits["unlabeled"][r]],
            "val": [by_id[i] for i in splits["val"]], "test": [by_id[i] for i in splits["test"]]}
