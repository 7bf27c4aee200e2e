"""Fit the appearance backend's score weights on a labeled split (never the test split).

Candidates and their features are computed once per image; a seeded random search then
picks the weights whose top-1 candidate has the highest mean Dice with the ground truth after
mask refinement (at the backend's work resolution). This is how the defaults were chosen (on BUSI val).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from ..data import load_pair
from ..metrics import dice_iou
from .appearance import AppearanceBackend

WEIGHTS = ("w_contrast", "w_darkness", "w_shape", "w_position", "w_size", "border_penalty")


def candidate_table(backend: AppearanceBackend, samples, phrase: str, progress: bool = True):
    """Per image: (features matrix [n_cand, n_feat], Dice of each candidate region with the ground truth)."""
    from tqdm.auto import tqdm

    out = []
    for s in tqdm(samples, desc="candidates", disable=not progress):
        img, gt = load_pair(s)
        cands = backend.candidates(img, phrase)
        if not cands:
            out.append((np.zeros((0, len(WEIGHTS))), np.zeros(0)))
            continue
        h, w = cands[0]["region"].shape
        g = np.asarray(Image.fromarray(gt.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        F = np.array([[c["features"][k] for k in ("contrast", "darkness", "shape", "position", "size")]
                      + [-c["features"]["touches"]] for c in cands])
        _, sm, fov, _ = backend._prep(img)
        refined = [backend.refine(sm, fov, backend.padded_box(c["box"], sm.shape), c["region"], c["polarity"])
                   for c in cands]
        out.append((F, np.array([dice_iou(m, g)[0] for m in refined])))
    return out


def top1_dice(table, weights: np.ndarray) -> float:
    return float(np.mean([d[np.argmax(F @ weights)] if len(d) else 0.0 for F, d in table]))


def tune(backend: AppearanceBackend, samples, phrase: str = "dark oval", n_iter: int = 2000, seed: int = 0,
         fixed: dict | None = None, progress: bool = True, table=None) -> tuple[AppearanceBackend, dict]:
    """Random search over the score weights (those in ``fixed`` are held); returns a tuned backend and a report.

    Holding ``w_shape`` keeps the backend prompt-sensitive: left free, a search on lesions of
    every shape may switch the shape word off."""
    table = table if table is not None else candidate_table(backend, samples, phrase, progress)
    rng = np.random.default_rng(seed)
    fixed = fixed or {}
    hold = np.array([k in fixed for k in WEIGHTS])
    best_w = np.array([fixed.get(k, getattr(backend.params, k)) for k in WEIGHTS], dtype=float)
    start = best = top1_dice(table, best_w)
    for _ in range(n_iter):
        w = best_w * np.exp(rng.normal(0, 0.35, len(best_w))) if rng.random() < 0.7 else rng.uniform(0, 2, len(best_w))
        w = np.where(hold, best_w, w)
        d = top1_dice(table, w)
        if d > best:
            best, best_w = d, w
    tuned = AppearanceBackend(replace(backend.params, **{k: round(float(v), 3) for k, v in zip(WEIGHTS, best_w)}))
    oracle = float(np.mean([d.max() if len(d) else 0.0 for _, d in table]))
    return tuned, {"phrase": phrase, "n_images": len(samples), "top1_dice_before": start, "top1_dice_after": best,
                   "oracle_dice": oracle, "weights": dict(zip(WEIGHTS, map(float, best_w)))}
