"""The prompt explorer: pick an image, type or pick a phrase, move the thresholds, see boxes and mask."""
from __future__ import annotations

from .data import load_pair
from .prompts import PROMPT_FAMILIES
from .show import show_box, show_image, show_mask


def show_prompt_result(sample, backend, phrase: str, box_threshold: float = 0.0, top_k: int = 1, ax=None):
    """Run ``backend`` on one sample and draw ground truth (green), boxes (yellow) and the mask (red).

    Returns ``(detections, masks)`` so a caller can inspect the numbers behind the picture."""
    import matplotlib.pyplot as plt

    img, gt = load_pair(sample)
    dets = backend.detect(img, phrase, box_threshold=box_threshold, top_k=top_k)
    masks = backend.segment(img, dets) if dets else []
    ax = ax or plt.subplots(figsize=(5, 4))[1]
    show_image(img, ax, f"{sample.id} · '{phrase}' · {len(dets)} box(es)")
    if gt.any():
        ax.contour(gt.astype(float), levels=[0.5], colors=["lime"], linewidths=0.8)
    for d, (m, _) in zip(dets, masks):
        show_mask(m, ax, color=(1.0, 0.2, 0.2), alpha=0.3, outline=False)
        show_box(d.box, ax, label=f"{d.phrase} {d.score:.2f}")
    return dets, masks


def prompt_explorer(samples, backend, phrases=None):
    """An ipywidgets panel around :func:`show_prompt_result` (works with either backend)."""
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
            fig, ax = plt.subplots(figsize=(5.5, 4.2))
            show_prompt_result(samples[image.value], backend, phrase.value or phrases[0], thr.value, topk.value, ax)
            plt.show()

    for w in (image, phrase, thr, topk):
        w.observe(update, names="value")
    update()
    return W.VBox([W.HBox([image, phrase]), W.HBox([thr, topk]), out])
