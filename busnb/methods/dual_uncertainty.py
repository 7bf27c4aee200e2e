"""Dual-network semi-supervised segmentation with uncertainty-guided pseudo-labelling (2D).

Two networks of different initialisation are trained together. On unlabeled images (Eq. numbers ours):

* (U1) cross pseudo supervision: each network learns the other's hard pseudo-label (Chen et al. 2021),
  pixel-weighted BCE (``pseudo_loss="bce"``, default) or BCE + Dice (``"bce_dice"``);
* (U2) entropy filter: a pixel whose binary entropy under the *supervising* network exceeds
  ``entropy_threshold`` (default 0.75 ln 2 nats) does not supervise;
* (U3) KL weighting: each pixel's pseudo-label loss is weighted by w = exp(-D), with D the symmetric
  binary KL divergence between the two networks' predictions (0.5 [KL(p1||p2) + KL(p2||p1)]): high
  disagreement, low weight (the weighting of Zheng & Yang, IJCV 2021, applied between two networks).
  w is detached, so networks cannot lower their loss by disagreeing; no extra KL regulariser is used;
* (U4) prototype contrast: class prototypes (background, lesion) are the normalised mean decoder
  features of *reliable* pixels (both networks agree and both are below the entropy threshold);
  features of the remaining, uncertain pixels are pulled to the prototype of their pseudo-class by a
  2-way softmax over cosine similarities / T (at most ``max_pixels`` sampled per batch). A class with no
  reliable pixel in the batch skips the term (loss 0).

L = L_s(net 1) + L_s(net 2) + lambda_u * sum of weighted CPS terms + lambda_c * (prototype terms).
Each of ``entropy_filter``, ``kl_weighting``, ``prototype`` is a switch for ablation (variants
``dual_uncertainty-no_entropy_filter`` etc.). Net 1 is evaluated.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..losses import bce_dice
from ..uewf import entropy_map
from .base import Method, sigmoid_rampup
from .classic import check_pseudo_loss, cross_pseudo_loss


def symmetric_kl(p1: torch.Tensor, p2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """0.5 [KL(p1||p2) + KL(p2||p1)] of Bernoulli predictions, per pixel."""
    p1, p2 = p1.float().clamp(eps, 1 - eps), p2.float().clamp(eps, 1 - eps)
    kl12 = p1 * torch.log(p1 / p2) + (1 - p1) * torch.log((1 - p1) / (1 - p2))
    kl21 = p2 * torch.log(p2 / p1) + (1 - p2) * torch.log((1 - p2) / (1 - p1))
    return 0.5 * (kl12 + kl21)


def kl_weight(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """U3: w = exp(-D_sym), in (0, 1]; 1 where the two networks agree exactly."""
    return torch.exp(-symmetric_kl(p1, p2))


def entropy_mask(p: torch.Tensor, threshold: float) -> torch.Tensor:
    """U2: 1 where the supervising prediction's entropy is <= threshold."""
    return (entropy_map(p) <= threshold).float()


def prototype_loss(feats: torch.Tensor, pseudo: torch.Tensor, reliable: torch.Tensor, temperature: float = 0.1,
                   max_pixels: int = 4096, generator=None) -> torch.Tensor:
    """U4: uncertain pixels' features vs class prototypes of reliable pixels (B, D, H, W features)."""
    f = F.normalize(feats.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
    y = pseudo.reshape(-1).long()
    r = reliable.reshape(-1).bool()
    protos = []
    for k in (0, 1):
        sel = r & (y == k)
        if not sel.any():
            return (feats * 0).sum()
        protos.append(F.normalize(f[sel].mean(0).detach(), dim=0))
    protos = torch.stack(protos)  # (2, D)
    unc = (~r).nonzero().squeeze(1)
    if unc.numel() == 0:
        return (feats * 0).sum()
    if unc.numel() > max_pixels:
        unc = unc[torch.randperm(unc.numel(), generator=generator)[:max_pixels].to(unc.device)]
    logits = f[unc] @ protos.T / temperature
    return F.cross_entropy(logits, y[unc])


class DualUncertainty(Method):
    name = "dual_uncertainty"
    needs_unlabeled = True
    capturable = False  # prototype contrast selects pixels by data (variable shapes)

    def __init__(self, make_net, entropy_filter: bool = True, kl_weighting: bool = True, prototype: bool = True,
                 entropy_threshold: float = 0.75 * math.log(2), lambda_u: float = 1.0, lambda_c: float = 0.1,
                 temperature: float = 0.1, rampup_steps: int = 1000, pseudo_loss: str = "bce"):
        super().__init__(make_net)
        check_pseudo_loss(pseudo_loss)
        self.second = make_net()
        self.opts = dict(entropy_filter=entropy_filter, kl_weighting=kl_weighting, prototype=prototype,
                         entropy_threshold=entropy_threshold, lambda_u=lambda_u, lambda_c=lambda_c,
                         temperature=temperature, rampup_steps=rampup_steps, pseudo_loss=pseudo_loss)

    def trainable(self):
        return list(self.student.parameters()) + list(self.second.parameters())

    def loss(self, batch_l, batch_u, step):
        o = self.opts
        x = torch.cat([batch_l["image"], batch_u["image"]])
        n = len(batch_l["image"])
        l1, f1 = self.student(x, return_features=True)
        l2, f2 = self.second(x, return_features=True)
        ls = bce_dice(l1[:n], batch_l["mask"]) + bce_dice(l2[:n], batch_l["mask"])
        u1, u2 = l1[n:], l2[n:]
        p1, p2 = torch.sigmoid(u1.detach().float()), torch.sigmoid(u2.detach().float())
        y1, y2 = (p1 > 0.5).float(), (p2 > 0.5).float()
        w2 = torch.ones_like(p2)  # weight of net 2's pseudo-labels (net 1 learning from net 2)
        w1 = torch.ones_like(p1)
        if o["entropy_filter"]:
            w2 = w2 * entropy_mask(p2, o["entropy_threshold"])
            w1 = w1 * entropy_mask(p1, o["entropy_threshold"])
        if o["kl_weighting"]:
            kw = kl_weight(p1, p2)
            w1, w2 = w1 * kw, w2 * kw
        lu = cross_pseudo_loss(u1, u2, weight_1=w1, weight_2=w2, dice=o["pseudo_loss"] == "bce_dice")
        ramp = sigmoid_rampup(step, o["rampup_steps"])
        total = ls + o["lambda_u"] * ramp * lu
        terms = {"Ls": ls.detach(), "Lu": lu.detach()}
        if o["prototype"]:
            reliable = (y1 == y2) & (entropy_mask(p1, o["entropy_threshold"]) > 0) & (entropy_mask(p2, o["entropy_threshold"]) > 0)
            pseudo = ((p1 + p2) / 2 > 0.5).float()
            lc = prototype_loss(f1[n:], pseudo, reliable, o["temperature"]) + \
                prototype_loss(f2[n:], pseudo, reliable, o["temperature"])
            total = total + o["lambda_c"] * ramp * lc
            terms["Lc"] = lc.detach()
        return total, terms
