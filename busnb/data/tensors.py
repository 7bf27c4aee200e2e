"""In-memory tensors for training: every image resized once to the training size."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .io import load_pair
from .record import Sample


def resize_pair(img: np.ndarray, mask: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Image bilinear, mask nearest, both to ``size`` x ``size`` (the paper resizes without cropping)."""
    im = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    if mask is None:
        return im, None
    return im, np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 127


def foreground_rate(masks: torch.Tensor, eps: float = 1e-4) -> float:
    """The share of foreground pixels over all ``masks`` (any shape), clamped to [eps, 1 - eps] so that its
    logit is finite: the labeled foreground base rate pi of DuSSS (the ``label_rate`` stage,
    :func:`busnb.stages.label_rate`) and of the VLM's calibration (:func:`busnb.vlm.pretrain.calibrate`)."""
    if masks.numel() == 0:
        raise ValueError("foreground_rate: no mask pixels (no labeled images?)")
    return float(masks.float().mean().clamp(eps, 1 - eps))


class SegArrays(torch.utils.data.Dataset):
    """Images (N,1,S,S) float in [0,1] and masks (N,1,S,S) float {0,1}, held in memory.

    ``targets`` optionally replaces the ground truth of some images (e.g. by pseudo-labels), as a
    dict id -> bool mask at the image's size; ``index`` of each item is returned so losses can look up per-sample data.
    """

    def __init__(self, samples: list[Sample], size: int, targets: dict | None = None, progress: bool = False):
        from ..progress import tqdm

        self.samples, self.size = list(samples), size
        n = len(self.samples)
        self.images = torch.empty(n, 1, size, size, dtype=torch.uint8)
        self.masks = torch.empty(n, 1, size, size, dtype=torch.bool)
        for i, s in enumerate(tqdm(self.samples, desc=f"load {size}px", disable=not progress)):
            img, mask = load_pair(s)
            if targets is not None and s.id in targets:
                mask = targets[s.id]
            im, m = resize_pair(img, mask, size)
            self.images[i, 0] = torch.from_numpy(im.copy())
            self.masks[i, 0] = torch.from_numpy(m.copy())

    @classmethod
    def from_tensors(cls, images: torch.Tensor, masks: torch.Tensor, samples=()) -> "SegArrays":
        """Arrays made from uint8 images (N,1,S,S) and bool masks of the same shape (no files read)."""
        self = cls.__new__(cls)
        self.samples, self.size = list(samples), images.shape[-1]
        self.images, self.masks = images, masks
        return self

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return {"image": self.images[i].float() / 255.0, "mask": self.masks[i].float(), "index": i}

    def to(self, device) -> "SegArrays":
        """A view of the same samples whose tensors live on ``device`` (self if already there)."""
        import copy

        device = torch.device(device)
        if self.images.device == device or (device.type == self.images.device.type and device.index is None):
            return self
        new = copy.copy(self)
        new.images, new.masks = self.images.to(device), self.masks.to(device)
        return new

    def batch(self, idx) -> dict:
        """Images / 255 and masks as float for the indices ``idx`` (indexed on the tensors' device)."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.images.device)
        return {"image": self.images[idx].float() / 255.0, "mask": self.masks[idx].float(), "index": idx}
