"""The prompt explorer: pick an image, type or pick a phrase, move the thresholds, see boxes and mask."""
from __future__ import annotations

from .data import load_pair
from .prompts import PROMPT_FAMILIES
from .show import show_box, show_image, show_mask

# one colour per box rank (1st, 2nd, ...): distinct on a grey ultrasound image
BOX_COLORS = ("yellow", "cyan", "magenta", "orange", "white")


def draw_detections(ax, detections, masks=None, colors=BOX_COLORS, fontsize: float = 8):
    """Draw ranked boxes (rank ``k`` in ``colors[k]``), their masks (red) and one readable label per box.

    Each box gets only its rank number, on a dark tag just inside its top-left corner; the phrase and score of
    every box are listed once, in a key under the image with the box's colour, so neither the list nor two
    boxes that share a corner cover each other or the image."""
    from matplotlib.patches import Patch

    masks = masks or [None] * len(detections)
    tag = dict(boxstyle="round,pad=0.15", facecolor="black", alpha=0.65, edgecolor="none")
    handles = []
    for k, (d, m) in enumerate(zip(detections, masks)):
        color = colors[k % len(colors)]
        if m is not None:
            show_mask(m[0] if isinstance(m, tuple) else m, ax, color=(1.0, 0.2, 0.2), alpha=0.3, outline=False)
        show_box(d.box, ax, color=color, linewidth=1.4)
        ax.text(d.box[0] + 1, d.box[1] + 1, str(k + 1), color=color, fontsize=fontsize, va="top", ha="left", bbox=tag)
        handles.append(Patch(facecolor="none", edgecolor=color, linewidth=1.4, label=f"{k + 1}  {d.phrase}  {d.score:.2f}"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, -0.01), fontsize=fontsize, frameon=False,
                  handlelength=1.2, borderaxespad=0.0, labelspacing=0.25)
    return ax


def show_prompt_result(sample, backend, phrase: str, box_threshold: float = 0.0, top_k: int = 1, ax=None):
    """Run ``backend`` on one sample and draw ground truth (green), ranked boxes with their scores and the masks
    (red) (:func:`draw_detections`).

    Returns ``(detections, masks)`` so a caller can inspect the numbers behind the picture."""
    import matplotlib.pyplot as plt

    img, gt = load_pair(sample)
    dets = backend.detect(img, phrase, box_threshold=box_threshold, top_k=top_k)
    masks = backend.segment(img, dets) if dets else []
    ax = ax or plt.subplots(figsize=(5, 4))[1]
    show_image(img, ax)
    ax.set_title(f"{sample.id} · '{phrase}'\nthreshold {box_threshold:.2f}, top-k {top_k}: {len(dets)} box(es)",
                 fontsize=9)
    if gt.any():
        ax.contour(gt.astype(float), levels=[0.5], colors=["lime"], linewidths=0.8)
    draw_detections(ax, dets, masks)
    return dets, masks


def prompt_explorer(samples, backend, phrases=None):
    """An ipywidgets panel around :func:`show_prompt_result` (works with either backend).

    The box threshold runs over [0, 1]: both backends score boxes on that scale (``appearance``: its calibrated
    score, :meth:`busnb.appg.appearance.AppearanceBackend.calibrated_score`)."""
    import ipywidgets as W
    import matplotlib.pyplot as plt
    from IPython.display import clear_output

    phrases = list(phrases or [p for ps in PROMPT_FAMILIES.values() for p in ps])
    image = W.Dropdown(options=[(s.id, i) for i, s in enumerate(samples)], description="image")
    phrase = W.Combobox(value=phrases[0], options=phrases, ensure_option=False, description="phrase")
    thr = W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="box thr")
    topk = W.IntSlider(value=1, min=1, max=5, description="top-k")
    out = W.Output()

    def update(*_):
        with out:
            clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5.5, 4.4))
            show_prompt_result(samples[image.value], backend, phrase.value or phrases[0], thr.value, topk.value, ax)
            plt.show()

    for w in (image, phrase, thr, topk):
        w.observe(update, names="value")
    update()
    return W.VBox([W.HBox([image, phrase]), W.HBox([thr, topk]), out])
