"""Inspection of a trained dual-teacher run: teacher maps, fusion quality, AURCL selections.

Used by ``03_uewf_entropy_maps`` and ``04_aurcl_reverse_views``; each function returns tensors
or tables, the notebooks only draw them.
"""
from __future__ import annotations

import torch

from . import aurcl as A
from . import uewf as U
from .metrics import dice_iou


@torch.no_grad()
def teacher_maps(method, images: torch.Tensor, k: int = 14) -> dict:
    """Both teachers' probabilities and every UEWF intermediate, for each smoothing mode."""
    method.eval()
    y_a = torch.sigmoid(method.static_teacher(images).float())
    y_b = torch.sigmoid(method.ema_teacher(images).float())
    out = {"y_a": y_a, "y_b": y_b}
    for mode in U.SMOOTHING:
        y_f, maps = U.fuse(y_a, y_b, k, mode)
        out[mode] = {"y_f": y_f, **maps, "share_a": maps["weight_a"] / (maps["weight_a"] + maps["weight_b"])}
    return out


@torch.no_grad()
def fusion_quality(method, arrays, k: int = 14, limit: int = 64, batch: int = 16):
    """Mean Dice with the ground truth of T^A, T^B, their mean and the UEWF fusion (each mode)."""
    import pandas as pd

    scores: dict[str, list] = {}
    n = min(limit, len(arrays))
    for i in range(0, n, batch):
        b = arrays.batch(range(i, min(i + batch, n)))
        maps = teacher_maps(method, b["image"], k)
        cands = {"T^A (static)": maps["y_a"], "T^B (EMA)": maps["y_b"], "mean of both": (maps["y_a"] + maps["y_b"]) / 2,
                 **{f"UEWF ({m})": maps[m]["y_f"] for m in U.SMOOTHING}}
        for name, y in cands.items():
            for yy, gt in zip(y, b["mask"]):
                scores.setdefault(name, []).append(dice_iou(yy[0].numpy() > 0.5, gt[0].numpy() > 0.5)[0])
    return pd.DataFrame({"target": list(scores), "dice_vs_gt": [sum(v) / len(v) for v in scores.values()],
                         "images": [len(v) for v in scores.values()]})


@torch.no_grad()
def aurcl_maps(method, images: torch.Tensor, k_fracs=(0.01, 0.05, 0.1, 0.25), k: int = 14, floor: float = 0.2,
               temperature: float = 0.1) -> dict:
    """Student probability, confidence, selections and thresholds per K, reverse view, patch similarities, loss."""
    method.eval()
    logits, feats = method.student(images, return_features=True)
    p = torch.sigmoid(logits.float())
    out = {"prob": p, "confidence": A.confidence(p), "by_k": {}}
    for kf in k_fracs:
        sel, tau = A.low_confidence_mask(p, kf, floor)
        out["by_k"][kf] = {"selected": sel, "tau": tau, "fraction": sel.float().mean().item()}
    head = method.head if method.head is not None else A.ProjectionHead(feats.shape[1])
    kf = method.opts.get("k_frac", 0.1)
    loss, maps = A.aurcl_loss(feats, logits, head, k, kf, floor, temperature)
    z1 = A.patch_embed(head(feats, maps["prob"]), k)
    z2 = A.patch_embed(head(feats, maps["reverse"]), k)
    fresh = A.ProjectionHead(feats.shape[1])
    fresh_loss, _ = A.aurcl_loss(feats, logits, fresh, k, kf, floor, temperature)
    out.update({"reverse": maps["reverse"], "selected": maps["selected"], "anchors": maps["anchors"],
                "similarity": torch.einsum("bnd,bmd->bnm", z1, z2), "loss": loss.item(),
                "loss_untrained_head": fresh_loss.item(), "grid": (-(-images.shape[-2] // k), -(-images.shape[-1] // k))})
    return out
