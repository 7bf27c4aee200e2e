"""Readers on synthetic files: every mask mode, the BUSI layout, and every kind of bad input."""
import numpy as np
import pytest
from PIL import Image

from busnb.data import DataError, load_dataset, read_image, read_mask
from busnb.data.busi import load_busi
from busnb.data.busbra import load_busbra
from busnb.data.folder import load_folder
from busnb.data.udiat import load_udiat
from conftest import write_png

BLOB = np.zeros((20, 30), np.uint8)
BLOB[5:12, 8:20] = 255


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "I;16"])
def test_mask_modes(tmp_path, mode):
    p = tmp_path / f"m_{mode.replace(';', '')}.png"
    Image.fromarray(BLOB).convert(mode).save(p)
    assert (read_mask(p) == (BLOB > 0)).all()


def test_rgba_mask_colour_and_alpha_only(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[BLOB > 0, 0] = 255  # red lesion, opaque everywhere
    write_png(tmp_path / "a.png", rgba)
    assert (read_mask(tmp_path / "a.png") == (BLOB > 0)).all()
    alpha = np.zeros((20, 30, 4), np.uint8)
    alpha[..., 3] = BLOB  # lesion only in alpha
    write_png(tmp_path / "b.png", alpha)
    assert (read_mask(tmp_path / "b.png") == (BLOB > 0)).all()


def test_rgb_image_to_gray(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200
    write_png(tmp_path / "i.png", rgb)
    g = read_image(tmp_path / "i.png")
    assert g.shape == (10, 12) and g.dtype == np.uint8 and abs(int(g[0, 0]) - round(0.587 * 200)) <= 1


def test_unreadable_image_names_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png.*Fix"):
        read_image(bad)


def _busi_tree(tmp_path):
    root = tmp_path / "Dataset_BUSI_with_GT"
    img = np.full((20, 30), 90, np.uint8)
    for cls in ("benign", "malignant", "normal"):
        write_png(root / cls / f"{cls} (1).png", img)
        write_png(root / cls / f"{cls} (1)_mask.png", BLOB if cls != "normal" else BLOB * 0, "1")
    second = np.zeros_like(BLOB)
    second[14:18, 2:6] = 255
    write_png(root / "benign" / "benign (1)_mask_1.png", np.stack([second] * 4, -1))  # RGBA extra mask
    return root


def test_busi_layout_union_and_normal(tmp_path):
    from busnb.data import load_pair

    root = _busi_tree(tmp_path)
    lesion = load_busi(tmp_path)  # parent of Dataset_BUSI_with_GT works too
    assert [s.id for s in lesion] == ["benign (1)", "malignant (1)"]
    assert len(load_busi(root, include_normal=True)) == 3
    _, m = load_pair(lesion[0])
    assert m.sum() == (BLOB > 0).sum() + 16


def test_busi_bad_inputs(tmp_path):
    root = _busi_tree(tmp_path)
    (root / "malignant" / "malignant (1)_mask.png").unlink()
    with pytest.raises(DataError, match=r"malignant \(1\)\.png: image without mask"):
        load_busi(root)
    write_png(root / "malignant" / "malignant (1)_mask.png", BLOB)
    write_png(root / "malignant" / "malignant (9)_mask.png", BLOB)
    with pytest.raises(DataError, match=r"mask without image"):
        load_busi(root)


def test_folder_mask_size_mismatch(tmp_path):
    from busnb.data import load_pair

    write_png(tmp_path / "images" / "a.png", np.zeros((20, 30), np.uint8))
    write_png(tmp_path / "masks" / "a_mask.png", np.zeros((21, 30), np.uint8))
    s = load_folder(tmp_path)[0]
    with pytest.raises(DataError, match=r"a_mask.png: mask is 30x21.*Fix"):
        load_pair(s)


def test_folder_empty_and_missing(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_folder(tmp_path)
    write_png(tmp_path / "images" / "x.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError, match="x.png: image without mask"):
        load_folder(tmp_path)
    with pytest.raises(DataError, match="needs root"):
        load_dataset("folder")


def test_folder_labels_csv(tmp_path):
    write_png(tmp_path / "images" / "x.png", np.zeros((5, 5), np.uint8))
    write_png(tmp_path / "masks" / "x.png", np.zeros((5, 5), np.uint8))
    (tmp_path / "labels.csv").write_text("id,class,group\nx,malignant,patient7\n")
    s = load_folder(tmp_path)[0]
    assert (s.cls, s.group) == ("malignant", "patient7")


def test_busbra_and_udiat_layouts(tmp_path):
    bb = tmp_path / "bb"
    for i in ("bus_0001-l", "bus_0001-r", "bus_0002-l"):
        write_png(bb / "Images" / f"{i}.png", np.zeros((8, 8), np.uint8))
        write_png(bb / "Masks" / f"{i.replace('bus_', 'mask_')}.png", np.zeros((8, 8), np.uint8))
    (bb / "bus_data.csv").write_text("ID,Pathology,Case\nbus_0001-l,benign,1\nbus_0001-r,benign,1\nbus_0002-l,malignant,2\n")
    s = load_busbra(bb)
    assert [x.group for x in s] == ["case1", "case1", "case2"] and s[2].cls == "malignant"
    (bb / "Masks" / "mask_0002-l.png").unlink()
    with pytest.raises(DataError, match="bus_0002-l.png: image without mask"):
        load_busbra(bb)
    ud = tmp_path / "ud"
    write_png(ud / "original" / "000001.png", np.zeros((8, 8), np.uint8))
    write_png(ud / "GT" / "000001.png", np.zeros((8, 8), np.uint8))
    assert load_udiat(ud)[0].id == "000001"
    with pytest.raises(DataError, match="GT"):
        load_udiat(tmp_path / "nothing")


def test_unknown_dataset_root_message(monkeypatch):
    monkeypatch.setattr("busnb.data.find_dataset_root", lambda name: None)
    with pytest.raises(DataError, match="BUSNB_BUSBRA_ROOT"):
        load_dataset("busbra")


# ---- mask value sets (read_mask's documented rule) ----

def test_zero_one_masks_are_foreground(tmp_path):
    """8-bit masks holding {0, 1} (max 1) read as lesion = 1, not as empty (issue 9: Dice 1.0 on empty masks)."""
    from busnb.data.io import read_mask_kind

    write_png(tmp_path / "m01.png", (BLOB > 0).astype(np.uint8))
    m, kind = read_mask_kind(tmp_path / "m01.png")
    assert kind == "two-valued" and (m == (BLOB > 0)).all()


@pytest.mark.parametrize("lo,hi", [(0, 38), (1, 255), (0, 255)])
def test_two_valued_masks_larger_value_is_foreground(tmp_path, lo, hi):
    from busnb.data.io import read_mask_kind

    write_png(tmp_path / "m.png", np.where(BLOB > 0, hi, lo).astype(np.uint8))
    m, kind = read_mask_kind(tmp_path / "m.png")
    assert kind == "two-valued" and (m == (BLOB > 0)).all()


def test_many_valued_mask_thresholds_at_half_maximum(tmp_path):
    """Anti-aliased / JPEG-like masks: foreground above half the largest value."""
    from busnb.data.io import read_mask_kind

    a = np.zeros((20, 30), np.uint8)
    a[5:12, 8:20] = 200
    a[4, 8:20] = 90    # soft edge below half of 200: background
    a[12, 8:20] = 110  # above half: foreground
    write_png(tmp_path / "m.png", a)
    m, kind = read_mask_kind(tmp_path / "m.png")
    assert kind == "many-valued" and m.sum() == 7 * 12 + 12 and not m[4].any() and m[12, 8:20].all()
    jpg = tmp_path / "m.jpg"
    Image.fromarray(BLOB).save(jpg, quality=60)
    mj, kj = read_mask_kind(jpg)
    assert kj == "many-valued" and (mj == (BLOB > 0)).mean() > 0.98


def test_empty_and_constant_masks(tmp_path):
    from busnb.data.io import read_mask_kind

    write_png(tmp_path / "e.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "c.png", np.full((8, 8), 255, np.uint8))
    assert read_mask_kind(tmp_path / "e.png")[1] == "empty" and not read_mask(tmp_path / "e.png").any()
    assert read_mask_kind(tmp_path / "c.png")[1] == "constant" and read_mask(tmp_path / "c.png").all()


def test_white_rgba_mask_with_lesion_in_alpha(tmp_path):
    """Constant colour, varying alpha: the alpha channel is the mask (not the whole image)."""
    rgba = np.full((20, 30, 4), 255, np.uint8)
    rgba[..., 3] = BLOB
    write_png(tmp_path / "w.png", rgba)
    assert (read_mask(tmp_path / "w.png") == (BLOB > 0)).all()


# ---- folder layout: every bad input is an error or a printed, counted decision ----

def _folder(root, names=("a", "b"), mask_suffix=""):
    for n in names:
        write_png(root / "images" / f"{n}.png", np.full((20, 30), 80, np.uint8))
        write_png(root / "masks" / f"{n}{mask_suffix}.png", BLOB)
    return root


def test_folder_skips_dotfiles_and_prints_non_images(tmp_path, capsys):
    root = _folder(tmp_path)
    (root / "images" / "._a.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "masks" / "._a.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "images" / ".DS_Store").write_bytes(b"x")
    (root / "images" / "README.txt").write_text("my data")
    s = load_folder(root)
    out = capsys.readouterr().out
    assert [x.id for x in s] == ["a", "b"]
    assert "skipped 2 hidden file(s)" in out and "skipped 1 hidden file(s)" in out and "'._a.png'" in out
    assert "ignored 1 entry that is not an image" in out and "'README.txt'" in out


def test_folder_same_stem_twice_is_an_error(tmp_path):
    root = _folder(tmp_path)
    write_png(root / "images" / "a.jpg", np.full((20, 30), 80, np.uint8))
    with pytest.raises(DataError, match=r"a\.jpg and .*a\.png|a\.png and .*a\.jpg"):
        load_folder(root)


def test_folder_plain_and_mask_suffix_is_ambiguous(tmp_path):
    root = _folder(tmp_path)
    write_png(root / "masks" / "a_mask.png", BLOB)
    with pytest.raises(DataError, match=r"masks/a\.png and .*a_mask\.png: both are masks.*ambiguous.*a_mask_1\.png"):
        load_folder(root)


def test_folder_several_lesions_with_mask_n_suffix(tmp_path):
    from busnb.data import load_pair

    root = _folder(tmp_path, mask_suffix="_mask")
    second = np.zeros_like(BLOB)
    second[14:18, 2:6] = 255
    write_png(root / "masks" / "a_mask_1.png", second)
    a = load_folder(root)[0]
    assert [p.name for p in a.masks] == ["a_mask.png", "a_mask_1.png"]
    assert load_pair(a)[1].sum() == (BLOB > 0).sum() + 16


def test_folder_labels_csv_with_bom_and_spaces(tmp_path):
    root = _folder(tmp_path)
    (root / "labels.csv").write_bytes("id,class,group\na, benign ,p1\nb,malignant,\n".encode("utf-8-sig"))
    s = {x.id: x for x in load_folder(root)}
    assert (s["a"].cls, s["a"].group, s["b"].cls, s["b"].group) == ("benign", "p1", "malignant", "b")


def test_folder_labels_csv_errors(tmp_path):
    root = _folder(tmp_path)
    lab = root / "labels.csv"
    lab.write_text("id,class\na,benign\nbb,malignant\n")  # typo: 'bb'
    with pytest.raises(DataError, match=r"labels.csv:3: id 'bb' matches no image.*Fix"):
        load_folder(root)
    lab.write_text("id,class\na,benign\n")  # no row for b: not a silent third class
    with pytest.raises(DataError, match=r"no row for 1 image.*'b'.*Fix"):
        load_folder(root)
    lab.write_text("id,class\na,benign\nb,benign\na,malignant\n")
    with pytest.raises(DataError, match=r"labels.csv:4: id 'a' is listed twice"):
        load_folder(root)
    lab.write_text("name,label\na,benign\n")
    with pytest.raises(DataError, match=r"needs the columns 'id,class'"):
        load_folder(root)


def test_busbra_bom_and_unlisted_image(tmp_path):
    bb = tmp_path / "bb"
    for i in ("bus_0001-l", "bus_0002-l"):
        write_png(bb / "Images" / f"{i}.png", np.zeros((8, 8), np.uint8))
        write_png(bb / "Masks" / f"{i.replace('bus_', 'mask_')}.png", np.zeros((8, 8), np.uint8))
    (bb / "bus_data.csv").write_bytes("ID,Pathology,Case\nbus_0001-l,benign,1\n".encode("utf-8-sig"))
    with pytest.raises(DataError, match=r"1 image\(s\) not listed in bus_data.csv: 'bus_0002-l.png'"):
        load_busbra(bb)
    (bb / "Images" / "bus_0002-l.png").unlink()
    assert load_busbra(bb)[0].id == "bus_0001-l"


def test_udiat_labels_need_every_image(tmp_path):
    ud = tmp_path / "ud"
    for i in ("000001", "000002"):
        write_png(ud / "original" / f"{i}.png", np.zeros((8, 8), np.uint8))
        write_png(ud / "GT" / f"{i}.png", np.zeros((8, 8), np.uint8))
    (ud / "labels.csv").write_text("id,class\n000001,benign\n")
    with pytest.raises(DataError, match="no row for 1 image"):
        load_udiat(ud)
