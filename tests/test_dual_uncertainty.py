"""The dual-network uncertainty-guided method (arXiv 2509.13084): each term on hand-made tensors, the two
architectures, the switches, the published optimiser, and one trainer step."""
import math
from functools import partial

import numpy as np
import pytest
import torch

from busnb.methods import VARIANTS, build_method
from busnb.methods.dual_uncertainty import (DUAL_SGD, class_entropy, cosine_consistency, entropy_filter,
                                            kl_rectified_loss, prototype_contrast, two_class_logits)
from busnb.models import PARTNER_2D, build_model

TINY = partial(build_model, "resnet18", None, (16, 8, 8))
LN2 = math.log(2)


pytestmark = pytest.mark.usefixtures("one_thread")


def _z(*v):
    """(1, 1, 1, len(v)) logits."""
    return torch.tensor(v, dtype=torch.float32).view(1, 1, 1, -1)


def test_two_class_logits_match_the_sigmoid():
    z = _z(-3.0, 0.0, 2.0)
    p = torch.softmax(two_class_logits(z), 1)
    assert p.shape == (1, 2, 1, 3)
    assert torch.allclose(p[:, 1:], torch.sigmoid(z)) and torch.allclose(p.sum(1), torch.ones(1, 1, 3))


def test_entropy_is_of_probabilities_not_logits():
    h = class_entropy(_z(0.0, 20.0, -20.0, 1.0))
    s = torch.sigmoid(torch.tensor(1.0)).item()
    assert torch.isfinite(h).all()              # the release's entropy of logits is NaN here
    assert h[0, 0, 0].item() == pytest.approx(LN2, rel=1e-6)
    assert 0 < h[0, 0, 1].item() < 1e-6 and 0 < h[0, 0, 2].item() < 1e-6  # confident, but not exactly 0
    assert h[0, 0, 3].item() == pytest.approx(-(s * math.log(s) + (1 - s) * math.log(1 - s)), rel=1e-5)


def test_entropy_filter_ignores_pixels_uncertain_in_both_networks():
    a = _z(10, 10, 0, 0, 0, 0, 0, 0, 0, 0)      # net A confident on pixels 0, 1
    b = _z(0, 0, 0, 0, 0, 0, 0, 0, 10, 10)      # net B confident on pixels 8, 9
    keep = entropy_filter(a, b, percentile=20)
    assert keep.shape == (1, 1, 1, 10)
    assert keep.flatten().tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    # same rule as numpy's percentile on random logits
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1, 6, 7, generator=g) * 3, torch.randn(2, 1, 6, 7, generator=g) * 3
    ha, hb = class_entropy(a).numpy(), class_entropy(b).numpy()
    expect = ~((ha >= np.percentile(ha, 20)) & (hb >= np.percentile(hb, 20)))
    assert np.array_equal(entropy_filter(a, b, 20)[:, 0].numpy().astype(bool), expect)
    assert 0.2 <= expect.mean() <= 0.4 + 1e-9    # kept: the union of each network's 20 % most certain


def test_kl_rectified_loss_by_hand():
    # student undecided (p = 0.5), teacher sure of foreground: y = 1, CE = ln 2, KL(T=0.5) = ln 2, w = 1/2
    s, t = _z(0.0), _z(20.0)
    loss, d = kl_rectified_loss(s, t, temperature=0.5)
    assert d["kl"].item() == pytest.approx(LN2, rel=1e-5) and d["w"].item() == pytest.approx(0.5, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * LN2 + LN2, rel=1e-5)
    # the temperature sharpens the teacher: teacher logit 1 at T = 0.5 is sigmoid(2)
    q = torch.sigmoid(torch.tensor(2.0)).item()
    _, d = kl_rectified_loss(_z(0.0), _z(1.0), temperature=0.5)
    assert d["kl"].item() == pytest.approx(q * math.log(2 * q) + (1 - q) * math.log(2 * (1 - q)), rel=1e-5)
    # identical networks: KL 0, weight 1, loss = plain CE
    z = _z(-2.0, 3.0)
    loss, d = kl_rectified_loss(z, z.clone())
    ce = -(math.log(torch.sigmoid(torch.tensor(2.0)).item()) + math.log(torch.sigmoid(torch.tensor(3.0)).item())) / 2
    assert d["kl"].item() == pytest.approx(0.0, abs=1e-6) and loss.item() == pytest.approx(ce, rel=1e-5)


def test_kl_rectified_loss_keep_mask_weighting_switch_and_gradients():
    s = _z(0.0, -4.0).requires_grad_(True)
    t = _z(20.0, 20.0).requires_grad_(True)
    keep = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    loss, d = kl_rectified_loss(s, t, temperature=0.5, keep=keep)
    kl = d["kl"].item()  # mean KL over both pixels: the KL term is not filtered
    assert loss.item() == pytest.approx(0.5 * LN2 / 1 + kl, rel=1e-4)  # CE mean over the one kept pixel
    loss.backward()
    assert s.grad.abs().sum() > 0 and t.grad is None  # the teacher is detached
    plain, _ = kl_rectified_loss(_z(0.0, -4.0), _z(20.0, 20.0), keep=keep, weighting=False)
    assert plain.item() == pytest.approx(LN2, rel=1e-5)  # no weight, no KL term
    union = torch.tensor([[[0, 0]]])  # an explicit target (the release's union) replaces the teacher's argmax
    lo, _ = kl_rectified_loss(_z(-20.0, -20.0), _z(20.0, 20.0), target=union, weighting=False)
    assert lo.item() < 1e-6


def test_prototype_contrast_pulls_uncertain_features_to_their_class_prototype():
    feats = torch.zeros(1, 2, 1, 6)
    feats[0, 0, 0, :2] = 1.0          # reliable background -> +x
    feats[0, 1, 0, 2:4] = 1.0         # reliable lesion -> +y
    feats[0, 1, 0, 4] = 1.0           # uncertain, along the lesion prototype
    feats[0, 0, 0, 5] = 1.0           # uncertain, along the background prototype
    pseudo = torch.tensor([[[0, 0, 1, 1, 1, 0]]])
    keep = torch.tensor([1.0, 1, 1, 1, 0, 0]).view(1, 1, 1, 6)
    good = prototype_contrast(feats, torch.tensor([[[0, 0, 1, 1, 1, 0]]]), pseudo, keep, temperature=0.1)
    bad = prototype_contrast(feats, torch.tensor([[[0, 0, 1, 1, 0, 1]]]), pseudo, keep, temperature=0.1)
    assert good.item() == pytest.approx(math.log1p(math.exp(-10)), rel=1e-2)
    assert bad.item() == pytest.approx(10 + math.log1p(math.exp(-10)), rel=1e-4)
    f = feats.clone().requires_grad_(True)  # gradient reaches the uncertain features only (prototypes detached)
    prototype_contrast(f, torch.tensor([[[0, 0, 1, 1, 0, 1]]]), pseudo, keep).backward()
    assert f.grad[0, :, 0, 4:].abs().sum() > 0 and f.grad[0, :, 0, :4].abs().sum() == 0
    none = prototype_contrast(f, pseudo, pseudo, torch.ones_like(keep))   # nothing uncertain
    nolesion = prototype_contrast(f, pseudo, torch.zeros_like(pseudo), keep)  # no reliable lesion pixel
    assert none.item() == 0.0 and nolesion.item() == 0.0 and none.requires_grad


def test_cosine_consistency():
    assert cosine_consistency(_z(3.0, -1.0), _z(3.0, -1.0)).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_consistency(_z(20.0), _z(-20.0)).item() == pytest.approx(1.0, abs=1e-6)  # [0,1] vs [1,0]
    # p = [0.5, 0.5] vs [0, 1]: cos = 0.5 / (sqrt(0.5) * 1)
    assert cosine_consistency(_z(0.0), _z(30.0)).item() == pytest.approx(1 - math.sqrt(0.5), rel=1e-5)


@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    return build_method("dual_uncertainty", TINY, rampup_steps=1)


def test_two_different_architectures_and_the_published_optimiser(method):
    m = method
    assert m.student.arch == "unet" and m.second.arch == PARTNER_2D[0] == "linknet"
    enc = lambda net: type(net.net.encoder).__name__  # noqa: E731
    assert enc(m.student) != enc(m.second)           # different encoders too (ResNet vs MobileNet-V2)
    assert m.optimizer_recipe() is None  # shared Adam by default (the comparison table)
    paper = dict(m.opts, optimizer="paper")
    old, m.opts = m.opts, paper
    try:
        r = m.optimizer_recipe()
    finally:
        m.opts = old
    assert (r["lr"], r["momentum"], r["weight_decay"], r["schedule"], r["step_every"], r["gamma"]) == \
        (0.01, 0.9, 1e-4, "step", 2500, 0.1) and r["name"] == DUAL_SGD["name"] == "sgd"
    with pytest.raises(ValueError, match="pseudo_target"):
        build_method("dual_uncertainty", TINY, pseudo_target="both")
    with pytest.raises(ValueError, match="optimizer"):
        build_method("dual_uncertainty", TINY, optimizer="adamw")


@pytest.mark.parametrize("variant", ["dual_uncertainty", "dual_uncertainty-no_entropy_filter",
                                     "dual_uncertainty-no_kl_weighting", "dual_uncertainty-no_prototype",
                                     "dual_uncertainty-no_cosine", "dual_uncertainty-bce_dice",
                                     "dual_uncertainty-joint_bn", "dual_uncertainty-release"])
def test_loss_terms_and_gradients_reach_both_networks(variant, method):
    m = method  # one pair of networks; each variant only changes options read by loss()
    opts = VARIANTS[variant][1]
    old = dict(m.opts)
    m.opts.update(opts)
    m.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(1)
    bl = {"image": torch.rand(2, 1, 32, 32, generator=g), "mask": (torch.rand(2, 1, 32, 32, generator=g) > 0.7).float()}
    bu = {"image": torch.rand(2, 1, 32, 32, generator=g)}
    try:
        loss, terms = m.loss(bl, bu, step=5)
    finally:
        m.opts = old
    assert torch.isfinite(loss)
    assert ("Lc" in terms) == opts.get("prototype", True) and ("Lcos" in terms) == opts.get("cosine", True)
    assert terms["keep"].item() == 1.0 if opts.get("entropy_filter", True) is False else terms["keep"].item() < 0.5
    if opts.get("kl_weighting", True) is False:
        assert terms["kl"].item() == 0.0
    loss.backward()
    for net in (m.student, m.second):
        assert sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None) > 0


def test_unsupervised_ramp_scales_pseudo_label_and_cosine_terms(method):
    """(D6) with unsup_rampup (the default) the pseudo-label and cosine terms enter with r(t) = exp(-5 (1 - t/T)^2):
    at step 0 the total is L_s + e^-5 (L_u + L_cos) (+ the prototype term, ramped in both); with the paper's
    weights (unsup_rampup=False) they enter at full weight from the first step."""
    m = method
    g = torch.Generator().manual_seed(2)
    bl = {"image": torch.rand(2, 1, 32, 32, generator=g), "mask": (torch.rand(2, 1, 32, 32, generator=g) > 0.7).float()}
    bu = {"image": torch.rand(2, 1, 32, 32, generator=g)}
    old = dict(m.opts)
    m.eval()  # no dropout / batch-norm updates: both calls see the same networks
    try:
        m.opts.update(rampup_steps=100, prototype=False, unsup_rampup=False)
        with torch.no_grad():
            paper, tp = m.loss(bl, bu, step=0)
            m.opts["unsup_rampup"] = True
            ramped, t = m.loss(bl, bu, step=0)
    finally:
        m.opts = old
        m.train()
    r = math.exp(-5.0)
    assert float(t["w"]) == pytest.approx(r) and float(tp["w"]) == 1.0
    assert ramped.item() == pytest.approx((t["Ls"] + r * (t["Lu"] + t["Lcos"])).item(), rel=1e-5)
    assert paper.item() == pytest.approx((tp["Ls"] + tp["Lu"] + tp["Lcos"]).item(), rel=1e-5)
    assert paper.item() - ramped.item() > 0.5 * (tp["Lu"] + tp["Lcos"]).item()
    assert VARIANTS["dual_uncertainty-paper_weights"] == ("dual_uncertainty", {"unsup_rampup": False})
    assert old["unsup_rampup"] is True and old["joint_bn"] is False  # the defaults
