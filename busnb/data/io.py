"""Reading images and masks of any PNG/JPEG mode, with errors that name the file and the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
    """Bad input data. The message names the file and says how to fix it."""


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Fix: check the dataset root and layout (see README, 'Datasets').")
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(
            f"{path}: cannot be read as an image ({e}). Fix: re-export or re-download this file, "
            "or remove it together with its mask."
        ) from e
    return im


def read_image(path: str | Path) -> np.ndarray:
    """Grayscale ``uint8`` array (H, W). RGB / Doppler images use ITU-R 601 luma."""
    im = _open(Path(path))
    if im.mode in ("I;16", "I;16B", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo + 1e-12) * 255.0
        return a.round().astype(np.uint8)
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGB")
    return np.asarray(im.convert("L"), dtype=np.uint8).copy()


def read_mask(path: str | Path) -> np.ndarray:
    """Binary mask (H, W) ``bool`` from a 1-bit, L, P, RGB or RGBA file.

    Foreground is any colour channel above half range. For RGBA files whose colour
    channels are all zero, the alpha channel is used instead (some tools store the
    mask only there).
    """
    path = Path(path)
    im = _open(path)
    if im.mode == "1":
        return np.asarray(im, dtype=bool).copy()
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    a = np.asarray(im)
    if a.ndim == 2:
        if a.dtype != np.uint8:
            return a > (a.max() / 2 if a.max() > 0 else 0)
        return a > 127
    color = a[..., :3].max(axis=-1) if a.shape[-1] >= 3 else a[..., 0]
    fg = color > 127
    if not fg.any() and a.shape[-1] in (2, 4):
        alpha = a[..., -1]
        if alpha.min() != alpha.max():
            fg = alpha > 127
    return fg


def read_union_mask(paths, image_shape: tuple[int, int] | None = None, image_path=None) -> np.ndarray:
    """Union of several mask files; every file must match ``image_shape``."""
    union = None
    for p in paths:
        m = read_mask(p)
        if image_shape is not None and m.shape != tuple(image_shape):
            raise DataError(
                f"{p}: mask is {m.shape[1]}x{m.shape[0]} (WxH) but its image {image_path or ''} is "
                f"{image_shape[1]}x{image_shape[0]}. Fix: re-export the mask at the image's size."
            )
        union = m if union is None else (union | m)
    if union is None:
        if image_shape is None:
            raise DataError(f"{image_path}: no mask file. Fix: add <name>_mask.png beside the image.")
        union = np.zeros(image_shape, dtype=bool)
    return union


def load_pair(sample) -> tuple[np.ndarray, np.ndarray]:
    """Image (uint8 H,W) and union mask (bool H,W) of a :class:`Sample`."""
    img = read_image(sample.image)
    return img, read_union_mask(sample.masks, img.shape, sample.image)
