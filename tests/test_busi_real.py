"""The real BUSI copy (skipped with a reason when it is not on disk)."""
import numpy as np

from busnb import splits as S
from busnb.data import load_dataset, load_pair
from busnb.data.busi import load_busi


def test_counts_and_extra_masks(busi_root):
    allim = load_busi(busi_root, include_normal=True)
    lesion = load_busi(busi_root)
    assert len(allim) == 780 and len(lesion) == 647
    extra = sum(len(s.masks) - 1 for s in allim)
    # benign: 454 mask files for 437 images (17 extra), malignant: 211 for 210 (1 extra)
    assert extra == 18 and sum(len(s.masks) > 1 for s in allim) == 17
    assert len(next(s for s in allim if s.id == "benign (195)").masks) == 3


def test_every_pair_loads_with_matching_size(busi):
    for s in busi:
        img, m = load_pair(s)
        assert img.ndim == 2 and img.shape == m.shape
        assert m.any(), f"{s.id}: empty lesion mask"


def test_union_of_multi_masks(busi):
    from busnb.data import read_mask

    s = next(x for x in busi if x.id == "benign (4)")
    _, union = load_pair(s)
    parts = [read_mask(p) for p in s.masks]
    assert union.sum() == np.logical_or.reduce(parts).sum() > max(p.sum() for p in parts)


def test_duplicate_groups(busi):
    g = {s.id: s.group for s in busi}
    assert g["benign (433)"] == g["malignant (145)"]  # byte-identical across classes
    assert g["benign (308)"] == g["benign (424)"]     # near-identical (r = 0.990)
    assert len({v for v in g.values()}) < len(busi) - 50


def test_committed_busi_splits_verify(busi):
    for seed in (0, 1, 2):
        sp = S.verify_splits(S.split_dir("busi", seed), busi)
        assert len(sp["train"]) + len(sp["val"]) + len(sp["test"]) == 647
