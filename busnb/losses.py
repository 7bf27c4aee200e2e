"""Segmentation losses. Targets may be soft (fused pseudo-labels) and pixels weighted."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_loss_per_image(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                        smooth: float = 1.0) -> torch.Tensor:
    """L_Dice = 1 - (2 sum w p t + s) / (sum w p + sum w t + s) of each image, shape (B,)."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    w = torch.ones_like(p) if weight is None else weight.float().expand_as(logits).flatten(1)
    inter = (w * p * t).sum(1)
    return 1 - (2 * inter + smooth) / ((w * p).sum(1) + (w * t).sum(1) + smooth)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
              smooth: float = 1.0) -> torch.Tensor:
    """L_Dice of :func:`dice_loss_per_image`, averaged over the images."""
    return dice_loss_per_image(logits, target, weight, smooth).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-mean binary cross-entropy (weighted mean when ``weight`` is given)."""
    l = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    if weight is None:
        return l.mean()
    w = weight.float().expand_as(l)
    return (w * l).sum() / w.sum().clamp_min(1e-6)


def bce_dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L = BCE + Dice (the paper's L_s and L_u)."""
    return bce_loss(logits, target, weight) + dice_loss(logits, target, weight)


def bce_dice_per_image(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + Dice of each image, shape (B,): pixel-mean BCE per image plus :func:`dice_loss_per_image`. Their mean
    over the batch is :func:`bce_dice` without weights; a method weights images with it (``dusss``'s
    ``conf_weight``)."""
    b = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none").flatten(1).mean(1)
    return b + dice_loss_per_image(logits, target)
