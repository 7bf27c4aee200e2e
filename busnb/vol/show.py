"""Slices of a volume with its ground truth and a prediction (notebook 09)."""
from __future__ import annotations

import numpy as np


def lesion_slices(mask: np.ndarray, n: int = 4, axis: int = 0) -> list[int]:
    """``n`` slice indices along ``axis`` spread over the lesion's extent (the middle slices if none)."""
    other = tuple(a for a in range(mask.ndim) if a != axis)
    idx = np.nonzero(mask.any(axis=other))[0]
    lo, hi = (idx.min(), idx.max()) if idx.size else (mask.shape[axis] // 3, 2 * mask.shape[axis] // 3)
    return sorted({int(round(v)) for v in np.linspace(lo, hi, n + 2)[1:-1]})


def show_volume_slices(volume: np.ndarray, mask: np.ndarray | None = None, pred: np.ndarray | None = None,
                       prob: np.ndarray | None = None, slices=None, n: int = 4, axis: int = 0, size: float = 2.3):
    """One column per slice: the image with the ground truth (green) and prediction (red) outlines; a second
    row with the foreground probability when ``prob`` is given. ``slices`` default: ``n`` slices across
    the lesion (:func:`lesion_slices`). Returns the figure."""
    import matplotlib.pyplot as plt

    slices = slices if slices is not None else lesion_slices(mask if mask is not None else volume > 0, n, axis)
    rows = 2 if prob is not None else 1
    fig, axes = plt.subplots(rows, len(slices), figsize=(size * len(slices) + (0.6 if prob is not None else 0),
                                                         size * rows), squeeze=False, layout="constrained")
    take = lambda a, i: np.take(a, i, axis=axis)  # noqa: E731
    for c, i in enumerate(slices):
        ax = axes[0, c]
        ax.imshow(take(volume, i), cmap="gray", vmin=0, vmax=255)
        if mask is not None and take(mask, i).any():
            ax.contour(take(mask, i), levels=[0.5], colors=["lime"], linewidths=1)
        if pred is not None and take(pred, i).any():
            ax.contour(take(pred, i), levels=[0.5], colors=["red"], linewidths=1)
        ax.set_title(f"slice {i} (axis {axis})", fontsize=8)
        ax.axis("off")
        if prob is not None:
            im = axes[1, c].imshow(take(prob, i), cmap="viridis", vmin=0, vmax=1)
            axes[1, c].set_title("P(lesion)", fontsize=8)
            axes[1, c].axis("off")
    if prob is not None:  # one scale for the whole row
        fig.colorbar(im, ax=list(axes[1]), fraction=0.03, pad=0.02, label="P(lesion)")
    return fig
