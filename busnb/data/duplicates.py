"""Duplicate groups: exact and near-identical images share a group, so no group straddles splits.

Two images are linked when their decoded grayscale pixels are identical (SHA-1 of
shape + pixels) or when the Pearson correlation of their ``thumb``x``thumb`` area-averaged
thumbnails exceeds ``threshold``. Groups are the connected components of these
links (union-find); a group's id is its smallest member id.
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
    from tqdm.auto import tqdm

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


def assign_groups(samples: list[Sample], report: DuplicateReport) -> list[Sample]:
    """Copy of ``samples`` with ``group`` set from ``report`` (own id when not duplicated)."""
    member = {m: g for g, ms in report.groups.items() for m in ms}
    return [s.with_group(member.get(s.id, s.group or s.id)) for s in samples]
