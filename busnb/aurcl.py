"""AURCL: adaptive uncertainty-guided reverse contrastive learning on the student.

The paper is terse; this module implements the following reading (also shown in
``04_aurcl_reverse_views.ipynb``):

* (Eq. 5) confidence   C = |2p - 1| in [0, 1] (0 at p = 0.5, 1 at p in {0, 1}), p the student's
  foreground probability (detached).
* (Eq. 6) threshold    tau = max(topK(C, K), 0.2), read as tau = max(C_(K), 0.2) with C_(K) the
  K-th smallest confidence of the image (the K-th entry of the top-K of the uncertainty 1 - C).
  Pixels with C <= tau are *low-confidence*: at least the K least confident pixels, and always
  every pixel with |p - 0.5| <= 0.1. ``k_frac`` gives K as a fraction of the image's pixels.
* (Eq. 7) reverse view  p_rev = 1 - p on low-confidence pixels, p elsewhere.
* (Eq. 8) view features: the decoder features F (B, D, H, W) concatenated with a view
  (p or p_rev), projected by a shared 1x1-conv head g, average-pooled over k x k patches and
  L2-normalised: z = norm(pool_k(g([F, view]))).
* (Eq. 9) InfoNCE over patches of one image, temperature T: for patch i of view 1, the
  same location i of view 2 is the positive, all other patches of view 2 the negatives:
  L_c = mean_i -log( exp(z1_i . z2_i / T) / sum_j exp(z1_i . z2_j / T) ),
  averaged over anchor patches that contain at least one low-confidence pixel (the only places
  where the views differ). No such patch: L_c = 0 (finite, no gradient).

The views are detached, so the loss shapes the features, not the probabilities: features must
identify their location even where the prediction is flipped, i.e. stay discriminative in
uncertain regions instead of echoing an unreliable prediction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def confidence(p: torch.Tensor) -> torch.Tensor:
    """Eq. 5: C = |2p - 1|."""
    return (2 * p.float() - 1).abs()


def low_confidence_mask(p: torch.Tensor, k_frac: float = 0.1, floor: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6: (mask of low-confidence pixels, per-image tau). ``p`` is (B, 1, H, W)."""
    c = confidence(p).flatten(1)
    k = max(1, int(round(k_frac * c.shape[1])))
    kth = torch.kthvalue(c, k, dim=1).values
    tau = torch.clamp(kth, min=floor)
    return (c <= tau[:, None]).view_as(p), tau


def reverse_view(p: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Eq. 7: 1 - p on the selected pixels."""
    return torch.where(selected, 1 - p, p)


class ProjectionHead(nn.Module):
    """g in Eq. 8: 1x1 conv - ReLU - 1x1 conv on [features, view]."""

    def __init__(self, in_channels: int, dim: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels + 1, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1))

    def forward(self, feats: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([feats, view.to(feats.dtype)], 1))


def patch_embed(x: torch.Tensor, k: int) -> torch.Tensor:
    """Average over k x k patches, L2-normalised: (B, D, H, W) -> (B, N, D)."""
    z = F.avg_pool2d(x.float(), k, stride=k, ceil_mode=True)
    return F.normalize(z.flatten(2).transpose(1, 2), dim=-1)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, anchors: torch.Tensor | None = None,
             temperature: float = 0.1) -> torch.Tensor:
    """Eq. 9: patch InfoNCE within each image. z: (B, N, D); anchors: (B, N) bool."""
    logits = torch.einsum("bnd,bmd->bnm", z1, z2) / temperature
    target = torch.arange(z1.shape[1], device=z1.device).expand(z1.shape[0], -1)
    loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
    if anchors is None:
        return loss.mean()
    a = anchors.flatten().float()
    # no anchor: 0 (finite, no gradient); no branch on the data, so the step stays capturable
    return (loss * a).sum() / a.sum().clamp_min(1.0)


def aurcl_loss(feats: torch.Tensor, logits: torch.Tensor, head: ProjectionHead, k: int = 14,
               k_frac: float = 0.1, floor: float = 0.2, temperature: float = 0.1) -> tuple[torch.Tensor, dict]:
    """L_c for a batch: student decoder features and logits -> (loss, maps for inspection)."""
    p = torch.sigmoid(logits.detach().float())
    sel, tau = low_confidence_mask(p, k_frac, floor)
    rev = reverse_view(p, sel)
    z1, z2 = patch_embed(head(feats, p), k), patch_embed(head(feats, rev), k)
    anchors = F.max_pool2d(sel.float(), k, stride=k, ceil_mode=True).flatten(1) > 0
    return info_nce(z1, z2, anchors, temperature), {"selected": sel, "tau": tau, "reverse": rev, "prob": p,
                                                     "anchors": anchors}
