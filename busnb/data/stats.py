"""Per-image statistics of a dataset, for the data tour."""
from __future__ import annotations

import numpy as np

from .io import load_pair
from .record import Sample


def dataset_table(samples: list[Sample], progress: bool = False):
    """pandas DataFrame: id, class, group, width, height, n_mask_files, lesion_fraction, n_components."""
    import pandas as pd
    from scipy import ndimage
    from tqdm.auto import tqdm

    rows = []
    for s in tqdm(samples, desc="stats", disable=not progress):
        img, m = load_pair(s)
        rows.append({"id": s.id, "class": s.cls, "group": s.group, "width": img.shape[1], "height": img.shape[0],
                     "n_mask_files": len(s.masks), "lesion_fraction": float(m.mean()),
                     "n_components": int(ndimage.label(m)[1]), "mean_intensity": float(np.mean(img))})
    return pd.DataFrame(rows)
