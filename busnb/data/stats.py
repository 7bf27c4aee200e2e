"""Per-image statistics of a dataset, for the data tour."""
from __future__ import annotations

import numpy as np

from .io import load_pair
from .record import Sample


def dataset_table(samples: list[Sample], progress: bool = False):
    """pandas DataFrame: id, class, group, width, height, n_mask_files, lesion_fraction, n_components."""
    import pandas as pd
    from scipy import ndimage
    from ..progress import tqdm

    rows = []
    for s in tqdm(samples, desc="stats", disable=not progress):
        img, m = load_pair(s)
        rows.append({"id": s.id, "class": s.cls, "group": s.group, "width": img.shape[1], "height": img.shape[0],
                     "n_mask_files": len(s.masks), "lesion_fraction": float(m.mean()),
                     "n_components": int(ndimage.label(m)[1]), "mean_intensity": float(np.mean(img))})
    return pd.DataFrame(rows)


def class_summary(stats):
    """Per class of a :func:`dataset_table`: images, images with several mask files, extra mask files, median
    width / height (px), median lesion area (% of the image) and lesions of at most 1 % (the APPG area filter)."""
    out = stats.groupby("class").agg(
        images=("id", "size"), multi_mask_images=("n_mask_files", lambda v: int((v > 1).sum())),
        extra_mask_files=("n_mask_files", lambda v: int((v - 1).sum())), median_width=("width", "median"),
        median_height=("height", "median"), median_lesion_pct=("lesion_fraction", lambda v: 100 * v.median()),
        lesions_at_most_1pct=("lesion_fraction", lambda v: int((v <= 0.01).sum())))
    return out.round({"median_width": 0, "median_height": 0, "median_lesion_pct": 1}).astype(
        {"median_width": int, "median_height": int})
