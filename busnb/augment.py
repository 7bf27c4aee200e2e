"""Batch augmentation on the device, applied by the trainer to every method alike (a profile setting).

``augment`` in a profile (and :class:`busnb.train.TrainConfig`) names one of:

* ``none`` - the paper recipe: images as loaded.
* ``weak`` - what the classic semi-supervised code bases use (Mean Teacher, CPS, BCP): a random horizontal
  flip and a small rotation (up to 15 degrees). No vertical flips or 90-degree turns: in ultrasound the
  transducer is at the top, so depth runs downwards and a flipped image is not a plausible scan.
* ``us`` - ``weak`` plus what suits B-mode ultrasound (and no colour jitter, there is no colour): a small
  affine (scale 0.9-1.1, shift up to 5 %), a gamma curve (0.7-1.5, brightness/contrast of the scanner
  settings), Gaussian blur (sigma 0.3-1.0 on half the images, the probe's resolution) and multiplicative
  speckle noise (I (1 + s n), n ~ N(0, 1), s up to 0.15; Burckhardt 1978).

Geometric transforms move image and mask together (mask by nearest sampling, so it stays {0, 1}); intensity
transforms touch the image only. Each sample draws its own parameters. The labeled and the unlabeled batch are
augmented independently; a method that feeds one unlabeled batch to a teacher and a student gives both the
same augmented view (weak-augmentation consistency, as in Mean Teacher's and CPS's code).

All draws come from torch's default generator on the batch's device: seeded by the run, saved in ``last.pt``,
and recorded with a captured CUDA graph like any other random op, so a run with augmentation is as
reproducible as one without.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("none", "weak", "us")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"augment={kind!r}: choose one of {', '.join(KINDS)}")
    return kind


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, device=like.device, dtype=torch.float32) * (hi - lo) + lo


def affine_params(n: int, like: torch.Tensor, max_deg: float, scale=(1.0, 1.0), shift: float = 0.0,
                  flip: bool = True) -> torch.Tensor:
    """(n, 2, 3) affine matrices for ``F.affine_grid``: flip x (p = 0.5), rotation, isotropic scale, shift."""
    ang = _uniform(n, -max_deg, max_deg, like) * (math.pi / 180)
    s = _uniform(n, scale[0], scale[1], like)
    fx = torch.where(torch.rand(n, device=like.device) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=like.device)
    tx, ty = _uniform(n, -shift, shift, like) * 2, _uniform(n, -shift, shift, like) * 2  # grid units are [-1, 1]
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    row0 = torch.stack([cos * fx, -sin, tx], 1)
    row1 = torch.stack([sin * fx, cos, ty], 1)
    return torch.stack([row0, row1], 1)


def warp(image: torch.Tensor, mask: torch.Tensor | None, theta: torch.Tensor):
    """Image (bilinear, border padding: the scan's edge intensities continue) and mask (nearest, zero
    padding) resampled with the same affine ``theta``."""
    grid = F.affine_grid(theta.to(image.dtype), list(image.shape), align_corners=False)
    img = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if mask is None:
        return img, None
    m = F.grid_sample(mask.to(image.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return img, m.to(mask.dtype)


def gamma(image: torch.Tensor, lo: float = 0.7, hi: float = 1.5) -> torch.Tensor:
    """I^g with log g uniform in [log lo, log hi], one g per image (image in [0, 1])."""
    g = torch.exp(_uniform(image.shape[0], math.log(lo), math.log(hi), image)).view(-1, 1, 1, 1)
    return image.clamp_min(0).pow(g.to(image.dtype))


def blur(image: torch.Tensor, p: float = 0.5, sigma=(0.3, 1.0), radius: int = 2) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma, applied to a random fraction ``p`` of the batch."""
    n = image.shape[0]
    sig = _uniform(n, *sigma, image).view(n, 1)
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32).view(1, -1)
    k = torch.exp(-0.5 * (x / sig) ** 2)
    k = (k / k.sum(1, keepdim=True)).to(image.dtype)                      # (n, 2r+1)
    c = image.shape[1]
    kx = k.repeat_interleave(c, 0).view(n * c, 1, 1, -1)
    ky = k.repeat_interleave(c, 0).view(n * c, 1, -1, 1)
    flat = image.reshape(1, n * c, *image.shape[2:])
    out = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kx, groups=n * c)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), ky, groups=n * c)
    out = out.view_as(image)
    use = (torch.rand(n, device=image.device) < p).view(-1, 1, 1, 1)
    return torch.where(use, out, image)


def speckle(image: torch.Tensor, max_sigma: float = 0.15) -> torch.Tensor:
    """Multiplicative speckle I (1 + s n), n ~ N(0, 1), s ~ U(0, max_sigma) per image, clipped to [0, 1]."""
    s = _uniform(image.shape[0], 0.0, max_sigma, image).view(-1, 1, 1, 1).to(image.dtype)
    return (image * (1 + s * torch.randn_like(image))).clamp(0, 1)


@torch.no_grad()
def augment_batch(batch: dict | None, kind: str) -> dict | None:
    """``batch`` (``image`` (B,1,H,W) in [0, 1], optional ``mask``) augmented as ``kind`` says; other keys
    (``index``) pass through. ``none`` returns the batch itself."""
    if batch is None or kind == "none":
        return batch
    img, mask = batch["image"], batch.get("mask")
    n = img.shape[0]
    if kind == "weak":
        theta = affine_params(n, img, 15.0)
    elif kind == "us":
        theta = affine_params(n, img, 15.0, scale=(0.9, 1.1), shift=0.05)
    else:
        raise ValueError(f"augment={kind!r}: choose one of {', '.join(KINDS)}")
    img, mask = warp(img, mask, theta)
    if kind == "us":
        img = speckle(blur(gamma(img)))
    out = dict(batch)
    out["image"] = img.contiguous(memory_format=torch.channels_last) if batch["image"].is_contiguous(
        memory_format=torch.channels_last) and not batch["image"].is_contiguous() else img
    if mask is not None:
        out["mask"] = mask
    return out
