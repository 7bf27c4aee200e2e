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
