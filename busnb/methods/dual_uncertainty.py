"""Dual-network semi-supervised segmentation with uncertainty-guided pseudo-labelling, as published.

Lu, Wu, Chaddad et al., "Enhancing Dual Network Based Semi-Supervised Medical Image Segmentation with
Uncertainty-Guided Pseudo-Labeling", arXiv 2509.13084 (2025); release AIPMLab/Semi-supervised-Segmentation
(``train_LA.py``, built on MCF). Equation labels (D1)-(D6) are ours; each is one function below.

* Two **different** architectures trained together: net A = the profile's network (2D: smp U-Net on a ResNet;
  3D: V-Net or MONAI's residual U-Net, ``busnb.vol``), net B = ``make_net(arch="partner")`` (2D: smp LinkNet on
  MobileNet-V2, ``busnb.models.PARTNER_2D``; 3D: MONAI SegResNet, a ResNet encoder-decoder like the paper's
  3D ResNet-34, with a linear output head: ``busnb.vol.nets``). Net A is validated, selected and tested. The
  paper pairs a V-Net with a 3D ResNet-34.
* (D1) supervised: L_s = CE + Dice on the labeled images, for each network (``bce_dice``; for one sigmoid
  output BCE is the 2-class cross-entropy).
* Binary outputs are handled as two classes: logits [0, z] (softmax = [1 - sigmoid z, sigmoid z]), so the
  class-wise formulas of the paper apply unchanged to 2D and 3D.
* (D2) entropy filter (:func:`entropy_filter`): per batch, H_k = -sum_c p_c log p_c of each network's class
  probabilities; a pixel/voxel is *uncertain*, and ignored by the pseudo-label loss, when H_A >= q20(H_A)
  **and** H_B >= q20(H_B) (q20 = 20th percentile over the batch's unlabeled pixels).
* (D3) KL-rectified cross pseudo supervision (:func:`kl_rectified_loss`), each network learning from the
  other: y = argmax of the teacher (the other network), D = KL(softmax(z_t / T) || softmax(z_s / T)) per pixel
  at temperature T = 0.5 (teacher detached), w = exp(-D);
  L_u = mean_kept(w * CE(z_s, y)) + mean(D). w is not detached (as in the uncertainty rectification of Zheng
  & Yang, IJCV 2021, which the release follows): a network lowers the CE by disagreeing only at the price of
  the mean(D) term. ``kl_weighting=False``: w = 1 and no D term (plain entropy-filtered CPS).
* (D4) prototype contrast (:func:`prototype_contrast`): class prototypes = normalised mean decoder feature of
  the *reliable* (kept) unlabeled pixels of each pseudo-class; each *uncertain* pixel's normalised feature is
  pulled to the prototype of its predicted class and pushed from the other by a softmax over cosine
  similarities / tau (tau = 0.1); prototypes are detached (anchors). Weight lambda_c(t) = 0.1 x sigmoid
  ramp-up (Laine & Aila) over the whole run (the release: 40 x 150 = 6,000 iterations).
* (D5) cosine consistency (:func:`cosine_consistency`): mean(1 - cos(p_A, p_B)) between the two networks'
  class-probability vectors on every image of the batch.

L = L_s^A + L_s^B + r(t) [lambda_u (L_u^A + L_u^B) + lambda_cos L_cos] + lambda_c r(t) (L_c^A + L_c^B).

* (D6) r(t): the sigmoid ramp-up exp(-5 (1 - t/T)^2) over the whole run (``rampup_steps`` None) or
  ``rampup_steps``. The paper ramps only lambda_c (D4); the default (``unsup_rampup=True``) also ramps the
  pseudo-label and cosine terms, as CPS, Mean Teacher and MCF (the release's base) do for their unsupervised
  terms. ``unsup_rampup=False`` (variant ``dual_uncertainty-paper_weights``) is the paper's: L_u and L_cos at
  full weight from the first step (see *Stability* below).

**Where this departs from the release, on purpose** (the paper's description is implemented, not the bugs):
the release computes the prototype loss under ``torch.no_grad`` (it never trains anything: the term is a
logged constant) and takes the entropy of raw *logits* (log of negative numbers: NaN, so ``ge(NaN)`` ignores
no pixel and the entropy filter is silently off); its filtered CE is also taken on detached softmax outputs
(no gradient). Here entropy is of probabilities, every term has a gradient, and each is tested on hand-made
tensors (``tests/test_dual_uncertainty.py``). Not implemented: MCF's labeled "cross reliable" mistake term
that the release adds to L_s, and its per-step "winner" switch (which network gets the extra terms).

**Stability on BUSI (measured, issue 11; cpu profile at 64 px, 2.5 %, seed 0, 19 steps an epoch).** With the
published weights (every pseudo-label term at full weight from the first step; only lambda_c is ramped) two
networks trained from scratch on 13 labeled images agree on whatever they are most certain of: the
percentile filter always keeps 20-40 % of the pixels (``keep`` ~0.23-0.32), cosine consistency and KL
weighting reward agreement, and nothing in the unsupervised terms is tied to the lesion. The run's history
shows the partner network's foreground fraction on unlabeled pixels (``fg_b``) at 0.000 in epochs 2-5
(val_empty up to 0.35, val Dice 0.08), then a swing to over-segmentation (``fg_a``, ``fg_b`` 0.5-0.6 from
epoch 10, val Dice ~0.26). The release's union target (``pseudo_target="union"``) shows the same early
collapse and then oscillates. The previous version of this class (fixed entropy threshold, detached
symmetric-KL weight) did not collapse within the same 27 epochs at 64 px. On the 3D phantom the method gains
over its supervised network (``busnb.vol``). See the issue-11 note for the numbers and commands.

The weight schedule is not the cause (15-epoch runs at 64 px, ``results/cpu-2026-11-23/du64-*``): with the
pseudo-label and cosine terms ramped (D6), at lambda_u 1 or 0.1 and lambda_cos 1 or 0.1, the pair still
collapses to background once the ramps pass about half weight (val_empty 0.3-0.7 in the last epochs); with the
prototype term off it drifts the other way, to over-segmentation (foreground 0.45-0.57 of the unlabeled pixels
against about 0.09 true); test Dice 37-42 against 46 for the supervised network of the same schedule. Two
U-Nets (``second_arch="unet"``) collapse too (val_empty 0.78 at the end; test 48 only because validation picked
epoch 4). The two networks reinforce a shared wrong answer whichever way the prototype term tips them; neither
the weight schedule nor the partner architecture is the cause. The one change that helped: batch-norm
statistics of labeled and unlabeled images kept apart (``joint_bn=False``), which lifts CPS from 30 to 52
(supervised 46) on the same schedule; here it gives 28 at the paper's weights and 46 with the ramp-up (D6).

Options (switches for ablation rows ``dual_uncertainty-no_...``): ``entropy_filter``, ``kl_weighting``,
``prototype``, ``cosine``; ``pseudo_loss`` "bce" (the CE of D3) or "bce_dice" (+ a Dice term with the same
pixel weights); ``pseudo_target`` "cross" (each network learns the other's argmax, default) or "union" (the
release's filtered target: foreground where either network says foreground). ``joint_bn``: True (as
published, variant ``dual_uncertainty-joint_bn``) passes labeled and unlabeled images through each network as
one batch; False (default) keeps their batch-norm statistics apart (two forward passes), as the CPS authors'
release does and the supervised baseline sees labeled images only. ``dual_uncertainty-release`` = both as
published (joint batch, unramped L_u and L_cos).

**Defaults.** Separate batch norm with the ramp-up, chosen on 3 seeds at the 64-px, 15-epoch diagnosis
schedule on BUSI (``results/cpu-2026-11-23/d64`` and ``d64-r10``): at 2.5 % it scores 43.66 +- 2.05 test Dice
(max ``val_empty`` 0.29) where the release's setting collapses (26.32 +- 8.95, ``val_empty`` up to 0.82); at
10 % 51.92 +- 2.12 against 45.33 +- 7.39 (CPS 51.77 +- 5.43, supervised 53.43 +- 1.34).
``optimizer``: "shared" (the
profile's Adam, as every method of the comparison table) or "paper" = the published SGD lr 0.01, momentum 0.9,
weight decay 1e-4, x0.1 every 2,500 iterations (of 6,000), ``busnb.optim``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import bce_dice, dice_loss
from ..optim import paper_or_shared
from .base import Method, distinct_decoder, forward_joint, sigmoid_rampup
from .classic import check_pseudo_loss

# The release's optimiser (train_LA.py): SGD 0.01, momentum 0.9, wd 1e-4, lr x0.1 every 2,500 iterations
DUAL_SGD = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "step",
            "step_every": 2500, "gamma": 0.1}
PSEUDO_TARGETS = ("cross", "union")


def two_class_logits(z: torch.Tensor) -> torch.Tensor:
    """(N, 1, ...) sigmoid logits -> (N, 2, ...) class logits [0, z] (softmax = [1 - sigmoid z, sigmoid z]);
    (N, C >= 2, ...) class logits are returned as they are."""
    z = z.float()
    return torch.cat([torch.zeros_like(z), z], 1) if z.shape[1] == 1 else z


def class_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_c p_c log p_c (nats) of the class probabilities p = softmax(logits), per pixel: (N, ...).
    Computed from ``log_softmax`` (the release takes it of the logits themselves, which gives NaN)."""
    lp = F.log_softmax(two_class_logits(logits), 1)
    return -(lp.exp() * lp).sum(1)


def entropy_filter(logits_a: torch.Tensor, logits_b: torch.Tensor, percentile: float = 20.0) -> torch.Tensor:
    """(D2) keep mask (N, 1, ...) float: 0 where a pixel is uncertain in **both** networks, i.e. its entropy is
    at or above the ``percentile``-th percentile of that network's entropies over the batch (linear
    interpolation, as ``numpy.percentile``), 1 elsewhere. Detached."""
    with torch.no_grad():
        ha, hb = class_entropy(logits_a), class_entropy(logits_b)
        qa, qb = _quantile(ha, percentile / 100), _quantile(hb, percentile / 100)
        uncertain = (ha >= qa) & (hb >= qb)
        return (~uncertain).float().unsqueeze(1)


def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    x = x.detach().float().flatten()
    if x.numel() > 2**24 - 1:  # torch.quantile's size limit: an evenly strided subsample
        x = x[:: x.numel() // (2**24 - 1) + 1]
    return torch.quantile(x, q)


def kl_rectified_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 0.5,
                      keep: torch.Tensor | None = None, weighting: bool = True, dice: bool = False,
                      target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(D3) uncertainty-rectified pseudo supervision of ``student`` by ``teacher`` (logits, (N, 1 or C, ...)).

    y = argmax teacher (or ``target``, (N, ...) long), D = KL(softmax(z_t/T) || softmax(z_s/T)) summed over
    classes per pixel (teacher detached), w = exp(-D) (with gradient), and
    L = sum(keep w CE(z_s, y)) / sum(keep) + mean(D); ``weighting=False``: w = 1 and no D term.
    ``dice`` adds a Dice loss of the foreground with pixel weights keep * w. Returns (L, diagnostics)."""
    zs, zt = two_class_logits(student), two_class_logits(teacher).detach()
    y = zt.argmax(1) if target is None else target.long()
    ce = F.cross_entropy(zs, y, reduction="none")  # (N, ...)
    k = torch.ones_like(ce) if keep is None else keep.float().reshape(ce.shape)
    if weighting:
        pt = F.softmax(zt / temperature, 1)
        kl = (pt * (F.log_softmax(zt / temperature, 1) - F.log_softmax(zs / temperature, 1))).sum(1)
        w = torch.exp(-kl)
    else:
        kl, w = torch.zeros_like(ce), torch.ones_like(ce)
    loss = (k * w * ce).sum() / k.sum().clamp_min(1.0)
    if weighting:
        loss = loss + kl.mean()
    if dice:
        fg = (y == 1).float().unsqueeze(1)
        loss = loss + dice_loss(zs[:, 1:] - zs[:, :1], fg, (k * w).unsqueeze(1))
    return loss, {"kl": kl.detach().mean(), "w": w.detach().mean()}


def prototype_contrast(feats: torch.Tensor, pred: torch.Tensor, pseudo: torch.Tensor, keep: torch.Tensor,
                       temperature: float = 0.1) -> torch.Tensor:
    """(D4) contrast of uncertain features against reliable class prototypes.

    ``feats`` (N, D, ...) decoder features, ``pred`` (N, ...) the network's own class, ``pseudo`` (N, ...) the
    pseudo-class of reliable pixels, ``keep`` (N, 1, ...) 1 = reliable, 0 = uncertain (``entropy_filter``).
    Prototype c = normalised mean of the normalised features of reliable pixels of pseudo-class c (detached);
    over the uncertain pixels, mean CE of softmax_c(cos(f, proto_c) / tau) against their predicted class.
    0 when a class has no reliable pixel or no pixel is uncertain. Written with masks, not pixel selection:
    static shapes and no host synchronisation (every uncertain pixel counts; none is sampled)."""
    d = feats.shape[1]
    f = F.normalize(feats.float(), dim=1).movedim(1, -1).reshape(-1, d)
    rel = (keep.reshape(-1) > 0.5).float()
    y_rel, y_unc = pseudo.reshape(-1).long(), pred.reshape(-1).long()
    protos, counts = [], []
    for c in (0, 1):
        m = rel * (y_rel == c).float()
        protos.append(F.normalize((f.detach() * m[:, None]).sum(0), dim=0))
        counts.append(m.sum())
    logits = f @ torch.stack(protos).T / temperature                      # (pixels, 2)
    ce = F.cross_entropy(logits, y_unc, reduction="none")
    unc = 1 - rel
    loss = (ce * unc).sum() / unc.sum().clamp_min(1.0)
    return torch.where((counts[0] > 0) & (counts[1] > 0), loss, loss * 0)


def cosine_consistency(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """(D5) mean over pixels of 1 - cos(p_A, p_B), p = class probabilities (softmax over the class axis)."""
    pa, pb = F.softmax(two_class_logits(logits_a), 1), F.softmax(two_class_logits(logits_b), 1)
    return (1 - F.cosine_similarity(pa, pb, dim=1)).mean()


class DualUncertainty(Method):
    """The dual-network uncertainty-guided method (arXiv 2509.13084): see the module docstring for its terms
    (D1)-(D5), options and where it departs from the release."""

    name = "dual_uncertainty"
    needs_unlabeled = True
    # Every term has static shapes and no host synchronisation (percentile by torch.quantile on the device,
    # prototypes and uncertain pixels by masks), so the step could be captured as a CUDA graph; left False until
    # tests/test_cuda.py has run it on a GPU (none was available in the session that wrote this).
    capturable = False

    def __init__(self, make_net, entropy_filter: bool = True, kl_weighting: bool = True, prototype: bool = True,
                 cosine: bool = True, percentile: float = 20.0, kl_temperature: float = 0.5,
                 lambda_u: float = 1.0, lambda_c: float = 0.1, lambda_cos: float = 1.0, temperature: float = 0.1,
                 rampup_steps: int | None = None, pseudo_loss: str = "bce", pseudo_target: str = "cross",
                 second_arch: str = "partner", optimizer: str = "shared", unsup_rampup: bool = True,
                 joint_bn: bool = False):
        check_pseudo_loss(pseudo_loss)  # options first: a bad one fails before any network is built
        if pseudo_target not in PSEUDO_TARGETS:
            raise ValueError(f"pseudo_target must be one of {PSEUDO_TARGETS}, not {pseudo_target!r}")
        if not 0 < percentile < 100:
            raise ValueError(f"percentile must be in (0, 100), not {percentile!r}")
        paper_or_shared(optimizer, DUAL_SGD, "dual_uncertainty")
        super().__init__(make_net)
        self.second = make_net(arch=second_arch)  # a different architecture (models.PARTNER_2D / busnb.vol)
        distinct_decoder(self.second, self.student)  # second_arch="unet" from one pretrained unet.pt: as in CPS
        self.opts = dict(entropy_filter=entropy_filter, kl_weighting=kl_weighting, prototype=prototype,
                         cosine=cosine, percentile=percentile, kl_temperature=kl_temperature, lambda_u=lambda_u,
                         lambda_c=lambda_c, lambda_cos=lambda_cos, temperature=temperature,
                         rampup_steps=rampup_steps, pseudo_loss=pseudo_loss, pseudo_target=pseudo_target,
                         second_arch=second_arch, optimizer=optimizer, unsup_rampup=unsup_rampup,
                         joint_bn=bool(joint_bn))

    def optimizer_recipe(self):
        return paper_or_shared(self.opts["optimizer"], DUAL_SGD, "dual_uncertainty")

    def trainable(self):
        return list(self.student.parameters()) + list(self.second.parameters())

    def loss(self, batch_l, batch_u, step):
        o = self.opts
        x = torch.cat([batch_l["image"], batch_u["image"]])
        n = len(batch_l["image"])
        (la, fa), (lb, fb) = (forward_joint(net, x, n, o["joint_bn"], return_features=True)
                              for net in (self.student, self.second))
        ls = bce_dice(la[:n], batch_l["mask"]) + bce_dice(lb[:n], batch_l["mask"])
        ua, ub = la[n:], lb[n:]
        keep = entropy_filter(ua, ub, o["percentile"]) if o["entropy_filter"] else torch.ones_like(ua.float())
        ya, yb = (ua.detach() > 0).long().squeeze(1), (ub.detach() > 0).long().squeeze(1)
        union = ya | yb
        ta, tb = (union, union) if o["pseudo_target"] == "union" else (yb, ya)  # target of A, target of B
        kw = dict(temperature=o["kl_temperature"], keep=keep, weighting=o["kl_weighting"],
                  dice=o["pseudo_loss"] == "bce_dice")
        lua, da = kl_rectified_loss(ua, ub, target=ta, **kw)
        lub, db = kl_rectified_loss(ub, ua, target=tb, **kw)
        lu = lua + lub
        ramp = sigmoid_rampup(step, self.horizon(o["rampup_steps"]))
        wu = ramp if o["unsup_rampup"] else 1.0  # (D6) ramp of the pseudo-label and consistency terms
        total = ls + o["lambda_u"] * wu * lu
        terms = {"Ls": ls.detach(), "Lu": lu.detach(), "kl": (da["kl"] + db["kl"]) / 2,
                 "keep": keep.mean(), "fg_a": ya.float().mean(), "fg_b": yb.float().mean(),
                 "w": torch.as_tensor(wu, dtype=torch.float32)}
        if o["prototype"]:
            lc = prototype_contrast(fa[n:], ya, ta, keep, o["temperature"]) + \
                prototype_contrast(fb[n:], yb, tb, keep, o["temperature"])
            total = total + o["lambda_c"] * ramp * lc
            terms["Lc"] = lc.detach()
        if o["cosine"]:
            lcos = cosine_consistency(la, lb)
            total = total + o["lambda_cos"] * wu * lcos
            terms["Lcos"] = lcos.detach()
        return total, terms
