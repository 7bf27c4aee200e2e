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
