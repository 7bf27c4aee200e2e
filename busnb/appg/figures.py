"""Figures of the APPG notebooks (01 prompt design, 02 pseudo-labels); matplotlib only, each returns its figure."""
from __future__ import annotations

import numpy as np

FAMILY_COLORS = {"appearance": "tab:red", "medical": "tab:blue", "attribute": "tab:green",
                 "contrast (control)": "tab:gray"}


def plot_prompt_families(df, metric: str = "dice_all", colors: dict | None = None, title: str | None = None):
    """Bar per prompt of ``df`` (:func:`busnb.appg.pipeline.compare_prompts`), coloured by family, with
    +-1 standard error over the images (``dice_sem``) where ``metric`` is ``dice_all``; the legend's swatches
    are the families' colours. Returns the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = {**FAMILY_COLORS, **(colors or {})}
    fams = list(dict.fromkeys(df["family"]))
    palette = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for f in fams:  # families without a colour of their own
        colors.setdefault(f, next(palette))
    fig, ax = plt.subplots(figsize=(10, 3.8))
    x = np.arange(len(df))
    err = df["dice_sem"] if metric == "dice_all" and "dice_sem" in df else None
    ax.bar(x, df[metric], color=[colors[f] for f in df["family"]], yerr=err, capsize=3,
           error_kw={"elinewidth": 0.9, "ecolor": "black"})
    for xi, v in zip(x, df[metric]):
        ax.text(xi, 0.02, f"{v:.2f}", ha="center", va="bottom", fontsize=8, color="white", fontweight="bold")
    ax.set_xticks(x, df["prompt"], rotation=35, ha="right", fontsize=9)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pseudo-label Dice" if metric.startswith("dice") else metric)
    n = int(df["images"].iloc[0]) if "images" in df else None
    ax.set_title(title or f"Pseudo-label Dice per prompt ({n} images; bars: mean ± 1 s.e.)", fontsize=10)
    ax.legend(handles=[Patch(color=colors[f], label=f) for f in fams], fontsize=8, loc="center left",
              bbox_to_anchor=(1.01, 0.5), title="family", title_fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _percent_axis(axis, values):
    """Log-scale ticks at 1-2-5 steps covering ``values`` (in %), labelled as plain numbers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    v = np.asarray(values, float)
    v = v[v > 0]
    lo, hi = (v.min(), v.max()) if v.size else (0.1, 100)
    ticks = [m * 10.0 ** e for e in range(-3, 3) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5] or [lo, hi]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:g}"))


def plot_pseudo_label_quality(df, min_fg: float = 0.01):
    """Two panels from :func:`busnb.appg.pipeline.quality_table`: the histogram of pseudo-label Dice, and the
    pseudo-label's area against the true lesion's area (log-log, %), coloured by Dice (with its colour bar),
    with the area filter's threshold and the diagonal (same area). Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.25]})
    ax[0].hist(df["dice"], bins=20, range=(0, 1), color="tab:blue")
    ax[0].set_xlabel("pseudo-label Dice")
    ax[0].set_ylabel("images")
    ax[0].set_title(f"Dice of {len(df)} pseudo-labels (mean {df['dice'].mean():.2f})", fontsize=10)
    gt, area = df["gt_area"] * 100, df["area"] * 100
    floor = min_fg * 100 / 4  # empty pseudo-labels are drawn at the bottom edge, not lost on a log axis
    sc = ax[1].scatter(gt, area.clip(lower=floor), c=df["dice"], cmap="viridis", vmin=0, vmax=1, s=16,
                       edgecolors="k", linewidths=0.3)
    fig.colorbar(sc, ax=ax[1], label="pseudo-label Dice", fraction=0.05, pad=0.02)
    allv = np.concatenate([gt.to_numpy(), area.clip(lower=floor).to_numpy(), [min_fg * 100]])
    lo, hi = allv[allv > 0].min() / 1.3, allv.max() * 1.3
    ax[1].plot([lo, hi], [lo, hi], color="gray", lw=0.8, label="same area")
    ax[1].axhline(min_fg * 100, color="k", ls="--", lw=0.8, label=f"area filter ({min_fg * 100:g} %)")
    ax[1].set_xscale("log")
    ax[1].set_yscale("log")
    ax[1].set_xlim(lo, hi)
    ax[1].set_ylim(lo, hi)
    _percent_axis(ax[1].xaxis, allv)
    _percent_axis(ax[1].yaxis, allv)
    ax[1].set_xlabel("true lesion area, % of image")
    ax[1].set_ylabel("pseudo-label area, % of image")
    ax[1].set_title("Area: pseudo-label against truth", fontsize=10)
    ax[1].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
