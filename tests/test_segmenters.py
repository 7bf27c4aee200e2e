"""APPG segmenters beyond the paper's SAM: SAM 2 through transformers and MedSAM's checkpoint, tested on tiny
random-init models and hand-made inputs (no weights can be downloaded here)."""
import json

import numpy as np
import pytest

from busnb.appg.gdino_sam import ModelNotFound, medsam_inputs, sam_kind_of
from conftest import tiny_gdino_sam_backend
from busnb.data import load_pair


def test_sam_kind_is_told_from_the_spec(tmp_path):
    assert sam_kind_of("facebook/sam-vit-base") == "sam"
    assert sam_kind_of("facebook/sam2.1-hiera-tiny") == "sam2"
    assert sam_kind_of("/w/sam_vit_b_01ec64.pth") == "sam"
    assert sam_kind_of("/w/medsam_vit_b.pth") == "medsam"
    folder = tmp_path / "my-segmenter"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "sam2"}))
    assert sam_kind_of(str(folder)) == "sam2"  # from its config, whatever the folder is called
    assert sam_kind_of(str(folder), "sam") == "sam"  # an explicit kind wins
    with pytest.raises(ValueError, match="sam_kind"):
        sam_kind_of("x", "sam3")


def test_medsam_preprocessing_matches_its_training_input():
    img = np.full((100, 200), 50, np.uint8)
    img[40:60, 50:150] = 150
    big, boxes = medsam_inputs(img, np.array([[50, 40, 150, 60]], np.float32))
    assert big.shape == (1024, 1024, 3) and big.dtype == np.uint8
    assert big.min() == 0 and big.max() == 255  # min-max stretched
    np.testing.assert_allclose(boxes[0], [256, 409.6, 768, 614.4], rtol=1e-5)  # x * 1024/200, y * 1024/100
    # the box still frames the bright block on the resized image
    x0, y0, x1, y1 = boxes[0].round().astype(int)
    assert big[y0 + 4:y1 - 4, x0 + 4:x1 - 4].mean() > 250 and big[: y0 - 8].mean() < 5


@pytest.fixture(scope="module")
def tiny_sam2_backend(tmp_path_factory):
    return tiny_gdino_sam_backend(tmp_path_factory.mktemp("weights2"), "sam2")


def test_sam2_segments_each_box_at_image_size_and_reuses_the_embedding(tiny_sam2_backend, phantom_small):
    b = tiny_sam2_backend
    assert b.sam_kind == "sam2" and b.id()["sam_kind"] == "sam2"
    img, _ = load_pair(phantom_small[0])
    dets = b.detect(img, "dark oval", top_k=2)
    assert dets
    masks = b.segment(img, dets)
    assert len(masks) == len(dets)
    for m, score in masks:
        assert m.shape == img.shape and m.dtype == bool and np.isfinite(score)
    key = b.sam._key
    b.segment(img, dets[:1])
    assert b.sam._key == key  # same image: embedding reused


def test_missing_segmenters_say_what_to_download(tmp_path):
    from busnb.appg.gdino_sam import GDinoSamBackend
    from busnb.appg.tiny import build_tiny_gdino

    g = str(build_tiny_gdino(tmp_path / "gdino"))
    with pytest.raises(ModelNotFound, match="huggingface-cli download"):
        GDinoSamBackend(gdino=g, sam="facebook/sam2.1-hiera-tiny")  # offline in tests
    with pytest.raises(ModelNotFound, match="MedSAM release"):
        GDinoSamBackend(gdino=g, sam=str(tmp_path / "medsam_vit_b.pth"))
    with pytest.raises(ValueError, match="official checkpoint"):
        GDinoSamBackend(gdino=g, sam="some/medsam-port", sam_kind="medsam")
