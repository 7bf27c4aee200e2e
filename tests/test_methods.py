"""One smoke training step for every ablation row: loss finite, student changes, teachers untouched by the optimiser."""
from functools import partial

import pytest
import torch

from busnb.data.tensors import SegArrays
from busnb.methods import ABLATION, build_method
from busnb.models import build_model
from busnb.train import TrainConfig, Trainer

TINY = partial(build_model, "resnet18", None, (16, 8, 8))


@pytest.fixture(scope="module")
def arrays(phantom_small):
    return SegArrays(phantom_small[:4], 32), SegArrays(phantom_small[4:10], 32), SegArrays(phantom_small[10:12], 32)


@pytest.mark.parametrize("variant", list(ABLATION))
def test_one_step_per_ablation_row(variant, arrays, tmp_path):
    lab, unl, val = arrays
    torch.manual_seed(0)
    m = build_method(variant, TINY)
    if getattr(m, "static_teacher", None) is not None:
        torch.nn.init.constant_(m.static_teacher.net.segmentation_head[0].bias, 2.0)  # stands in for stage 1
    frozen = {n: p.clone() for n, p in m.named_parameters() if "teacher" in n}
    before = {n: p.clone() for n, p in m.student.named_parameters()}
    cfg = TrainConfig(epochs=1, batch_labeled=2, batch_unlabeled=2, steps_per_epoch=2, progress=False)
    t = Trainer(m, cfg, lab, val, unl if m.needs_unlabeled else None, tmp_path)
    t.fit(resume=False)
    h = t.history[-1]
    assert all(torch.isfinite(torch.tensor(v)) for k, v in h.items() if isinstance(v, float))
    assert any(not torch.equal(before[n], p) for n, p in m.student.named_parameters())
    opt_ids = {id(p) for g in t.opt.param_groups for p in g["params"]}
    for n, p in m.named_parameters():
        if "teacher" in n:
            assert id(p) not in opt_ids and not p.requires_grad
    if getattr(m, "static_teacher", None) is not None:
        assert all(torch.equal(frozen[n], p) for n, p in m.named_parameters() if "static_teacher" in n)
    if getattr(m, "ema_teacher", None) is not None:  # moved by EMA, not by the optimiser
        assert any(not torch.equal(frozen[n], p) for n, p in m.named_parameters() if "ema_teacher" in n)
    expected = {"Ls"} | ({"Lu"} if m.needs_unlabeled else set()) | ({"Lc"} if variant == "+aurcl" else set())
    assert expected <= set(h)


def test_uewf_target_prefers_the_confident_teacher(arrays):
    m = build_method("+patch_smoothing", TINY)
    torch.nn.init.constant_(m.static_teacher.net.segmentation_head[0].weight, 0.0)
    torch.nn.init.constant_(m.static_teacher.net.segmentation_head[0].bias, 4.0)   # T^A: p = 0.98 everywhere
    torch.nn.init.constant_(m.ema_teacher.net.segmentation_head[0].weight, 0.0)
    torch.nn.init.constant_(m.ema_teacher.net.segmentation_head[0].bias, 0.0)      # T^B: p = 0.5 everywhere
    y, maps = m.teacher_targets(arrays[1].batch([0, 1])["image"])
    # w_A = 1/H(0.982) = 11.1, w_B = 1/ln 2 = 1.44: y_F = 0.927, far above the plain mean 0.741
    assert y.min() > 0.9 and maps["weight_a"].mean() > 7 * maps["weight_b"].mean()


def test_unknown_variant_and_no_teacher():
    with pytest.raises(ValueError, match="unknown method"):
        build_method("nope", TINY)
    with pytest.raises(ValueError, match="at least one teacher"):
        build_method("dual_teacher", TINY, static=False, ema=False)
