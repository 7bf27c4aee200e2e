"""Duplicate groups: exact and near-identical images share a group, so no group straddles splits.

Two images are linked when their decoded grayscale pixels are identical (SHA-1 of
shape + pixels) or when the Pearson correlation of their ``thumb``x``thumb`` area-averaged
thumbnails exceeds ``threshold``. Groups are the connected components of these
links (union-find); a group's id is its smallest member id. :func:`assign_groups` merges
these into the samples' own groups (user-given groups are kept, never split).

Detection reads every image, so it runs when a split is made and in ``busnb splits
--verify``, never when a committed split is loaded (the split records its groups).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .io import read_image
from .record import Sample


@dataclass
class DuplicateReport:
    exact_pairs: list[tuple[str, str]]
    near_pairs: list[tuple[str, str, float]]
    groups: dict[str, list[str]]  # group id -> members, only groups of size > 1
    cross_class_groups: list[str]

    def summary(self) -> dict:
        return {
            "exact_pairs": len(self.exact_pairs),
            "near_pairs": len(self.near_pairs),
            "groups_with_duplicates": len(self.groups),
            "images_in_such_groups": sum(len(v) for v in self.groups.values()),
            "cross_class_groups": len(self.cross_class_groups),
        }


def _thumb(img: np.ndarray, thumb: int) -> np.ndarray:
    t = np.asarray(Image.fromarray(img).resize((thumb, thumb), Image.BOX), dtype=np.float64).ravel()
    t -= t.mean()
    return t / (np.linalg.norm(t) + 1e-12)


def find_duplicates(samples: list[Sample], threshold: float = 0.99, thumb: int = 32,
                    progress: bool = False) -> DuplicateReport:
    from ..progress import tqdm

    if not samples:
        return DuplicateReport([], [], {}, [])
    ids = [s.id for s in samples]
    hashes, thumbs = {}, []
    for s in tqdm(samples, desc="duplicates", disable=not progress):
        img = read_image(s.image)
        h = hashlib.sha1(str(img.shape).encode() + img.tobytes()).hexdigest()
        hashes.setdefault(h, []).append(s.id)
        thumbs.append(_thumb(img, thumb))
    exact = [(g[0], o) for g in hashes.values() for o in g[1:]]
    corr = np.stack(thumbs) @ np.stack(thumbs).T
    iu, ju = np.nonzero(np.triu(corr > threshold, k=1))
    exact_set = {frozenset(p) for p in exact}
    near = [(ids[i], ids[j], float(corr[i, j])) for i, j in zip(iu, ju)
            if frozenset((ids[i], ids[j])) not in exact_set]
    parent = {i: i for i in ids}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, *_ in exact + near:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[str, list[str]] = {}
    for i in ids:
        comps.setdefault(find(i), []).append(i)
    groups = {min(m): sorted(m) for m in comps.values() if len(m) > 1}
    cls = {s.id: s.cls for s in samples}
    cross = [g for g, m in groups.items() if len({cls[x] for x in m}) > 1]
    return DuplicateReport(exact, near, groups, cross)


def merge_groups(samples: list[Sample], links) -> list[Sample]:
    """Copy of ``samples`` whose groups are the connected components of their own groups
    and ``links`` (pairs or longer tuples of ids that belong together).

    Union-find starts from each sample's own ``group`` (a user-given group such as a patient
    or a BUS-BRA case, else the id), so links merge groups and never split one. A merged
    group's id is the smallest user-given group id it joins, else its smallest member id.
    """
    own = {s.id: s.group or s.id for s in samples}
    parent = {g: g for g in own.values()}
    rank = {g: (g in own and own[g] == g, g) for g in parent}  # user-given names first, then ids

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for link in links:
        gs = [own[i] for i in link if i in own]
        for g in gs[1:]:
            ra, rb = sorted((find(gs[0]), find(g)), key=rank.__getitem__)
            if ra != rb:
                parent[rb] = ra
    return [s.with_group(find(own[s.id])) for s in samples]


def assign_groups(samples: list[Sample], report: DuplicateReport) -> list[Sample]:
    """Copy of ``samples`` with duplicate groups merged into their own (user-given) groups."""
    return merge_groups(samples, report.groups.values())


def group_members(samples: list[Sample]) -> dict[str, list[str]]:
    """Group id -> sorted member ids, for groups of more than one image."""
    out: dict[str, list[str]] = {}
    for s in samples:
        out.setdefault(s.group or s.id, []).append(s.id)
    return {g: sorted(m) for g, m in sorted(out.items()) if len(m) > 1}
