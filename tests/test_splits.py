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
    assert S.verify_splits(d, s, rederive=False)["test"] == sp["test"]
    single = {x.id for x in s if x.group.startswith("s")}
    moved = next(i for i in sp["test"] if i in single)
    (d / "test.txt").write_text("".join(f"{i}\n" for i in sp["test"] if i != moved))
    with pytest.raises(S.SplitError, match=f"1 image.* not in the split.*'{moved}'"):
        S.verify_splits(d, s, rederive=False)
    (d / "train.txt").write_text((d / "train.txt").read_text() + moved + "\n")  # moved to train, not dropped
    with pytest.raises(S.SplitError, match=r"train\.txt differs from the one re-derived"):
        S.verify_splits(d, s, rederive=False)
    (d / "val.txt").write_text((d / "val.txt").read_text() + "ghost\n")
    with pytest.raises(S.SplitError, match="ghost"):
        S.verify_splits(d, s, rederive=False)


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


# ---- splits of a dataset on disk: recorded groups, fingerprints, changes, small datasets ----

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from busnb.data import load_dataset  # noqa: E402
from conftest import write_png  # noqa: E402


def _noise(i, size=24):
    return np.random.default_rng(1000 + i).integers(0, 256, (size, size), dtype=np.uint8)


def _folder(root: Path, n=30, dup_of=None, groups=None):
    """``n`` noise images (no two alike), classes a/b; ``dup_of`` {id: id it copies}; ``groups`` {id: group}."""
    dup_of, groups = dup_of or {}, groups or {}
    mask = np.zeros((24, 24), np.uint8)
    mask[5:12, 6:14] = 255
    rows = ["id,class,group"]
    for i in range(n):
        sid = f"im{i:02d}"
        src = int(dup_of[sid][2:]) if sid in dup_of else i
        write_png(root / "images" / f"{sid}.png", _noise(src))
        write_png(root / "masks" / f"{sid}.png", mask)
        rows.append(f"{sid},{'ab'[i % 2]},{groups.get(sid, '')}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _where(tmp_path):
    return tmp_path / "splits"


def test_split_records_groups_user_groups_merged_never_split(tmp_path):
    root = _folder(tmp_path / "d", dup_of={"im04": "im02", "im11": "im10"}, groups={"im00": "p1", "im02": "p1"})
    samples = load_dataset("folder", root=root)
    name = S.split_name("folder", root)
    sp = S.load_or_make(name, samples, seed=0, root=_where(tmp_path))
    meta = json.loads((S.split_dir(name, 0, _where(tmp_path)) / "meta.json").read_text())
    # the patient group p1 keeps its name and absorbs im04, a pixel copy of its member im02
    assert meta["groups"] == {"p1": ["im00", "im02", "im04"], "im10": ["im10", "im11"]}
    assert meta["ids_fingerprint"] == S.ids_fingerprint(samples)
    part = {i: p for p in ("train", "val", "test") for i in sp[p]}
    assert part["im00"] == part["im02"] == part["im04"] and part["im10"] == part["im11"]


def test_merge_groups_is_union_find_from_user_groups():
    from busnb.data import merge_groups
    from busnb.data.record import Sample

    s = [Sample("a", None, (), "x", "case9"), Sample("b", None, (), "x", "case9"), Sample("c", None, (), "x", "c"),
         Sample("d", None, (), "x", "case2"), Sample("e", None, (), "x", "e")]
    g = {x.id: x.group for x in merge_groups(s, [("b", "c"), ("c", "d")])}
    assert g == {"a": "case2", "b": "case2", "c": "case2", "d": "case2", "e": "e"}


def test_loading_never_rederives_groups_so_the_split_travels(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d", dup_of={"im11": "im10"})
    samples = load_dataset("folder", root=root)
    sp = S.load_or_make("x", samples, seed=1, root=_where(tmp_path))

    def no_detection(*a, **k):
        raise AssertionError("duplicate detection ran while loading a split")

    monkeypatch.setattr(S, "find_duplicates", no_detection)
    # another copy of the data where the pair is no longer a duplicate (as BUSI at 224 px)
    write_png(root / "images" / "im11.png", _noise(99))
    assert S.load_or_make("x", load_dataset("folder", root=root), seed=1, root=_where(tmp_path)) == sp
    monkeypatch.undo()
    with pytest.raises(S.SplitError, match="groups re-derived from this copy .* differ.*recorded but not found now"):
        S.verify_splits(S.split_dir("x", 1, _where(tmp_path)), load_dataset("folder", root=root))


def test_recorded_group_across_parts_is_caught_on_load(tmp_path):
    root = _folder(tmp_path / "d")
    samples = load_dataset("folder", root=root)
    sp = S.load_or_make("x", samples, seed=0, root=_where(tmp_path))
    d = S.split_dir("x", 0, _where(tmp_path))
    meta = json.loads((d / "meta.json").read_text())
    meta["groups"] = {"g": sorted([sp["train"][0], sp["test"][0]])}
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(S.SplitError, match="straddles train and test"):
        S.load_or_make("x", samples, seed=0, root=_where(tmp_path))


def test_user_group_edited_across_parts_is_caught_on_load(tmp_path):
    root = _folder(tmp_path / "d")
    sp = S.load_or_make("x", load_dataset("folder", root=root), seed=0, root=_where(tmp_path))
    a, b = sp["train"][0], sp["test"][0]
    lab = root / "labels.csv"
    lab.write_text(lab.read_text().replace(f"{a},{'ab'[int(a[2:]) % 2]},", f"{a},{'ab'[int(a[2:]) % 2]},P")
                   .replace(f"{b},{'ab'[int(b[2:]) % 2]},", f"{b},{'ab'[int(b[2:]) % 2]},P"))
    with pytest.raises(S.SplitError, match="group 'P' .*straddles"):
        S.load_or_make("x", load_dataset("folder", root=root), seed=0, root=_where(tmp_path))


def test_dataset_changed_since_split(tmp_path):
    root = _folder(tmp_path / "d")
    S.load_or_make("x", load_dataset("folder", root=root), seed=0, root=_where(tmp_path))
    more = _folder(tmp_path / "d", n=32)  # two images added
    with pytest.raises(S.SplitError, match=r"2 image\(s\) not in the split \('im30', 'im31'\), 0 listed.*--force"):
        S.load_or_make("x", load_dataset("folder", root=more), seed=0, root=_where(tmp_path))
    for f in ("images/im30.png", "masks/im30.png", "images/im31.png", "masks/im31.png",
              "images/im07.png", "masks/im07.png"):
        (root / f).unlink()
    lab = root / "labels.csv"
    lab.write_text("".join(x for x in lab.read_text().splitlines(True) if not x.startswith(("im30", "im31", "im07"))))
    with pytest.raises(S.SplitError, match=r"0 image\(s\) not in the split, 1 listed but not in the dataset "
                       r"\('im07'\)"):
        S.load_or_make("x", load_dataset("folder", root=root), seed=0, root=_where(tmp_path))
    _folder(tmp_path / "d")
    lab.write_text(lab.read_text().replace("im03,b,", "im03,a,"))
    with pytest.raises(S.SplitError, match=r"classes of the dataset changed .*(a \d+ -> \d+).*Fix"):
        S.load_or_make("x", load_dataset("folder", root=root), seed=0, root=_where(tmp_path))


def test_busnb_splits_refuses_to_overwrite_without_force(tmp_path, monkeypatch, capsys):
    import argparse

    from busnb.cli import cmd_splits

    monkeypatch.setattr(S, "repo_root", lambda: tmp_path)
    root = _folder(tmp_path / "d")
    args = dict(dataset="folder", root=str(root), seeds=[0], val_frac=0.1, test_frac=0.2, verify=False, force=False)
    assert cmd_splits(argparse.Namespace(**args)) == 0
    d = S.split_dir(S.split_name("folder", root), 0)
    assert d.parent.parent == tmp_path / "splits" and "written" in capsys.readouterr().out
    before = (d / "test.txt").read_text()
    assert cmd_splits(argparse.Namespace(**args)) == 0 and "unchanged" in capsys.readouterr().out
    with pytest.raises(S.SplitError, match="different content exists.*test images would change.*--force"):
        cmd_splits(argparse.Namespace(**{**args, "test_frac": 0.3}))
    assert (d / "test.txt").read_text() == before
    assert cmd_splits(argparse.Namespace(**{**args, "test_frac": 0.3, "force": True})) == 0
    assert "replaced (--force)" in capsys.readouterr().out and (d / "test.txt").read_text() != before
    assert cmd_splits(argparse.Namespace(**{**args, "test_frac": 0.3, "verify": True})) == 0
    (d / "test.txt").write_text(before)  # tampered
    with pytest.raises(S.SplitError):
        cmd_splits(argparse.Namespace(**{**args, "verify": True}))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_too_few_images_is_an_error_not_an_empty_part(n):
    with pytest.raises(S.SplitError, match=rf"{n} images .* too few.*would be empty.*at least 6 images"):
        S.make_splits(_samples(n), seed=0)


def test_smallest_split_has_every_part():
    from busnb.data.record import Sample

    assert S.min_images() == 6
    sp = S.make_splits([Sample(f"i{k}", None, (), "c", f"i{k}") for k in range(6)], seed=0)
    assert all(sp[p] for p in ("train", "val", "test"))
    assert all(sp["labeled"][r] and (r == 100 or sp["unlabeled"][r]) for r in S.RATIOS)
    with pytest.raises(S.SplitError, match="unlabeled_99 .* would be empty"):
        S.make_splits([Sample(f"i{k}", None, (), "c", f"i{k}") for k in range(10)], seed=0, ratios=(99.0,))


def test_split_name_per_dataset_copy(tmp_path):
    from busnb.data import PhantomConfig

    a, b = tmp_path / "a" / "my_data", tmp_path / "b" / "my_data"
    na, nb = S.split_name("folder", a), S.split_name("folder", b)
    assert na != nb and na.startswith("folder-my_data-") and len(na) == len("folder-my_data-") + 6
    assert S.split_name("folder", str(a) + "/") == na  # same folder, however written
    assert S.split_name("busi") == S.split_name("busi", tmp_path / "BUSI-224") == "busi"
    assert S.split_name("phantom") == S.split_name("phantom", phantom=PhantomConfig()) == "phantom"
    assert S.split_name("phantom", phantom=PhantomConfig(n_images=16)).startswith("phantom-")
