import math

import numpy as np
import pytest

from busnb.metrics import dice_iou, score, summarize


def sq(y0, x0, s, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[y0:y0 + s, x0:x0 + s] = True
    return m


def test_dice_iou_by_hand():
    a, b = sq(0, 0, 10), sq(0, 5, 10)  # overlap 10x5 = 50, areas 100
    d, j = dice_iou(a, b)
    assert d == pytest.approx(100 / 200) and j == pytest.approx(50 / 150)


def test_hd95_asd_shifted_square():
    a, b = sq(10, 10, 10), sq(10, 13, 10)  # shifted 3 px right
    r = score(a, b)
    # boundary distances: left/right edges 3 px apart, top/bottom edges partly overlapping (0)
    assert 0 < r["hd95"] <= 3.0 + 1e-9 and r["hd95"] == pytest.approx(3.0)
    assert 0 < r["asd"] < 3.0
    # the image's foreground fractions (what busnb.results.size_table bins by)
    assert r["gt_frac"] == pytest.approx(100 / a.size) and r["pred_frac"] == pytest.approx(100 / a.size)
    assert score(sq(0, 0, 4), b)["pred_frac"] == pytest.approx(16 / a.size)


def test_identical_masks():
    r = score(sq(5, 5, 8), sq(5, 5, 8))
    assert (r["dice"], r["iou"], r["hd95"], r["asd"]) == (1.0, 1.0, 0.0, 0.0)


def test_empty_policies():
    gt, empty = sq(5, 5, 8), np.zeros((40, 40), bool)
    r = score(empty, gt)
    assert r["dice"] == 0 and r["hd95"] == pytest.approx(math.hypot(40, 40)) and r["empty_pred"]
    assert r["hd95"] != 0
    n = score(empty, gt, empty_policy="nan")
    assert math.isnan(n["hd95"])
    both = score(empty, empty)
    assert both["dice"] == 1 and both["hd95"] == 0
    s = summarize([n, score(gt, gt, empty_policy="nan")])
    assert s["n_empty_pred"] == 1 and s["hd95_n_nan"] == 1 and s["hd95"] == 0 and s["dice"] == 0.5


def test_size_mismatch_raises():
    with pytest.raises(ValueError, match="differ"):
        score(sq(0, 0, 3), sq(0, 0, 3, (20, 20)))


def test_pixel_auc_by_hand_and_against_pair_counting():
    from busnb.metrics import pixel_auc

    y = np.array([[0, 0, 1], [1, 0, 1]])
    assert pixel_auc(y * 2.0 + 1, y) == 1.0          # every lesion pixel above every background pixel
    assert pixel_auc(-y.astype(float), y) == 0.0     # reversed
    assert pixel_auc(np.full(y.shape, 0.3), y) == 0.5  # constant: ties count half
    assert np.isnan(pixel_auc(np.ones(4), np.zeros(4)))  # one class absent
    rng = np.random.default_rng(0)
    s, t = rng.integers(0, 5, 300).astype(float), rng.random(300) < 0.3  # many ties
    pos, neg = s[t], s[~t]
    want = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert pixel_auc(s, t) == pytest.approx(want, abs=1e-12)
