"""Small ``show_*`` helpers for the notebooks (matplotlib only, one axis or figure each)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _ax(ax):
    import matplotlib.pyplot as plt

    return ax if ax is not None else plt.gca()


def show_image(img, ax=None, title: str | None = None, fontsize: float = 8):
    ax = _ax(ax)
    ax.imshow(img, cmap="gray", vmin=0, vmax=255 if np.asarray(img).dtype == np.uint8 else None)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=fontsize)
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


def show_box(box, ax=None, color="yellow", label: str | None = None, linewidth: float = 1.2):
    """Draw an (x0, y0, x1, y1) pixel box."""
    import matplotlib.patches as patches

    ax = _ax(ax)
    x0, y0, x1, y1 = box
    ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=linewidth))
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


def show_grid(items, ncols: int = 4, size: float = 2.4, titles=None, title_size: float = 8):
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
        show_image(img, ax, titles[k] if titles else None, fontsize=title_size)
        for m, c in zip(masks, [(1.0, 0.2, 0.2), (0.1, 0.9, 0.9)]):
            if m is not None:
                show_mask(m, ax, color=c, alpha=0.2)
    fig.tight_layout()
    return fig


def show_map_columns(columns: list[dict], size: float = 2.2, title_size: float = 9):
    """A grid of maps, one row per image and one column per quantity, with **one colour bar per column** (all
    rows of a column share its scale), below the column. Returns the figure.

    Each column is a dict: ``title``, ``maps`` (N, H, W) array or tensor, and optionally ``cmap``, ``vmin``,
    ``vmax``, ``label`` (the colour bar's label), ``image=True`` (grayscale, no colour bar) and ``contours``
    ((N, H, W) masks outlined in lime, e.g. the ground truth)."""
    import matplotlib.pyplot as plt

    n = len(np.asarray(columns[0]["maps"]))
    fig, axes = plt.subplots(n, len(columns), figsize=(size * len(columns), size * n + 0.6), squeeze=False,
                             layout="constrained")
    for c, col in enumerate(columns):
        maps = np.asarray(col["maps"])
        im = None
        for r in range(n):
            ax = axes[r, c]
            if col.get("image"):
                show_image(maps[r], ax)
            else:
                im = ax.imshow(maps[r], cmap=col.get("cmap", "viridis"), vmin=col.get("vmin"), vmax=col.get("vmax"))
                ax.set_axis_off()
            if col.get("contours") is not None:
                ax.contour(np.asarray(col["contours"][r], dtype=float), levels=[0.5], colors=["lime"], linewidths=0.8)
        axes[0, c].set_title(col["title"], fontsize=title_size)
        if im is not None:
            cb = fig.colorbar(im, ax=axes[:, c], location="bottom", shrink=0.85, aspect=18, pad=0.02)
            cb.ax.tick_params(labelsize=7)
            if col.get("label"):
                cb.set_label(col["label"], fontsize=8)
    return fig


def show_training(history: list[dict], title: str | None = None):
    """Training curves on two panels, one y-axis per quantity: the training loss (left) and, on a 0-1 scale,
    validation Dice with the selected (best) epoch marked and, when recorded, the share of validation images
    predicted empty (right). Returns the figure."""
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    from matplotlib.ticker import MaxNLocator

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 2.8), layout="constrained")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers, also in a 2-epoch run
    a.plot(ep, [h["loss"] for h in history], marker=".", color="C0")
    a.set_xlabel("epoch")
    a.set_ylabel("training loss (sum of the method's terms)")
    a.set_title("training loss", fontsize=9)
    dice = [h["val_dice"] for h in history]
    b.plot(ep, dice, marker=".", color="C1", label="validation Dice")
    best = int(np.argmax(dice))
    b.plot([ep[best]], [dice[best]], "o", mfc="none", ms=10, color="C3", label=f"selected: epoch {ep[best]}")
    if all("val_empty" in h for h in history):
        b.plot(ep, [h["val_empty"] for h in history], ls=":", color="C2", label="validation: share predicted empty")
    b.set_ylim(-0.02, 1.02)
    b.set_xlabel("epoch")
    b.set_ylabel("Dice / share of images")
    b.set_title("validation (selects the epoch)", fontsize=9)
    b.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def show_patches(img, patches, k: int, ax=None, title: str | None = None, color=(1.0, 0.55, 0.0)):
    """An image with a k x k patch grid drawn over it and the patches flagged in ``patches`` ((gh, gw) bool)
    filled, e.g. AURCL's anchor patches."""
    ax = show_image(img, ax, title)
    h, w = np.asarray(img).shape[:2]
    grid = np.asarray(patches, dtype=bool)
    full = np.repeat(np.repeat(grid, k, 0), k, 1)[:h, :w]
    show_mask(full, ax, color=color, alpha=0.35, outline=False)
    for x in range(k, w, k):
        ax.axvline(x - 0.5, color="white", lw=0.4, alpha=0.6)
    for y in range(k, h, k):
        ax.axhline(y - 0.5, color="white", lw=0.4, alpha=0.6)
    return ax


def save_figure(fig, fig_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as PNG (dpi 120) into ``fig_dir``; returns the path."""
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = fig_dir / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
