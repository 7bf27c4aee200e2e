"""Issue-5 baselines: one training step each, copy-paste masks, KL weighting, entropy filter, prototype term."""
from pathlib import Path
import math
from functools import partial

import pytest
import torch

from busnb.data.tensors import SegArrays
from busnb.methods import BASELINES, build_method
from busnb.methods.classic import copy_paste_mask, cross_pseudo_loss
from busnb.methods.dual_uncertainty import entropy_mask, kl_weight, prototype_loss, symmetric_kl
from busnb.models import build_model
from busnb.train import TrainConfig, Trainer

TINY = partial(build_model, "resnet18", None, (32, 16, 16, 8, 8))


@pytest.fixture(scope="module")
def arrays(phantom_small):
    return SegArrays(phantom_small[:4], 32), SegArrays(phantom_small[4:10], 32), SegArrays(phantom_small[10:12], 32)


@pytest.mark.parametrize("name", [b for b in BASELINES if b != "supervised"] + ["dual_uncertainty-no_prototype",
                                                                              "dual_uncertainty-bce_dice"])
def test_training_step(name, arrays, tmp_path):
    lab, unl, val = arrays
    torch.manual_seed(0)
    m = build_method(name, TINY)
    teacher = getattr(m, "teacher", None)
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()} if teacher is not None else None
    before = {n: p.clone() for n, p in m.student.named_parameters()}
    cfg = TrainConfig(epochs=1, batch_labeled=2, batch_unlabeled=2, steps_per_epoch=2, progress=False)
    t = Trainer(m, cfg, lab, val, unl, tmp_path)
    t.fit(resume=False)
    assert all(math.isfinite(v) for k, v in t.history[-1].items() if isinstance(v, float))
    assert any(not torch.equal(before[n], p) for n, p in m.student.named_parameters())
    opt_ids = {id(p) for g in t.opt.param_groups for p in g["params"]}
    if teacher is not None:  # EMA teacher: not optimised, but moved by the EMA update
        assert not any(id(p) in opt_ids for p in teacher.parameters())
        assert any(not torch.equal(t_before[k], v) for k, v in teacher.state_dict().items())
    if hasattr(m, "second"):  # both networks are optimised
        assert all(id(p) in opt_ids for p in m.second.parameters())


def test_copy_paste_mask():
    g = torch.Generator().manual_seed(0)
    m = copy_paste_mask((3, 1, 12, 12), ratio=2 / 3, generator=g)
    assert m.shape == (3, 1, 12, 12) and set(m.unique().tolist()) == {0.0, 1.0}
    assert (m.sum(dim=(1, 2, 3)) == 8 * 8).all()  # one 8x8 rectangle per image
    a, b = torch.zeros(3, 1, 12, 12), torch.ones(3, 1, 12, 12)
    mixed = a * m + b * (1 - m)
    assert torch.equal(mixed, 1 - m)


def test_kl_weight_and_entropy_filter():
    p = torch.tensor([0.9, 0.9, 0.5])
    q = torch.tensor([0.9, 0.1, 0.5])
    w = kl_weight(p, q)
    d = 0.9 * math.log(0.9 / 0.1) + 0.1 * math.log(0.1 / 0.9)  # KL both ways is equal here
    assert w[0] == pytest.approx(1.0) and w[2] == pytest.approx(1.0)
    assert symmetric_kl(p, q)[1].item() == pytest.approx(d, rel=1e-4) and w[1] == pytest.approx(math.exp(-d), rel=1e-4)
    # H(0.5) = 0.693, H(0.99) = 0.056, H(0.7) = 0.611; threshold 0.75 ln 2 = 0.520
    m = entropy_mask(torch.tensor([0.5, 0.99, 0.7]), threshold=0.75 * math.log(2))
    assert m.tolist() == [0.0, 1.0, 0.0]


def test_cross_pseudo_loss_targets_are_the_other_networks_hard_labels():
    l1 = torch.tensor([[4.0, -4.0]])
    l2 = torch.tensor([[4.0, 4.0]])
    loss = cross_pseudo_loss(l1, l2)
    # net 1 learns [1, 1] (second pixel wrong: high loss), net 2 learns [1, 0] (second pixel wrong: high loss)
    assert loss.item() > 2.0
    assert cross_pseudo_loss(l1, l1.clone()).item() < 0.05


def test_cross_pseudo_dice_term_counts_a_small_lesion():
    """A network predicting all background against the other's 2-pixel lesion in 100 pixels: BCE alone
    barely notices (mean over 100 pixels), the Dice term adds ~1; weight 0 on those pixels removes both."""
    from busnb.losses import dice_loss

    l1 = torch.full((1, 1, 10, 10), -6.0)           # net 1: background everywhere (confident)
    l2 = torch.full((1, 1, 10, 10), -6.0)
    l2[0, 0, 0, :2] = 6.0                           # net 2: a 2-pixel lesion
    bce_only = cross_pseudo_loss(l1, l2)
    both = cross_pseudo_loss(l1, l2, dice=True)
    y2 = (l2 > 0).float()
    expected_dice_12 = dice_loss(l1, y2).item()
    q = torch.sigmoid(torch.tensor(-6.0)).item()    # smooth 1: 1 - (2 * 2q + 1) / (100 q + 2 + 1)
    assert bce_only.item() < 0.3
    assert expected_dice_12 == pytest.approx(1 - (4 * q + 1) / (100 * q + 3), rel=1e-5) and expected_dice_12 > 0.65
    assert both.item() == pytest.approx(bce_only.item() + expected_dice_12 + dice_loss(l2, (l1 > 0).float()).item(), rel=1e-5)
    w = torch.ones_like(l2)
    w[0, 0, 0, :2] = 0.0                            # e.g. the entropy filter removed net 2's lesion pixels
    # net 2 learning from net 1 switched off (weight_1 = 0): left is net 1 vs net 2's background only
    filtered = cross_pseudo_loss(l1, l2, weight_1=torch.zeros_like(l1), weight_2=w, dice=True)
    assert filtered.item() == pytest.approx(98 / 100 * -math.log(1 - q) + 1 - 1 / (98 * q + 1), rel=1e-4)
    assert filtered.item() < 0.3 < both.item()


def test_pseudo_loss_option_is_checked():
    with pytest.raises(ValueError, match="pseudo_loss"):
        build_method("cps", TINY, pseudo_loss="dice")


def test_prototype_term():
    # 2 feature dims; reliable background pixels point to +x, reliable lesion pixels to +y
    feats = torch.zeros(1, 2, 1, 6)
    feats[0, 0, 0, :2] = 1.0           # reliable background
    feats[0, 1, 0, 2:4] = 1.0          # reliable lesion
    pseudo = torch.tensor([[[[0, 0, 1, 1, 1, 0]]]]).float()
    reliable = torch.tensor([[[[1, 1, 1, 1, 0, 0]]]]).bool()
    feats[0, 1, 0, 4] = 1.0            # uncertain, pseudo lesion, aligned with the lesion prototype
    feats[0, 0, 0, 5] = 1.0            # uncertain, pseudo background, aligned with background
    good = prototype_loss(feats, pseudo, reliable, temperature=0.1)
    swapped = torch.tensor([[[[0, 0, 1, 1, 0, 1]]]]).float()  # the two uncertain pixels get the wrong class
    bad = prototype_loss(feats, swapped, reliable, temperature=0.1)
    assert good.item() < 0.01 and bad.item() > 5.0
    none = prototype_loss(feats, pseudo, torch.zeros_like(reliable))
    assert none.item() == 0.0 and torch.isfinite(none)


def test_bcp_pretraining_stage_runs_and_initialises_the_teacher(tmp_path):
    """BCP declares its copy-paste pre-training as a stage; the experiment trains it through the same trainer,
    caches it, and both student and teacher start from it."""
    import json

    import torch

    from busnb.config import get_profile
    from busnb.experiment import load_trained, run_experiment

    prof = get_profile("smoke", epochs=1, steps_per_epoch=2)
    r = run_experiment(prof, "bcp", out_dir=tmp_path / "train" / "bcp", progress=False)
    assert r["test"]["n"] > 0 and r["stages"][0]["kind"] == "bcp_pretrain"
    pre = Path(r["stages"][0]["dir"])
    assert (pre / "best.pt").is_file() and (pre / "result.json").is_file()
    hist = json.loads((pre / "history.json").read_text())
    assert len(hist) == 1 and "Ls" in hist[0]  # the copy-paste pre-training ran through the trainer
    m = load_trained(tmp_path / "train" / "bcp", prof, "bcp")
    assert any(k.startswith("teacher.") for k in m.state_dict())
    # a second BCP run on the same split reuses the cached stage (same folder, not retrained)
    mtime = (pre / "best.pt").stat().st_mtime_ns
    r2 = run_experiment(prof, "bcp", out_dir=tmp_path / "train" / "bcp2", progress=False)
    assert r2["stages"][0]["dir"] == str(pre) and (pre / "best.pt").stat().st_mtime_ns == mtime
    st = torch.load(pre / "best.pt", weights_only=False)["net"]
    assert set(st) == set(m.student.state_dict())
