"""The real BUSI copy and its 224-px copy (skipped with a reason when not on disk)."""
import numpy as np
import pytest

from busnb import splits as S
from busnb.data import load_dataset, load_pair
from busnb.data.busi import load_busi
from busnb.paths import repo_root

pytestmark = pytest.mark.busi


@pytest.fixture(scope="module")
def busi_grouped(busi):
    """BUSI with duplicate groups derived from pixels (what a split is made with)."""
    return S.derive_groups(busi)


@pytest.fixture(scope="module")
def busi224_root():
    root = repo_root().parent / "shared" / "data" / "BUSI-224" / "Dataset_BUSI_with_GT"
    if not root.is_dir():
        pytest.skip(f"BUSI-224 not found at {root} (the 224-px copy of BUSI's 647 lesion images)")
    return root


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


def test_duplicate_groups(busi_grouped):
    g = {s.id: s.group for s in busi_grouped}
    assert g["benign (433)"] == g["malignant (145)"]  # byte-identical across classes
    assert g["benign (308)"] == g["benign (424)"]     # near-identical (r = 0.990)
    assert len({v for v in g.values()}) < len(busi_grouped) - 50


def test_committed_busi_splits_verify(busi_grouped):
    for seed in (0, 1, 2):
        sp = S.verify_splits(S.split_dir("busi", seed), busi_grouped, rederive=False)
        assert len(sp["train"]) + len(sp["val"]) + len(sp["test"]) == 647


def test_committed_split_records_busi_groups(busi_grouped):
    import json

    from busnb.data.duplicates import group_members

    meta = json.loads((S.split_dir("busi", 0) / "meta.json").read_text())
    assert meta["groups"] == group_members(busi_grouped) and len(meta["groups"]) == 63
    assert meta["ids_fingerprint"] == S.ids_fingerprint(busi_grouped)


def test_busi_masks_validate(busi, capsys):
    from busnb.data import validate_dataset

    r = validate_dataset(busi)
    assert r.n_images == 647 and r.mask_kinds == {"1-bit": 663, "two-valued": 2} and r.empty == []


def test_committed_split_loads_on_busi224_without_rederiving(busi224_root, monkeypatch):
    """Issue 14: at 224 px one near-duplicate pair crosses r = 0.99; the recorded groups make the split travel."""
    def no_detection(*a, **k):
        raise AssertionError("duplicate detection ran while loading a committed split")

    small = load_dataset("busi", root=busi224_root)
    assert S.split_name("busi", busi224_root) == "busi"
    monkeypatch.setattr(S, "find_duplicates", no_detection)
    for seed in (0, 1, 2):
        sp = S.load_or_make("busi", small, seed=seed)
        assert sp == S.read_splits(S.split_dir("busi", seed))[0] and len(sp["test"]) in (129, 130)
    monkeypatch.undo()
    # re-deriving on this copy finds other groups: --verify says so instead of passing silently
    with pytest.raises(S.SplitError, match="groups re-derived from this copy .* differ"):
        S.verify_splits(S.split_dir("busi", 0), small)
