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
def fusion_scores(method, arrays, k: int = 14, limit: int = 64, batch: int = 16):
    """Per image (long table: ``image``, ``target``, ``dice``): Dice (threshold 0.5) with the ground truth of
    T^A, T^B, their mean and the UEWF fusion in each smoothing mode, on the first ``limit`` images."""
    import pandas as pd

    rows = []
    n = min(limit, len(arrays))
    for i in range(0, n, batch):
        b = arrays.batch(range(i, min(i + batch, n)))
        maps = teacher_maps(method, b["image"], k)
        cands = {"T^A (static)": maps["y_a"], "T^B (EMA)": maps["y_b"], "mean of both": (maps["y_a"] + maps["y_b"]) / 2,
                 **{f"UEWF ({m})": maps[m]["y_f"] for m in U.SMOOTHING}}
        for name, y in cands.items():
            for j, (yy, gt) in enumerate(zip(y, b["mask"])):
                rows.append({"image": i + j, "target": name,
                             "dice": dice_iou(yy[0].numpy() > 0.5, gt[0].numpy() > 0.5)[0]})
    return pd.DataFrame(rows)


def fusion_quality(method, arrays, k: int = 14, limit: int = 64, batch: int = 16, scores=None):
    """Mean Dice with the ground truth of T^A, T^B, their mean and the UEWF fusion (each mode), one row per
    target (``dice_vs_gt``, ``images``); ``scores`` reuses a :func:`fusion_scores` table."""
    import pandas as pd

    s = fusion_scores(method, arrays, k, limit, batch) if scores is None else scores
    g = s.groupby("target", sort=False)["dice"]
    return pd.DataFrame({"target": list(g.groups), "dice_vs_gt": g.mean().values, "images": g.size().values})


def paired_difference(scores, a: str, b: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean per-image Dice of target ``a`` minus target ``b`` (a :func:`fusion_scores` table), with a 95 %
    percentile bootstrap interval over images and how many images ``a`` wins / loses. An interval that holds
    0 means the images at hand cannot tell the two targets apart."""
    import numpy as np

    pa = scores[scores["target"] == a].set_index("image")["dice"]
    pb = scores[scores["target"] == b].set_index("image")["dice"]
    d = (pa - pb.reindex(pa.index)).dropna().to_numpy()
    if d.size == 0:
        raise ValueError(f"no images scored for both {a!r} and {b!r}")
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, (n_boot, d.size))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"a": a, "b": b, "mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": int(d.size),
            "wins": int((d > 1e-9).sum()), "losses": int((d < -1e-9).sum())}


def describe_difference(r: dict) -> str:
    """One line for a :func:`paired_difference` result, saying whether the images at hand separate the two."""
    verdict = ("cannot tell them apart (the interval holds 0)" if r["lo"] <= 0 <= r["hi"]
               else f"{r['a'] if r['mean'] > 0 else r['b']} is better on these images")
    return (f"{r['a']} - {r['b']}: {r['mean']:+.3f} Dice (95 % bootstrap interval {r['lo']:+.3f} .. {r['hi']:+.3f}, "
            f"{r['n']} images, better on {r['wins']}, worse on {r['losses']}): {verdict}")


@torch.no_grad()
def aurcl_maps(method, images: torch.Tensor, k_fracs=(0.01, 0.05, 0.1, 0.25), k: int = 14, floor: float = 0.2,
               temperature: float = 0.1) -> dict:
    """Student probability, confidence, selections and thresholds per K, reverse view, anchor patches, patch
    similarities z1·z2 of the two views and the loss, with the trained projection head and with a fresh random
    one (``*_untrained_head``: what the features alone give before AURCL trained the head)."""
    method.eval()
    logits, feats = method.student(images, return_features=True)
    p = torch.sigmoid(logits.float())
    out = {"prob": p, "confidence": A.confidence(p), "by_k": {}}
    for kf in k_fracs:
        sel, tau = A.low_confidence_mask(p, kf, floor)
        out["by_k"][kf] = {"selected": sel, "tau": tau, "fraction": sel.float().mean().item()}
    out["floor_fraction"] = (out["confidence"] <= floor).float().mean().item()  # pixels every K selects
    head = method.head if method.head is not None else A.ProjectionHead(feats.shape[1])
    kf = method.opts.get("k_frac", 0.1)
    loss, maps = A.aurcl_loss(feats, logits, head, k, kf, floor, temperature)
    z1 = A.patch_embed(head(feats, maps["prob"]), k)
    z2 = A.patch_embed(head(feats, maps["reverse"]), k)
    fresh = A.ProjectionHead(feats.shape[1])
    fresh_loss, _ = A.aurcl_loss(feats, logits, fresh, k, kf, floor, temperature)
    f1 = A.patch_embed(fresh(feats, maps["prob"]), k)
    f2 = A.patch_embed(fresh(feats, maps["reverse"]), k)
    out.update({"reverse": maps["reverse"], "selected": maps["selected"], "anchors": maps["anchors"],
                "similarity": torch.einsum("bnd,bmd->bnm", z1, z2),
                "similarity_untrained_head": torch.einsum("bnd,bmd->bnm", f1, f2), "loss": loss.item(),
                "loss_untrained_head": fresh_loss.item(), "grid": (-(-images.shape[-2] // k), -(-images.shape[-1] // k))})
    return out


def selection_table(am: dict, floor: float = 0.2):
    """One row per K of an :func:`aurcl_maps` result: K as a share of the pixels, the mean threshold tau, the
    share of pixels selected, and what set tau on each image (``K``, or the ``floor`` when more than K pixels
    already have C <= floor, in which case a smaller K selects exactly the same pixels)."""
    import pandas as pd

    rows = []
    for kf, sel in am["by_k"].items():
        at_floor = int((sel["tau"] <= floor + 1e-6).sum())
        rows.append({"K (share of pixels)": f"{kf:.0%}", "mean tau": round(float(sel["tau"].mean()), 3),
                     "selected": f"{sel['fraction']:.1%}",
                     "tau set by": f"floor on {at_floor}/{len(sel['tau'])} images" if at_floor else "K"})
    return pd.DataFrame(rows).set_index("K (share of pixels)")


def similarity_summary(sim) -> dict:
    """Mean cosine similarity of positives (the diagonal: the same patch in both views) and of negatives
    (every other pair) of a (N, N) or (B, N, N) patch-similarity matrix, and their gap."""
    sim = sim.float()
    if sim.dim() == 2:
        sim = sim[None]
    n = sim.shape[-1]
    diag = sim.diagonal(dim1=-2, dim2=-1)
    pos = diag.mean().item()
    neg = ((sim.sum((-2, -1)) - diag.sum(-1)).sum() / (sim.shape[0] * (n * n - n))).item()
    return {"positives": pos, "negatives": neg, "gap": pos - neg}
