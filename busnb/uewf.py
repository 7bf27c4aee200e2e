"""UEWF: uncertainty-estimated weighted fusion of two teachers' soft predictions.

For binary segmentation with foreground probability ``y`` (B, 1, H, W):

* (Eq. 1) pixel entropy   E = -[y log y + (1 - y) log(1 - y)]            (nats, 0 <= E <= ln 2)
* (Eq. 2) patch smoothing E~ = AvgPool_k(E)                             (k = 14)
* (Eq. 3) weights         w = 1 / (E~ + eps)
* (Eq. 4) fusion          y_F = (w_A y_A + w_B y_B) / (w_A + w_B + eps)

Smoothing modes (``smoothing``):

* ``"patch"`` (default): non-overlapping k x k patches (stride k, partial patches at the border
  averaged over their valid pixels), each patch's mean copied back to its pixels - the reading of
  "patch-wise average pooling" used here;
* ``"overlap"``: a k x k box filter at stride 1 (same size, border averaged over valid pixels);
* ``"pixel"``: no smoothing (the ablation "without patch smoothing").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTHING = ("patch", "overlap", "pixel")


def entropy_map(y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 1: binary Shannon entropy of a probability map, in nats."""
    y = y.float().clamp(eps, 1 - eps)
    return -(y * torch.log(y) + (1 - y) * torch.log(1 - y))


def smooth(e: torch.Tensor, k: int = 14, mode: str = "patch") -> torch.Tensor:
    """Eq. 2: patch-wise average of an entropy map (B, 1, H, W); output has the input's size."""
    if mode == "pixel" or k <= 1:
        return e
    h, w = e.shape[-2:]
    if mode == "patch":
        pooled = F.avg_pool2d(e, k, stride=k, ceil_mode=True, count_include_pad=False)
        return pooled.repeat_interleave(k, -2).repeat_interleave(k, -1)[..., :h, :w]
    if mode == "overlap":
        pad_l, pad_r = (k - 1) // 2, k // 2
        ones = torch.ones_like(e)
        num = F.avg_pool2d(F.pad(e, (pad_l, pad_r, pad_l, pad_r)), k, stride=1, divisor_override=1)
        den = F.avg_pool2d(F.pad(ones, (pad_l, pad_r, pad_l, pad_r)), k, stride=1, divisor_override=1)
        return num / den
    raise ValueError(f"smoothing must be one of {SMOOTHING}")


def weights(e: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 3: w = 1 / (E + eps)."""
    return 1.0 / (e + eps)


def fuse(y_a: torch.Tensor, y_b: torch.Tensor, k: int = 14, smoothing: str = "patch",
         eps: float = 1e-6) -> tuple[torch.Tensor, dict]:
    """Eq. 1-4: fused soft target and the intermediate maps (entropies, smoothed, weights)."""
    y_a, y_b = y_a.float(), y_b.float()
    e_a, e_b = entropy_map(y_a), entropy_map(y_b)
    s_a, s_b = smooth(e_a, k, smoothing), smooth(e_b, k, smoothing)
    w_a, w_b = weights(s_a, eps), weights(s_b, eps)
    y_f = (w_a * y_a + w_b * y_b) / (w_a + w_b + eps)
    return y_f, {"entropy_a": e_a, "entropy_b": e_b, "smoothed_a": s_a, "smoothed_b": s_b,
                 "weight_a": w_a, "weight_b": w_b}
