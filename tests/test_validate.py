"""Masks validated once per dataset copy: value sets, emptiness, sizes; cached by content fingerprint."""
import numpy as np
import pytest

from busnb.data import DataError, load_dataset, load_pair, validate_dataset
from busnb.data.folder import load_folder
from conftest import write_png


def _folder(root, masks: dict, size=(20, 30)):
    for name, m in masks.items():
        write_png(root / "images" / f"{name}.png", np.full(size, 70, np.uint8))
        write_png(root / "masks" / f"{name}.png", m)
    return root


def _blob(v=255, size=(20, 30)):
    m = np.zeros(size, np.uint8)
    m[4:10, 5:15] = v
    return m


def test_zero_one_folder_dataset_validates_and_trains_on_lesions(tmp_path, capsys):
    root = _folder(tmp_path, {f"x{i}": _blob(1) for i in range(4)})
    samples = load_dataset("folder", root=root)
    r = validate_dataset(samples)
    assert r.mask_kinds == {"two-valued": 4} and r.empty == [] and not r.cached
    assert load_pair(samples[0])[1].sum() == 60
    assert "4 images, 4 mask files (4 two-valued;" in capsys.readouterr().out


def test_all_empty_masks_is_an_error(tmp_path):
    root = _folder(tmp_path, {f"x{i}": np.zeros((20, 30), np.uint8) for i in range(3)})
    with pytest.raises(DataError, match=r"all 3 masks are empty.*nothing to learn.*Fix"):
        validate_dataset(load_folder(root))


def test_all_whole_image_masks_is_an_error(tmp_path):
    root = _folder(tmp_path, {f"x{i}": np.full((20, 30), 255, np.uint8) for i in range(2)})
    with pytest.raises(DataError, match=r"all 2 masks cover the whole image.*inverted"):
        validate_dataset(load_folder(root))


def test_some_empty_are_kept_counted_and_printed(tmp_path, capsys):
    m = {"a": _blob(), "b": np.zeros((20, 30), np.uint8), "c": np.zeros((20, 30), np.uint8)}
    soft = _blob(200)
    soft[3, 5:15] = 60  # an anti-aliased edge: a many-valued mask
    m["d"] = soft
    r = validate_dataset(load_folder(_folder(tmp_path, m)))
    out = capsys.readouterr().out
    assert r.empty == ["b", "c"] and r.many_valued == ["d.png"]
    assert r.mask_kinds == {"empty": 2, "many-valued": 1, "two-valued": 1}
    assert "2 image(s) with an empty mask, kept as lesion-free images: 'b', 'c'" in out
    assert "1 mask file(s) hold more than two values" in out and "'d.png'" in out


def test_mask_size_mismatch_is_an_error(tmp_path):
    root = _folder(tmp_path, {"a": _blob(), "b": _blob()})
    write_png(root / "masks" / "b.png", _blob(size=(21, 30)))
    with pytest.raises(DataError, match=r"b\.png: mask is 30x21 \(WxH\) but its image .*b\.png is 30x20.*Fix"):
        validate_dataset(load_folder(root))


def test_unreadable_mask_is_an_error(tmp_path):
    root = _folder(tmp_path, {"a": _blob(), "b": _blob()})
    (root / "masks" / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"b\.png: cannot be read as an image"):
        validate_dataset(load_folder(root))


def test_report_cached_by_content_fingerprint(tmp_path, monkeypatch, capsys):
    root = _folder(tmp_path, {"a": _blob(), "b": np.zeros((20, 30), np.uint8)})
    first = validate_dataset(load_folder(root))
    import busnb.data.validate as V

    def no_reading(*a, **k):
        raise AssertionError("validated again although the dataset did not change")

    monkeypatch.setattr(V, "read_image", no_reading)
    again = validate_dataset(load_folder(root))
    assert again.cached and again.content == first.content and again.empty == ["b"]
    assert "dataset checked (cached)" in capsys.readouterr().out
    monkeypatch.undo()
    write_png(root / "masks" / "b.png", _blob(1))  # the copy changes: validated again
    third = validate_dataset(load_folder(root))
    assert not third.cached and third.content != first.content and third.empty == []
