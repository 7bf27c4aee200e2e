"""3D segmentation metrics per volume: Dice, IoU, HD95, ASD (voxels, or mm with ``spacing``).

Same definitions and empty-mask policy as the 2D ``busnb.metrics`` (HD95 = 95th percentile of both directed
boundary-to-boundary distances, as in MedPy; ASD = their mean), in N dimensions: boundary voxels are the mask
minus its erosion by the full 3x3x3 neighbourhood, distances by SciPy's exact Euclidean distance transform.
Both empty: Dice = IoU = 1, HD95 = ASD = 0; exactly one empty: Dice = IoU = 0 and HD95 = ASD = the volume's
diagonal (``"diagonal"``) or NaN (``"nan"``).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..metrics import EMPTY_POLICIES, dice_iou


def boundary(m: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean N-d mask (full-connectivity erosion)."""
    m = m.astype(bool)
    return m & ~ndimage.binary_erosion(m, structure=np.ones((3,) * m.ndim, bool), border_value=0)


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing=None) -> np.ndarray:
    """Both directed boundary-to-boundary distances, concatenated (both masks non-empty)."""
    spacing = spacing or (1.0,) * pred.ndim
    bp, bg = boundary(pred), boundary(gt)
    dt_g = ndimage.distance_transform_edt(~bg, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~bp, sampling=spacing)
    return np.concatenate([dt_g[bp], dt_p[bg]])


def score_volume(pred: np.ndarray, gt: np.ndarray, empty_policy: str = "diagonal", spacing=None) -> dict:
    """Dice, IoU, HD95, ASD of one volume, with flags ``empty_pred`` / ``empty_gt``."""
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    spacing = tuple(spacing or (1.0,) * pred.ndim)
    p, g = pred.astype(bool), gt.astype(bool)
    d, j = dice_iou(p, g)
    ep, eg = not p.any(), not g.any()
    if ep and eg:
        hd = asd = 0.0
    elif ep or eg:
        diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(p.shape, spacing)))
        hd = asd = diag if empty_policy == "diagonal" else float("nan")
    else:
        sd = surface_distances(p, g, spacing)
        hd, asd = float(np.percentile(sd, 95)), float(sd.mean())
    return {"dice": d, "iou": j, "hd95": hd, "asd": asd, "empty_pred": ep, "empty_gt": eg}
