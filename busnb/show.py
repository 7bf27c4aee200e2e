"""Small ``show_*`` helpers for the notebooks (matplotlib only, one axis or figure each)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _ax(ax):
    import matplotlib.pyplot as plt

    return ax if ax is not None else plt.gca()


def show_image(img, ax=None, title: str | None = None):
    ax = _ax(ax)
    ax.imshow(img, cmap="gray", vmin=0, vmax=255 if np.asarray(img).dtype == np.uint8 else None)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def show_mask(mask, ax=None, color=(1.0, 0.2, 0.2), alpha: float = 0.35, outline: bool = True):
    """Overlay a binary mask as a translucent fill and an outline."""
    ax = _ax(ax)
    m = np.asarray(mask).astype(bool)
    rgba = np.zeros((*m.shape, 4))
    rgba[m] = (*color, alpha)
    ax.imshow(rgba)
    if outline and m.any():
        ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=0.8)
    return ax


def show_box(box, ax=None, color="yellow", label: str | None = None):
    """Draw an (x0, y0, x1, y1) pixel box."""
    import matplotlib.patches as patches

    ax = _ax(ax)
    x0, y0, x1, y1 = box
    ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.2))
    if label:
        ax.text(x0, y0 - 2, label, color=color, fontsize=7, va="bottom")
    return ax


def show_map(values, ax=None, title: str | None = None, cmap: str = "magma", colorbar: bool = True, **kw):
    """A scalar map (probability, entropy, weight) with its colour bar."""
    import matplotlib.pyplot as plt

    ax = _ax(ax)
    im = ax.imshow(np.asarray(values), cmap=cmap, **kw)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    if colorbar:
        plt.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return ax


def show_grid(items, ncols: int = 4, size: float = 2.4, titles=None):
    """Grid of (image, mask-or-None[, second mask]) tuples; returns the figure.

    The first mask is drawn in red (ground truth), a second one in cyan (prediction)."""
    import matplotlib.pyplot as plt

    n = len(items)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= n:
            continue
        img, *masks = items[k]
        show_image(img, ax, titles[k] if titles else None)
        for m, c in zip(masks, [(1.0, 0.2, 0.2), (0.1, 0.9, 0.9)]):
            if m is not None:
                show_mask(m, ax, color=c, alpha=0.2)
    fig.tight_layout()
    return fig


def show_history(history: list[dict], ax=None):
    """Training loss, validation Dice and (when recorded) the fraction of empty validation predictions
    per epoch: a rising empty fraction with a falling loss is a collapse to background."""
    ax = _ax(ax)
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["loss"] for h in history], label="train loss")
    ax.plot(ep, [h["val_dice"] for h in history], label="val Dice")
    if all("val_empty" in h for h in history):
        ax.plot(ep, [h["val_empty"] for h in history], ls=":", label="val: empty predictions")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    return ax


def save_figure(fig, fig_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as PNG (dpi 120) into ``fig_dir``; returns the path."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = fig_dir / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
