from pathlib import Path

import numpy as np
import pytest

from busnb.data import load_pair
from busnb.data.phantom import SHAPES, PhantomConfig, lesion_mask, render_phantom


def test_deterministic_per_seed():
    cfg = PhantomConfig(size=64, seed=5)
    a, ma, la = render_phantom(cfg, 2)
    b, mb, lb = render_phantom(cfg, 2)
    c, _, _ = render_phantom(PhantomConfig(size=64, seed=6), 2)
    assert (a == b).all() and (ma == mb).all() and la == lb
    assert not (a == c).all()


def test_lesions_are_hypoechoic_and_recorded():
    cfg = PhantomConfig(size=96, seed=1, p_marks=0.0)
    for i in range(6):
        img, m, lesions = render_phantom(cfg, i)
        assert m.any() and all(l["shape"] in SHAPES for l in lesions)
        ring = np.zeros_like(m)
        for l in lesions:
            x0, y0, x1, y1 = l["bbox"]
            assert m[y0:y1, x0:x1].any()
            ring[max(0, y0 - 6):y1 + 6, max(0, x0 - 6):x1 + 6] = True
        assert img[m].mean() < img[ring & ~m].mean() - 30  # dark inside, brighter around


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_geometry(shape):
    from skimage.measure import regionprops

    rng = np.random.default_rng(0)
    m = lesion_mask(shape, 128, 128, 64, 64, 16, rng)
    p = regionprops(m.astype(int))[0]
    aspect, solidity = p.axis_major_length / p.axis_minor_length, p.solidity
    if shape == "oval":
        assert aspect > 1.4 and solidity > 0.97
    if shape == "round":
        assert aspect < 1.15 and solidity > 0.97
    if shape in ("lobulated", "irregular"):
        assert solidity < 0.95


def test_written_in_generic_layout(phantom_small):
    assert len(phantom_small) == 16
    s = phantom_small[0]
    assert s.image.parent.name == "images" and s.masks[0].parent.name == "masks"
    assert s.cls == s.meta["lesions"][0]["shape"]
    img, m = load_pair(s)
    assert img.shape == m.shape == (64, 64)


def test_marks_are_burned_in_somewhere():
    cfg = PhantomConfig(size=128, seed=0, p_marks=1.0)
    bright_top = [render_phantom(cfg, i)[0][:12].max() for i in range(6)]
    assert max(bright_top) >= 250


def test_concurrent_phantom_writers_share_one_folder(tmp_path):
    """Sweep jobs that need the same phantom at once: each call returns the complete folder (one writes it under
    a lock, the others find it done), instead of one failing to rename its copy into place."""
    import multiprocessing as mp

    from busnb.data.phantom import PhantomConfig, generate_phantom

    cfg = PhantomConfig(n_images=6, size=48)
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        outs = pool.starmap(generate_phantom, [(tmp_path / "ph", cfg, False)] * 3)
    assert len(set(outs)) == 1 and len(list((tmp_path / "ph" / "images").glob("*.png"))) == 6
    assert [q.name for q in tmp_path.glob(".ph.*")] == [".ph.lock"]  # the lock's folder; no temporary copy left


def test_lesion_caption_says_which_lesion_is_where():
    """00's titles: two lesions are named left to right by their boxes, the primary one (the class) marked."""
    from busnb.data.phantom import lesion_caption
    from busnb.data.record import Sample

    def sample(lesions):
        return Sample("p", Path("p.png"), (), lesions[0]["shape"], None, {"lesions": lesions})

    right, left = {"shape": "oval", "bbox": [90, 60, 140, 90]}, {"shape": "round", "bbox": [10, 60, 50, 90]}
    assert lesion_caption(sample([right, left])) == "round (left) + oval (right, primary)"
    assert lesion_caption(sample([left, right])) == "round (left, primary) + oval (right)"
    assert lesion_caption(sample([right])) == "oval"
    assert lesion_caption(sample([left, right]), sep="\n") == "round (left, primary)\noval (right)"
