"""Volumes in memory for the one trainer: the ``SegArrays`` interface for 5-D (N, 1, D, H, W) data.

:class:`VolumeArrays` holds uint8 volumes and bool masks. With ``patch`` set, :meth:`VolumeArrays.batch` returns
one random ``patch``-sized crop per index (uniform position, drawn from torch's default generator on the data's
device, so a seeded run is reproducible and ``last.pt`` restores it; gathered with index arithmetic, no host
synchronisation). Without ``patch`` it returns whole volumes (validation). :meth:`VolumeArrays.infer` is
``monai.inferers.sliding_window_inference`` with window ``roi`` (the training patch size): the trainer
validates through it when its validation arrays have it.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..data.tensors import SegArrays


class VolumeArrays(torch.utils.data.Dataset):
    """Volumes (N, 1, D, H, W) uint8 and masks bool; ``patch`` (d, h, w) crops in :meth:`batch`, ``roi`` the
    sliding-window size of :meth:`infer` (default: ``patch``), ``overlap`` its overlap."""

    def __init__(self, volumes: np.ndarray, masks: np.ndarray, patch=None, roi=None, overlap: float = 0.25,
                 ids=None):
        volumes, masks = np.asarray(volumes), np.asarray(masks)
        if volumes.ndim != 4 or masks.shape != volumes.shape:
            raise ValueError(f"VolumeArrays needs volumes (N, D, H, W) and masks of the same shape, got "
                             f"{volumes.shape} and {masks.shape}")
        if volumes.dtype != np.uint8:
            raise ValueError(f"volumes must be uint8 (0..255), got {volumes.dtype}; rescale them first")
        self.images = torch.from_numpy(volumes.copy())[:, None]
        self.masks = torch.from_numpy(masks.astype(bool))[:, None]
        self.patch = tuple(int(p) for p in patch) if patch else None
        if self.patch and any(p > s for p, s in zip(self.patch, volumes.shape[1:])):
            raise ValueError(f"patch {self.patch} is larger than the volumes {volumes.shape[1:]}; "
                             "set patch_size to at most the volume size")
        self.roi = tuple(int(r) for r in (roi or patch or volumes.shape[1:]))
        self.overlap = overlap
        self.ids = list(ids) if ids is not None else [f"vol_{i:04d}" for i in range(len(volumes))]
        self.samples = self.ids

    def __len__(self) -> int:
        return len(self.images)

    to = SegArrays.to  # a view whose images and masks live on ``device`` (self if already there)

    def whole(self) -> "VolumeArrays":
        """The same volumes without patch cropping (validation / test)."""
        new = copy.copy(self)
        new.patch = None
        return new

    def batch(self, idx) -> dict:
        """Images / 255 and masks as float for ``idx``: random ``patch`` crops, or whole volumes."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.images.device)
        if self.patch is None:
            return {"image": self.images[idx].float() / 255.0, "mask": self.masks[idx].float(), "index": idx}
        img, msk = random_crop(self.images[idx], self.masks[idx], self.patch)
        return {"image": img.float() / 255.0, "mask": msk.float(), "index": idx}

    @torch.no_grad()
    def infer(self, net, x: torch.Tensor, sw_batch_size: int = 4) -> torch.Tensor:
        """Logits of ``net`` over whole volumes ``x`` (N, 1, D, H, W) by sliding windows of ``roi`` (Gaussian
        blending, ``overlap``); the output has the size of ``x``."""
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(x, self.roi, sw_batch_size, net, overlap=self.overlap, mode="gaussian")


def random_crop(images: torch.Tensor, masks: torch.Tensor, patch, generator=None):
    """One uniform random ``patch``-sized crop per item of (N, C, D, H, W) tensors (same crop for image and
    mask), with static shapes: offsets drawn on the tensors' device, voxels gathered by index arithmetic."""
    n, c = images.shape[:2]
    sizes = images.shape[2:]
    dev = images.device
    idx = None
    for ax, (p, s) in enumerate(zip(patch, sizes)):
        off = torch.randint(0, s - p + 1, (n,), device=dev, generator=generator)
        ar = off[:, None] + torch.arange(p, device=dev)[None]  # (n, p)
        shape = [n, 1, 1, 1]
        shape[ax + 1] = p
        term = ar.view(shape)
        stride = int(np.prod(sizes[ax + 1:]))
        idx = term * stride if idx is None else idx + term * stride
    flat = idx.reshape(n, 1, -1).expand(n, c, -1)
    crop = tuple(patch)
    out_i = images.reshape(n, c, -1).gather(2, flat).reshape(n, c, *crop)
    out_m = masks.reshape(n, c, -1).gather(2, flat).reshape(n, c, *crop)
    return out_i, out_m
