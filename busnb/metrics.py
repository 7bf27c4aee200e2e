"""Segmentation metrics per image: Dice, IoU, HD95, ASD (pixels at evaluation resolution).

Definitions (P prediction, G ground truth, dP / dG their boundary pixels):

* Dice = 2|P n G| / (|P| + |G|),  IoU = |P n G| / |P u G|
* directed surface distances d(dP->dG) via scipy's exact Euclidean distance transform;
  HD95 = 95th percentile of d(dP->dG) u d(dG->dP) (as in MedPy), ASD = their mean (symmetric).

Empty-mask policy (``empty_policy``), written into every table:

* both empty: Dice = IoU = 1, HD95 = ASD = 0 (perfect agreement);
* exactly one empty: Dice = IoU = 0 and the distances are undefined. With
  ``"diagonal"`` (default) they are set to the image diagonal, the largest distance
  possible, so a missed lesion is penalised and never counted as HD95 = 0; with
  ``"nan"`` they are NaN and excluded from means, and ``summarize`` reports how many.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

EMPTY_POLICIES = ("diagonal", "nan")


def dice_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    p, g = pred.astype(bool), gt.astype(bool)
    inter, sp, sg = np.logical_and(p, g).sum(), p.sum(), g.sum()
    if sp + sg == 0:
        return 1.0, 1.0
    return float(2 * inter / (sp + sg)), float(inter / (sp + sg - inter))


def _boundary(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), border_value=0)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing=(1.0, 1.0)) -> np.ndarray:
    """Both directed boundary-to-boundary distances, concatenated (both masks non-empty)."""
    bp, bg = _boundary(pred.astype(bool)), _boundary(gt.astype(bool))
    dt_g = ndimage.distance_transform_edt(~bg, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~bp, sampling=spacing)
    return np.concatenate([dt_g[bp], dt_p[bg]])


def score(pred: np.ndarray, gt: np.ndarray, empty_policy: str = "diagonal", spacing=(1.0, 1.0)) -> dict:
    """All metrics of one image as a dict (with flags ``empty_pred`` and ``empty_gt``, and the foreground
    fractions ``gt_frac`` / ``pred_frac`` of the image: what :func:`busnb.results.size_table` stratifies by)."""
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    p, g = pred.astype(bool), gt.astype(bool)
    d, j = dice_iou(p, g)
    ep, eg = not p.any(), not g.any()
    if ep and eg:
        hd, asd = 0.0, 0.0
    elif ep or eg:
        diag = math.hypot(p.shape[0] * spacing[0], p.shape[1] * spacing[1])
        hd = asd = diag if empty_policy == "diagonal" else float("nan")
    else:
        sd = surface_distances(p, g, spacing)
        hd, asd = float(np.percentile(sd, 95)), float(sd.mean())
    return {"dice": d, "iou": j, "hd95": hd, "asd": asd, "empty_pred": ep, "empty_gt": eg,
            "gt_frac": float(g.mean()), "pred_frac": float(p.mean())}


def summarize(rows: list[dict], keys=("dice", "iou", "hd95", "asd")) -> dict:
    """Mean and std over images (NaN excluded and counted) plus empty-prediction count."""
    out = {"n": len(rows), "n_empty_pred": int(sum(r["empty_pred"] for r in rows))}
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=float)
        ok = ~np.isnan(v)
        out[k] = float(v[ok].mean()) if ok.any() else float("nan")
        out[f"{k}_std"] = float(v[ok].std()) if ok.any() else float("nan")
        if (~ok).any():
            out[f"{k}_n_nan"] = int((~ok).sum())
    return out


def soft_dice_batch(prob, target, eps: float = 1e-6):
    """Per-image Dice of thresholded torch predictions (for validation during training)."""
    p = (prob > 0.5).float().flatten(1)
    t = (target > 0.5).float().flatten(1)
    inter = (p * t).sum(1)
    denom = p.sum(1) + t.sum(1)
    return ((2 * inter + eps) / (denom + eps))


def pixel_auc(scores, labels) -> float:
    """Area under the ROC curve of per-pixel ``scores`` for binary ``labels`` (any equal shapes, numpy or torch):
    the probability that a random lesion pixel scores above a random background pixel, ties counted half
    (Mann-Whitney U / (n1 n0), average ranks). 0.5 = no information, 1 = perfect ranking; NaN when one class is
    absent. Used to report how informative a map is, independent of any threshold or calibration."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(labels).ravel() > 0.5
    n1 = int(t.sum())
    n0 = t.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[t].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
