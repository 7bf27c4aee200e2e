import pytest

from busnb import splits as S
from busnb.data.record import Sample


def _samples(n=200):
    out = []
    for i in range(n):
        cls = "malignant" if i % 3 == 0 else "benign"
        group = f"g{i // 4}" if i < 40 else f"s{i}"  # 10 groups of 4 duplicates
        out.append(Sample(f"im{i:03d}", None, (), cls, group))
    return out


def test_deterministic_disjoint_no_group_leak():
    s = _samples()
    a, b = S.make_splits(s, seed=7), S.make_splits(s, seed=7)
    assert a == b and S.make_splits(s, seed=8)["test"] != a["test"]
    S.check_splits(a, s)  # raises on leakage or overlap
    parts = {i: p for p in ("train", "val", "test") for i in a[p]}
    assert len(parts) == len(s)
    for g in {x.group for x in s}:
        assert len({parts[x.id] for x in s if x.group == g}) == 1


def test_stratified_and_fractions():
    s = _samples(300)
    sp = S.make_splits(s, seed=0)
    cls = {x.id: x.cls for x in s}
    frac_mal = lambda ids: sum(cls[i] == "malignant" for i in ids) / len(ids)  # noqa: E731
    assert abs(frac_mal(sp["test"]) - 1 / 3) < 0.06 and abs(frac_mal(sp["train"]) - 1 / 3) < 0.06
    assert abs(len(sp["test"]) / 300 - 0.2) < 0.03 and abs(len(sp["val"]) / 300 - 0.1) < 0.03


def test_nested_labeled_ratios():
    sp = S.make_splits(_samples(400), seed=1)
    sizes = []
    for lo, hi in zip(S.RATIOS, S.RATIOS[1:]):
        assert set(sp["labeled"][lo]) <= set(sp["labeled"][hi])
        sizes.append(len(sp["labeled"][lo]))
    assert sizes == sorted(sizes) and set(sp["labeled"][100.0]) == set(sp["train"])
    assert abs(len(sp["labeled"][10.0]) / len(sp["train"]) - 0.10) < 0.03
    assert set(sp["unlabeled"][2.5]) == set(sp["train"]) - set(sp["labeled"][2.5])


def test_write_verify_and_detect_tampering(tmp_path):
    s = _samples()
    sp = S.make_splits(s, seed=3)
    d = S.write_splits(sp, tmp_path / "x" / "seed3", S.split_meta("x", s, sp, 3, 0.1, 0.2))
    assert S.verify_splits(d, s)["test"] == sp["test"]
    lines = (d / "test.txt").read_text().splitlines()
    (d / "test.txt").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(S.SplitError, match="test.txt differs"):
        S.verify_splits(d, s)
    (d / "val.txt").write_text((d / "val.txt").read_text() + "ghost\n")
    with pytest.raises(S.SplitError, match="ghost"):
        S.verify_splits(d, s)


def test_leak_is_caught():
    s = _samples()
    sp = S.make_splits(s, seed=0)
    g_member = next(x for x in s if x.group == "g0" and x.id in sp["train"]) if any(
        x.id in sp["train"] for x in s if x.group == "g0") else next(x for x in s if x.group == "g0")
    src = next(p for p in ("train", "val", "test") if g_member.id in sp[p])
    dst = "test" if src != "test" else "train"
    sp[src].remove(g_member.id)
    sp[dst].append(g_member.id)
    with pytest.raises(S.SplitError, match="straddles"):
        S.check_splits(sp, s)


def test_committed_phantom_split_matches_default_phantom():
    from busnb.data import load_dataset

    samples = load_dataset("phantom")
    for seed in (0, 1, 2):
        S.verify_splits(S.split_dir("phantom", seed), samples)
