import math

import pytest
import torch

from busnb import uewf as U


def test_entropy_by_hand():
    y = torch.tensor([0.5, 0.9, 1.0, 0.0]).view(1, 1, 1, 4)
    e = U.entropy_map(y).flatten()
    assert e[0] == pytest.approx(math.log(2))
    assert e[1] == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)), rel=1e-5)
    assert e[2] < 1e-4 and e[3] < 1e-4


def test_patch_smoothing_modes():
    e = torch.zeros(1, 1, 4, 6)
    e[..., 0, 0] = 4.0
    p = U.smooth(e, k=2, mode="patch")  # non-overlapping 2x2 patches, upsampled
    assert p.shape == e.shape and torch.allclose(p[..., :2, :2], torch.ones(2, 2)) and p[..., 2:, :].sum() == 0
    o = U.smooth(e, k=3, mode="overlap")  # box filter at stride 1, valid pixels only at the border
    assert o.shape == e.shape and o[0, 0, 0, 0] == pytest.approx(4 / 4) and o[0, 0, 1, 1] == pytest.approx(4 / 9)
    assert torch.equal(U.smooth(e, 14, "pixel"), e)
    odd = U.smooth(torch.ones(1, 1, 15, 17), k=14, mode="patch")  # partial border patches average valid pixels
    assert torch.allclose(odd, torch.ones_like(odd))


def test_fusion_by_hand():
    y_a = torch.full((1, 1, 2, 2), 0.9)   # confident teacher
    y_b = torch.full((1, 1, 2, 2), 0.5)   # maximally uncertain teacher
    y_f, maps = U.fuse(y_a, y_b, k=1, smoothing="pixel", eps=1e-6)
    e_a, e_b = maps["entropy_a"][0, 0, 0, 0].item(), math.log(2)
    w_a, w_b = 1 / (e_a + 1e-6), 1 / (e_b + 1e-6)
    assert y_f[0, 0, 0, 0].item() == pytest.approx((w_a * 0.9 + w_b * 0.5) / (w_a + w_b + 1e-6), rel=1e-5)
    assert 0.5 < y_f.mean() < 0.9 and y_f.mean() > 0.7  # pulled towards the confident teacher
    same, _ = U.fuse(y_a, y_a.clone(), k=14)
    assert torch.allclose(same, y_a, atol=1e-5)
