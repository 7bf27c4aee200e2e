"""Issue-5 baselines: one training step each, copy-paste masks, KL weighting, entropy filter, prototype term.
Issue 11: the published recipes of Mean Teacher, CPS and BCP (ramp-ups from 0, CPS's cross-entropy on the other
network's hard labels, the optimiser hook with SGD schedules stepped per iteration, resume with it)."""
from pathlib import Path
import math
from functools import partial

import numpy as np
import pytest
import torch

from busnb.data.tensors import SegArrays
from busnb.methods import BASELINES, build_method
from busnb.methods.classic import copy_paste_mask, cross_pseudo_loss
from busnb.models import build_model
from busnb.train import TrainConfig, Trainer

TINY = partial(build_model, "resnet18", None, (16, 8, 8))


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


def test_largest_component_keeps_one_region_per_image():
    """BCP's pseudo-label post-processing: per image the largest connected region (8-connected in 2D, 26 in 3D),
    empty images stay empty, and images do not mix."""
    from busnb.methods.classic import largest_component

    m = torch.zeros(3, 1, 8, 8)
    m[0, 0, :2, :2] = 1          # 4 pixels
    m[0, 0, 4:7, 4:7] = 1        # 9 pixels: kept
    m[1, 0, 1, 1] = m[1, 0, 2, 2] = m[1, 0, 3, 3] = 1  # a diagonal line is one 8-connected region
    m[1, 0, 6, 0] = 1
    out = largest_component(m)
    assert out.dtype == m.dtype and out.shape == m.shape
    assert out[0].sum() == 9 and out[0, 0, 4:7, 4:7].all() and not out[0, 0, :2, :2].any()
    assert out[1].sum() == 3 and out[1, 0, 6, 0] == 0
    assert out[2].sum() == 0
    v = torch.zeros(1, 1, 5, 5, 5)
    v[0, 0, 0, 0, 0] = v[0, 0, 1, 1, 1] = 1  # corner-touching voxels: one 26-connected region
    v[0, 0, 4, 4, 4] = 1
    assert largest_component(v).sum() == 2


@pytest.mark.parametrize("largest_cc", [True, False])
def test_bcp_pseudo_labels_keep_their_largest_component(arrays, monkeypatch, largest_cc):
    """BCP applies the largest-component step to the teacher's hard labels (the release does), unless switched
    off; with it the method cannot be captured as a CUDA graph (host-side labelling)."""
    import busnb.methods.classic as classic

    calls = []

    def spy(mask):
        calls.append(mask.shape)
        return torch.zeros_like(mask)

    monkeypatch.setattr(classic, "largest_component", spy)
    m = build_method("bcp" if largest_cc else "bcp-no_largest_cc", TINY)
    assert m.capturable is (not largest_cc)
    bl, bu = _batches(arrays)
    loss, _ = m.loss(bl, bu, 0)
    assert torch.isfinite(loss) and len(calls) == (1 if largest_cc else 0)
    if largest_cc:
        assert calls[0] == (2, 1, 32, 32)


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
    # the stage-1 network is scored alone on test once, and that row is published beside the runs
    stage_test = json.loads((pre / "metrics.json").read_text())
    assert stage_test["variant"] == "bcp_pretrain" and stage_test["test"] == r["stages"][0]["test"]
    assert stage_test["test"]["n"] == r["test"]["n"] and (pre / "test_per_image.csv").is_file()
    published = list((tmp_path / "train").glob("_stages/bcp_pretrain-*/metrics.json"))
    assert len(published) == 1 and json.loads(published[0].read_text())["stage_dir"] == str(pre)
    m = load_trained(tmp_path / "train" / "bcp", prof, "bcp")
    assert any(k.startswith("teacher.") for k in m.state_dict())
    # a second BCP run on the same split reuses the cached stage (same folder, not retrained)
    mtime = (pre / "best.pt").stat().st_mtime_ns
    r2 = run_experiment(prof, "bcp", out_dir=tmp_path / "train" / "bcp2", progress=False)
    assert r2["stages"][0]["dir"] == str(pre) and (pre / "best.pt").stat().st_mtime_ns == mtime
    st = torch.load(pre / "best.pt", weights_only=False)["net"]
    assert set(st) == set(m.student.state_dict())


# -- issue 11: published recipes ---------------------------------------------------------------------------

def _batches(arrays, n_l=2, n_u=2):
    lab, unl, _ = arrays
    return lab.batch(torch.arange(n_l)), unl.batch(torch.arange(n_u))


@pytest.mark.parametrize("student_noise", [False, True])
def test_mean_teacher_perturbs_the_teachers_input_and_the_student_only_when_asked(arrays, student_noise):
    """SSL4MIS's Mean Teacher: the student sees the unlabeled batch clean, the EMA teacher a noisy copy
    (clipped N(0, 0.1^2)); ``student_noise=True`` (the original paper's form) perturbs the student's too."""
    torch.manual_seed(0)
    m = build_method("mean_teacher-student_noise" if student_noise else "mean_teacher", TINY)
    seen = {"student": [], "teacher": []}
    for name in seen:
        getattr(m, name).register_forward_pre_hook(lambda mod, args, name=name: seen[name].append(args[0].clone()))
    m.total_steps = 10
    bl, bu = _batches(arrays)
    m.loss(bl, bu, 0)
    x_u = bu["image"]
    student_u = [x for x in seen["student"] if x.shape == x_u.shape and not torch.equal(x, bl["image"])]
    assert len(seen["teacher"]) == 1 and len(student_u) == 1
    t_noise = seen["teacher"][0] - x_u
    assert 0 < t_noise.abs().max() <= 0.2 + 1e-6
    assert torch.equal(student_u[0], x_u) is (not student_noise)
    if student_noise:
        assert not torch.allclose(student_u[0] - x_u, t_noise)  # its own draw


@pytest.mark.parametrize("evaluate", ["student", "teacher"])
def test_mean_teacher_validates_and_stores_the_network_it_is_asked_to(arrays, tmp_path, evaluate):
    """``evaluate="teacher"`` (variant mean_teacher-teacher): the EMA network is validated and kept in best.pt;
    by default the student is. After a few steps the two differ, so best.pt tells which one was stored."""
    lab, unl, val = arrays
    torch.manual_seed(0)
    m = build_method("mean_teacher-teacher" if evaluate == "teacher" else "mean_teacher", TINY)
    assert m.eval_net() is getattr(m, evaluate)
    cfg = TrainConfig(epochs=1, batch_labeled=2, batch_unlabeled=2, steps_per_epoch=3, progress=False)
    Trainer(m, cfg, lab, val, unl, tmp_path).fit(resume=False)
    best = torch.load(tmp_path / "best.pt", weights_only=False)["net"]
    for name, net in (("student", m.student), ("teacher", m.teacher)):
        same = all(torch.equal(best[k], v.detach().cpu()) for k, v in net.state_dict().items())
        assert same is (name == evaluate)
    with pytest.raises(ValueError, match="evaluate"):
        build_method("mean_teacher", TINY, evaluate="ema")


@pytest.mark.parametrize("name", ["mean_teacher", "cps"])
def test_unsupervised_weight_ramps_up_from_zero(name, arrays):
    """w(t) = 0.1 exp(-5 (1 - t/T)^2): ~0 at the first step (0.1 e^-5 = 6.7e-4), 0.1 from t = T on; with
    rampup_steps None, T is the whole run, which the trainer sets (total_steps)."""
    torch.manual_seed(0)
    m = build_method(name, TINY)
    bl, bu = _batches(arrays)
    with pytest.raises(ValueError, match="total_steps"):  # outside a trainer the horizon is unknown
        m.loss(bl, bu, 0)
    m.total_steps = 200
    w = [float(m.loss(bl, bu, t)[1]["w"]) for t in (0, 100, 200, 500)]
    assert w[0] == pytest.approx(0.1 * math.exp(-5), rel=1e-5) and w[0] < 1e-3
    assert w[1] == pytest.approx(0.1 * math.exp(-5 * 0.25), rel=1e-5)
    assert w[2] == pytest.approx(0.1) and w[3] == pytest.approx(0.1)
    fixed = build_method(name, TINY, rampup_steps=10)  # an explicit length needs no trainer
    assert float(fixed.loss(bl, bu, 10)[1]["w"]) == pytest.approx(0.1)


def test_trainer_sets_the_ramp_horizon_to_the_whole_run(arrays, tmp_path):
    lab, unl, val = arrays
    m = build_method("cps", TINY)
    cfg = TrainConfig(epochs=3, batch_labeled=2, batch_unlabeled=2, steps_per_epoch=2, progress=False)
    t = Trainer(m, cfg, lab, val, unl, tmp_path)
    assert m.total_steps == 6
    t.fit(resume=False)
    w = [h["w"] for h in t.history]  # epoch means of w(t) over steps (0, 1), (2, 3), (4, 5) of T = 6
    expect = [sum(0.1 * math.exp(-5 * (1 - s / 6) ** 2) for s in pair) / 2 for pair in ((0, 1), (2, 3), (4, 5))]
    assert w == pytest.approx(expect, rel=1e-5)


def test_cps_loss_is_cross_entropy_on_the_other_networks_argmax():
    """Hand-made logits: net 1 learns net 2's hard labels and vice versa, pixel-mean BCE, no gradient
    through the pseudo-labels."""
    l1 = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]], requires_grad=True)
    l2 = torch.tensor([[[[-1.0, 3.0], [2.0, -2.0]]]], requires_grad=True)
    y1 = [1.0, 0.0, 1.0, 0.0]                     # [l1 > 0]
    y2 = [0.0, 1.0, 1.0, 0.0]                     # [l2 > 0]

    def bce(z, y):
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    z1, z2 = l1.detach().flatten().tolist(), l2.detach().flatten().tolist()
    expect = sum(bce(z, y) for z, y in zip(z1, y2)) / 4 + sum(bce(z, y) for z, y in zip(z2, y1)) / 4
    loss = cross_pseudo_loss(l1, l2)
    assert loss.item() == pytest.approx(expect, rel=1e-6)
    loss.backward()
    # d/dz BCE(z, y) = sigmoid(z) - y, over 4 pixels; the target (the other network's label) is a constant
    g1 = [(1 / (1 + math.exp(-z)) - y) / 4 for z, y in zip(z1, y2)]
    g2 = [(1 / (1 + math.exp(-z)) - y) / 4 for z, y in zip(z2, y1)]
    assert l1.grad.flatten().tolist() == pytest.approx(g1, rel=1e-5)
    assert l2.grad.flatten().tolist() == pytest.approx(g2, rel=1e-5)


def test_optimizer_hook_builds_the_published_sgd(arrays, tmp_path):
    """optimizer="paper": SGD(lr 0.01, momentum 0.9, weight decay 1e-4) with poly(0.9) stepped per iteration:
    the lr of step k is 0.01 (1 - k/T)^0.9; "shared" keeps the profile's Adam + ReduceLROnPlateau."""
    lab, unl, val = arrays
    cfg = TrainConfig(epochs=2, batch_labeled=2, batch_unlabeled=2, steps_per_epoch=3, progress=False)
    m = build_method("cps", TINY, optimizer="paper")
    assert m.optimizer_recipe()["schedule"] == "poly"
    t = Trainer(m, cfg, lab, val, unl, tmp_path / "paper")
    assert isinstance(t.opt, torch.optim.SGD) and not t.capture
    g = t.opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) == (0.01, 0.9, 1e-4, False)
    assert {id(p) for p in g["params"]} == {id(p) for p in m.trainable()}
    t.fit(resume=False)
    assert t.iter_sched.k == 6
    assert [h["lr"] for h in t.history] == pytest.approx([0.01 * (1 - k / 6) ** 0.9 for k in (3, 6)], abs=1e-12)
    assert t.iter_sched.lr_at(0) == 0.01 and t.iter_sched.lr_at(5) == pytest.approx(0.01 * (1 / 6) ** 0.9)
    shared = Trainer(build_method("cps", TINY), cfg, lab, val, unl, tmp_path / "shared")
    assert isinstance(shared.opt, torch.optim.Adam) and shared.iter_sched is None
    assert isinstance(shared.sched, torch.optim.lr_scheduler.ReduceLROnPlateau)


def test_step_and_constant_schedules():
    from busnb.optim import IterSchedule, build_optimizer

    p = [torch.nn.Parameter(torch.zeros(2))]
    opt, s = build_optimizer({"lr": 0.01, "schedule": "step", "step_every": 2500, "gamma": 0.1}, p, 6000)
    assert [s.lr_at(k) for k in (0, 2499, 2500, 4999, 5000)] == pytest.approx([0.01, 0.01, 1e-3, 1e-3, 1e-4])
    opt2, c = build_optimizer({"lr": 0.01, "schedule": "constant"}, p, 10)
    for _ in range(5):
        c.step()
    assert opt2.param_groups[0]["lr"] == 0.01
    # the state is the step count: a fresh schedule loaded from it sets the optimiser's lr where it was
    opt3 = torch.optim.SGD(p, lr=1.0)
    s2 = IterSchedule(opt3, {"lr": 0.01, "schedule": "poly", "power": 0.9}, 10)
    s2.load_state_dict({"k": 4})
    assert opt3.param_groups[0]["lr"] == pytest.approx(0.01 * 0.6 ** 0.9)


@pytest.mark.parametrize("bad, match", [({"optimizer": "sgd"}, "paper"), ({"optimizer": "Paper"}, "shared")])
def test_optimizer_option_is_checked(bad, match):
    for name in ("cps", "mean_teacher", "bcp"):
        with pytest.raises(ValueError, match=match):
            build_method(name, TINY, **bad)


def test_recipe_errors_name_the_key():
    from busnb.optim import check_recipe

    with pytest.raises(ValueError, match="schedule"):
        check_recipe({"lr": 0.01, "schedule": "cosine"})
    with pytest.raises(ValueError, match="unknown key"):
        check_recipe({"lr": 0.01, "momentun": 0.9})
    with pytest.raises(ValueError, match="lr"):
        check_recipe({"schedule": "poly"})


def test_resume_with_the_sgd_recipe_continues_identically(tmp_path):
    """Smoke profile, CPS with its paper recipe: killed after epoch 1 and resumed, the run ends with the same
    parameters, losses and learning rates as an uninterrupted one (schedule state in last.pt)."""
    from busnb.config import get_profile
    from busnb.experiment import prepare
    from busnb.train import seed_everything, train_config

    prof = get_profile("smoke", epochs=3, steps_per_epoch=3)
    parts = prepare(prof, ratio=20, seed=0)
    size = 32
    lab, val, unl = (SegArrays(parts[k], size) for k in ("labeled", "val", "unlabeled"))

    def trainer(out, callbacks=()):
        seed_everything(0)
        m = build_method("cps", TINY, optimizer="paper")
        cfg = train_config(prof, 0, progress=False)
        return Trainer(m, cfg, lab, val, unl, out, callbacks=callbacks)

    ref = trainer(tmp_path / "ref")
    ref.fit()

    def kill(tr, row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "run", [kill]).fit()
    st = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert st["sched"]["k"] == 3 and st["epoch"] == 1
    resumed = trainer(tmp_path / "run")
    resumed.fit()
    assert resumed.iter_sched.k == ref.iter_sched.k == 9
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in ref.history]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in ref.history], rel=1e-6)
    a, b = ref.method.state_dict(), resumed.method.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    ma = ref.opt.state_dict()["state"]
    mb = resumed.opt.state_dict()["state"]
    assert all(torch.allclose(ma[i]["momentum_buffer"], mb[i]["momentum_buffer"], atol=1e-6) for i in ma)


def test_bcp_paper_optimizer_reaches_its_pretraining_stage():
    m = build_method("bcp", TINY, optimizer="paper")
    (spec,) = m.stages()
    assert spec.params == {"optimizer": "paper"} and m.optimizer_recipe()["schedule"] == "constant"
    assert build_method("bcp", TINY).stages()[0].params == {}  # the default keeps its cached stage key
    from busnb.methods.classic import BCPPretrain

    assert BCPPretrain(TINY, **spec.params).optimizer_recipe()["lr"] == 0.01


def test_bcp_plain_pretrain_variant_trains_its_stage_without_copy_paste(arrays):
    """``bcp-plain_pretrain`` (a diagnostic): its stage is plain supervised training on the labeled batch (loss =
    BCE + Dice of the clean images), under its own stage key; BCP's own stage mixes the images."""
    from busnb.losses import bce_dice
    from busnb.methods.classic import BCPPretrain

    (spec,) = build_method("bcp-plain_pretrain", TINY).stages()
    assert spec.kind == "bcp_pretrain" and spec.params == {"copy_paste": False}
    bl, _ = _batches(arrays, n_l=3)
    torch.manual_seed(0)
    plain, cp = BCPPretrain(TINY, **spec.params), BCPPretrain(TINY)
    cp.load_state_dict(plain.state_dict())
    plain.eval(), cp.eval()
    with torch.no_grad():
        want = bce_dice(plain.student(bl["image"]), bl["mask"])
        assert torch.allclose(plain.loss(bl, None, 0)[0], want)
        assert not torch.allclose(cp.loss(bl, None, 0)[0], want)


def test_cps_default_keeps_labeled_batch_norm_statistics_apart():
    """Default (the CPS authors' release): each network sees the labeled and the unlabeled images in separate
    forward passes, so in training mode the labeled outputs do not depend on the unlabeled batch; with
    joint_bn=True (variant cps-joint_bn) they do. The switch is part of the options (the run identity)."""
    torch.manual_seed(0)
    sep = build_method("cps", TINY, rampup_steps=10)
    assert sep.opts["joint_bn"] is False
    joint = build_method("cps-joint_bn", TINY, rampup_steps=10)
    assert joint.opts["joint_bn"] is True
    joint.load_state_dict(sep.state_dict())
    g = torch.Generator().manual_seed(3)
    bl = {"image": torch.rand(2, 1, 32, 32, generator=g), "mask": (torch.rand(2, 1, 32, 32, generator=g) > 0.7).float()}
    bu1, bu2 = ({"image": torch.rand(2, 1, 32, 32, generator=g) * s} for s in (0.2, 1.0))
    ls = lambda m, bu: m.loss(bl, bu, step=0)[1]["Ls"].item()  # noqa: E731
    joint.train(), sep.train()
    assert ls(sep, bu1) == pytest.approx(ls(sep, bu2), abs=1e-6)
    assert abs(ls(joint, bu1) - ls(joint, bu2)) > 1e-4


def _teacher_depends_on_batch_only_in_release(shared, release, g):
    """Both methods in training mode, same weights: the release teacher's output for an image changes with its batch
    partner (batch statistics), the shared one's does not (running statistics). Returns the first batch."""
    release.load_state_dict(shared.state_dict())
    assert shared.opts["batch_norm"] == "shared" and release.opts["batch_norm"] == "release"
    x = torch.rand(2, 1, 32, 32, generator=g)
    other = torch.cat([x[:1], torch.rand(1, 1, 32, 32, generator=g) * 3])  # same first image, another partner
    for m, depends in ((shared, False), (release, True)):
        m.train()
        assert m.teacher.training is depends and m.student.training
        with torch.no_grad():
            a, b = m.teacher(x)[0], m.teacher(other)[0]
        assert (not torch.allclose(a, b, atol=1e-5)) is depends
    return x


def test_bcp_release_batch_norm_teacher_uses_batch_statistics():
    """BCP's default (the release's handling): in training the EMA teacher normalises by the unlabeled batch's
    own statistics, so an image's pseudo-label depends on the images batched with it; with ``bcp-shared_bn``
    (eval-mode teacher) it does not. The student sees the two mixed batches in two passes. Bad values are
    refused; ``bcp-plain_pretrain`` keeps the shared handling it was measured with."""
    torch.manual_seed(0)
    shared, release = build_method("bcp-shared_bn", TINY), build_method("bcp", TINY)
    g = torch.Generator().manual_seed(1)
    x = _teacher_depends_on_batch_only_in_release(shared, release, g)
    release.eval()
    assert not release.teacher.training
    calls = []
    release.student.register_forward_hook(lambda mod, inp, out: calls.append(len(inp[0])))
    release.train()
    bl = {"image": torch.rand(2, 1, 32, 32, generator=g), "mask": (torch.rand(2, 1, 32, 32, generator=g) > 0.7).float()}
    loss, _ = release.loss(bl, {"image": x}, 0)
    assert torch.isfinite(loss) and calls == [2, 2]
    with pytest.raises(ValueError, match="batch_norm='joint'"):
        build_method("bcp", TINY, batch_norm="joint")
    assert build_method("bcp-plain_pretrain", TINY).opts["batch_norm"] == "shared"


def test_mean_teacher_release_batch_norm_teacher_uses_batch_statistics(arrays):
    """``mean_teacher-release_bn`` (SSL4MIS never puts its EMA model in eval mode): in training the teacher
    normalises its noisy unlabeled batch by that batch's statistics, so an image's target depends on its batch
    partners; by default (eval-mode teacher) it does not. In eval mode both use running statistics, the EMA update
    still copies the student's, and a bad value is refused."""
    torch.manual_seed(0)
    shared, release = build_method("mean_teacher", TINY), build_method("mean_teacher-release_bn", TINY)
    _teacher_depends_on_batch_only_in_release(shared, release, torch.Generator().manual_seed(1))
    release.total_steps = 10
    bl, bu = _batches(arrays)
    loss, _ = release.loss(bl, bu, 0)
    loss.backward()
    release.after_step(0)
    for t, s in zip(release.teacher.buffers(), release.student.buffers()):
        assert torch.equal(t, s)
    release.eval()
    assert not release.teacher.training
    with pytest.raises(ValueError, match="batch_norm='joint'"):
        build_method("mean_teacher", TINY, batch_norm="joint")


def test_mean_teacher_joint_batch_norm_passes_labeled_and_unlabeled_as_one_batch(arrays):
    """``mean_teacher-joint_bn`` (SSL4MIS): one student pass over labeled + unlabeled, so L_s depends on the
    unlabeled batch through batch-norm statistics; the default's two passes keep them apart. Same weights: the
    consistency term's inputs are the same images either way."""
    torch.manual_seed(0)
    sep, joint = build_method("mean_teacher", TINY), build_method("mean_teacher-joint_bn", TINY)
    assert sep.opts["joint_bn"] is False and joint.opts["joint_bn"] is True
    joint.load_state_dict(sep.state_dict())
    bl, bu = _batches(arrays)
    bu2 = {**bu, "image": torch.rand_like(bu["image"]) * 2}
    for m in (sep, joint):
        m.total_steps = 10
        m.train()
        sizes = []
        h = m.student.register_forward_hook(lambda mod, inp, out: sizes.append(len(inp[0])))
        ls = [float(m.loss(bl, b, 0)[1]["Ls"]) for b in (bu, bu2)]
        h.remove()
        n_l, n_u = len(bl["image"]), len(bu["image"])
        assert sizes == ([n_l + n_u] * 2 if m is joint else [n_l, n_u] * 2)
        assert (abs(ls[0] - ls[1]) > 1e-5) is (m is joint)


@pytest.mark.parametrize("consistency", ["unlabeled", "all"])
def test_mean_teacher_consistency_runs_over_the_images_it_is_asked_to(arrays, consistency):
    """``mean_teacher-all_consistency`` (the original paper): the teacher sees the labeled and the unlabeled images,
    each with noise, and L_u is the MSE over both batches' pixels; by default (SSL4MIS) the unlabeled ones only.
    L_u is recomputed here from the student's clean outputs and the teacher's outputs on the inputs it saw."""
    torch.manual_seed(0)
    m = build_method("mean_teacher-all_consistency" if consistency == "all" else "mean_teacher", TINY)
    assert m.opts["consistency"] == consistency
    m.total_steps, seen = 10, []
    m.train()
    m.teacher.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    bl, bu = _batches(arrays, n_l=2, n_u=3)
    lu = float(m.loss(bl, bu, 0)[1]["Lu"])
    clean = torch.cat([bl["image"], bu["image"]]) if consistency == "all" else bu["image"]
    assert len(seen) == 1 and seen[0].shape == clean.shape
    assert 0 < (seen[0] - clean).abs().max() <= 0.2 + 1e-6
    with torch.no_grad():
        p_s = torch.sigmoid(torch.cat([m.student(bl["image"]), m.student(bu["image"])]))[-len(clean):]
        p_t = torch.sigmoid(m.teacher(seen[0]))
    assert lu == pytest.approx(float(((p_s - p_t) ** 2).mean()), rel=1e-4)
    with pytest.raises(ValueError, match="consistency='labeled'"):
        build_method("mean_teacher", TINY, consistency="labeled")


@pytest.mark.parametrize("warmup", ["count", "mean"])
def test_ema_warmup_forms(warmup):
    """``ema_update``'s two warm-ups on a one-parameter network whose student takes the values 1, 2, 3, ...:
    "mean" (Mean Teacher's code, SSL4MIS) keeps the teacher at the plain mean of the students so far until the
    decay caps it; "count" ((t+1)/(t+10)) follows the student faster. The tensor step (captured CUDA graphs) gives
    the same teacher as the int step."""
    from busnb.methods.base import ema_update

    nets = {k: (torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)) for k in ("int", "tensor")}
    seen = []
    for t in range(150):
        for kind, (teacher, student) in nets.items():
            with torch.no_grad():
                student.weight.fill_(t + 1.0)
                if t == 0:
                    teacher.weight.fill_(-5.0)  # any start: the first update (a = 0 under "mean") overwrites it
            ema_update(teacher, student, 0.99, torch.tensor(t) if kind == "tensor" else t, warmup=warmup)
        seen.append(float(nets["int"][0].weight.detach()))
        assert float(nets["tensor"][0].weight.detach()) == pytest.approx(seen[-1], rel=1e-5)
    if warmup == "mean":
        assert seen[0] == 1.0 and seen[49] == pytest.approx(np.mean(np.arange(1, 51)))  # mean of students 1..50
        assert seen[98] == pytest.approx(50.0)  # a = 0.99 reached at step 99: the mean of 1..99
        assert 50.0 < seen[149] < 150.0
    else:
        assert seen[0] == pytest.approx(0.1 * -5.0 + 0.9 * 1.0)  # a = 1/10 at step 0
        assert seen[49] > np.mean(np.arange(1, 51)) + 5  # follows the recent students, not their mean
    with pytest.raises(ValueError, match="warmup"):
        ema_update(*nets["int"], 0.99, 0, warmup="linear")
    m = build_method("mean_teacher-ema_mean" if warmup == "mean" else "mean_teacher", TINY)
    assert m.opts["ema_warmup"] == warmup


def _decoder_state(net):
    return net.net.decoder.state_dict()


def test_two_networks_from_one_pretrained_unet_start_with_different_decoders(tmp_path):
    """CPS as published: the two networks share the pretrained backbone and their heads are drawn at random. From
    one ``unet.pt`` (encoder + decoder, ssl_method=restore) the second network's decoder is drawn again - new
    weights, fresh batch-norm statistics - and both encoders keep the file's weights; the first network keeps
    the file's decoder. From scratch or from an encoder-only file nothing changes: the second network is the
    very draw it was before (no extra random numbers used)."""
    torch.manual_seed(0)
    src = TINY()
    with torch.no_grad():  # pretrained-looking batch-norm statistics, so a reset is visible
        for mod in src.net.decoder.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.fill_(0.5)
                mod.num_batches_tracked.fill_(7)
    state = {k: v for k, v in src.net.state_dict().items() if not k.startswith("segmentation_head.")}
    torch.save(state, tmp_path / "unet.pt")
    torch.save(src.net.encoder.state_dict(), tmp_path / "encoder.pt")
    pre = partial(build_model, "resnet18", str(tmp_path / "unet.pt"), (16, 8, 8))
    for m in (build_method("cps", pre), build_method("dual_uncertainty", pre, second_arch="unet")):
        for net in (m.student, m.second):
            assert all(torch.equal(v, state[f"encoder.{k}"]) for k, v in net.net.encoder.state_dict().items())
        assert all(torch.equal(v, state[f"decoder.{k}"]) for k, v in _decoder_state(m.student).items())
        second = _decoder_state(m.second)
        convs = [k for k, v in second.items() if k.endswith("weight") and v.dim() == 4]
        assert convs and not any(torch.equal(second[k], state[f"decoder.{k}"]) for k in convs)
        norms = [b for b in m.second.net.decoder.modules() if isinstance(b, torch.nn.BatchNorm2d)]
        assert norms and all(float(b.running_mean.abs().max()) == 0 and int(b.num_batches_tracked) == 0
                             for b in norms)
    assert build_method("cps", pre).report(None) == {"second_decoder_redrawn": True}
    for weights in (None, str(tmp_path / "encoder.pt")):
        make = partial(build_model, "resnet18", weights, (16, 8, 8))
        torch.manual_seed(1)
        m = build_method("cps", make)
        torch.manual_seed(1)
        make()
        reference = make()  # the second network CPS built before this change
        assert all(torch.equal(v, reference.state_dict()[k]) for k, v in m.second.state_dict().items())
        assert m.report(None) == {"second_decoder_redrawn": False}
