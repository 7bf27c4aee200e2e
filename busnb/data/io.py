"""Reading images and masks of any PNG/JPEG mode, with errors that name the file and the fix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(ValueError):
    """Bad input data. The message names the file and says how to fix it."""


# what PIL raises for a file it cannot decode (ValueError: some truncated or malformed chunks)
UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def decode(path: Path) -> Image.Image:
    """The image at ``path``, fully decoded (``Image.load``); PIL's :data:`UNREADABLE` errors pass through."""
    im = Image.open(path)
    im.load()
    return im


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found. Fix: check the dataset root and layout (see README, 'Datasets').")
    try:
        im = decode(path)
    except UNREADABLE as e:
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


# How a mask file's values were read (see :func:`read_mask`); counted by :mod:`busnb.data.validate`.
MASK_KINDS = ("1-bit", "empty", "two-valued", "many-valued", "constant")


def _mask_values(im: Image.Image) -> np.ndarray:
    """The 2-D array of values that carries the mask: grey level, the brightest colour
    channel, or the alpha channel when the colour channels are constant and alpha is not."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    a = np.asarray(im)
    if a.ndim == 2:
        return a
    color = a[..., :3].max(axis=-1) if a.shape[-1] >= 3 else a[..., 0]
    if a.shape[-1] in (2, 4) and color.min() == color.max():
        alpha = a[..., -1]
        if alpha.min() != alpha.max():
            return alpha
    return color


def classify_mask(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Foreground (bool) of a 2-D array of mask values and the rule used (one of :data:`MASK_KINDS`).

    * all zero -> ``empty``;
    * one non-zero value everywhere -> ``constant``: the whole image is foreground;
    * exactly two values -> ``two-valued``: the larger one is foreground, whatever it is
      ({0, 1}, {0, 255}, {0, 38} label images, {1, 255} ... all read alike);
    * more than two values (anti-aliased, resized or JPEG masks) -> ``many-valued``:
      foreground is above half the largest value (``> 127`` for 8-bit masks reaching 255).
    """
    values = np.asarray(values)
    if values.dtype == bool:
        return values.copy(), "1-bit"
    lo, hi = values.min(), values.max()
    if hi == 0 and lo == 0:
        return np.zeros(values.shape, bool), "empty"
    if lo == hi:
        return np.ones(values.shape, bool), "constant"
    n_values = (np.count_nonzero(np.bincount(values.ravel())) if values.dtype == np.uint8
                else len(np.unique(values)))
    if n_values == 2:
        return values == hi, "two-valued"
    return values > float(hi) / 2, "many-valued"


def read_mask_kind(path: str | Path) -> tuple[np.ndarray, str]:
    """:func:`read_mask` and the rule that read it (one of :data:`MASK_KINDS`)."""
    path = Path(path)
    im = _open(path)
    if im.mode == "1":
        return np.asarray(im, dtype=bool).copy(), "1-bit"
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise DataError(f"{path}: mask holds NaN or infinite values. Fix: re-export it as an 8-bit PNG.")
        return classify_mask(a)
    return classify_mask(_mask_values(im))


def read_mask(path: str | Path) -> np.ndarray:
    """Binary mask (H, W) ``bool`` from a 1-bit, L, I;16, P, RGB or RGBA file.

    The values read are the grey level (L, I;16, I, F), the brightest colour channel
    (RGB, P) or, for RGBA / LA files whose colour channels are constant while alpha
    varies, the alpha channel (some tools store the mask only there). Then:

    * a 1-bit file is read as is;
    * all zero: empty (no lesion);
    * one non-zero value everywhere: the whole image is foreground;
    * exactly two values: the larger is foreground. So ``{0, 1}`` masks (8-bit with
      maximum 1, as many tools write them), ``{0, 255}`` and ``{0, k}`` label images are
      all read correctly;
    * more than two values (anti-aliased, resized or JPEG-compressed masks): foreground
      is above half the largest value (``> 127`` for an 8-bit mask reaching 255).

    :func:`busnb.data.validate.validate_dataset` counts each case once per dataset copy
    and prints the empty, whole-image and many-valued ones.
    """
    return read_mask_kind(path)[0]


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


def examples(items, k: int = 5) -> str:
    """``'a', 'b', 'c' (+12 more)``: a few names of a longer list, for messages."""
    items = [getattr(x, "name", x) for x in items]
    head = ", ".join(f"'{x}'" for x in items[:k])
    return head + (f" (+{len(items) - k} more)" if len(items) > k else "")


def list_image_files(d: Path, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """Image files of folder ``d``, sorted by name; what is skipped is printed with a count.

    * dot-files (macOS ``._x.png`` AppleDouble files, ``.DS_Store``): metadata, not images;
    * other entries (``README.txt``, sub-folders, other extensions): not images of the dataset.
    """
    files, hidden, other = [], [], []
    for f in sorted(Path(d).iterdir()):
        if f.name.startswith("."):
            hidden.append(f)
        elif f.is_file() and f.suffix.lower() in suffixes:
            files.append(f)
        else:
            other.append(f)
    if hidden:
        print(f"{d}: skipped {len(hidden)} hidden file(s) (macOS '._*' AppleDouble / .DS_Store metadata, "
              f"not images): {examples(hidden)}")
    if other:
        what = "entry that is not an image" if len(other) == 1 else "entries that are not images"
        print(f"{d}: ignored {len(other)} {what} ({' '.join(suffixes)}): {examples(other, 20)}")
    return files
