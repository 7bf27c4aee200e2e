"""Fit the appearance backend's score weights on **labeled training images only**.

The backend's defaults are fixed without any mask (:mod:`busnb.appg.appearance`, "Where the
defaults come from"). This module is the optional alternative: fit the weights on the labeled
images of the ratio at hand (``busnb pseudo-label ... --fit-on labeled``,
:func:`fit_on_labeled`), which a semi-supervised method is allowed to use. Validation masks are
for checkpoint selection and test masks are scored once, so :func:`tune` refuses both: pass
``part`` (the name of the part the samples come from) and, where you have it, ``split`` (the
split's id lists, checked id by id).

Candidates and their features are computed once per image; for every candidate the final mask
(extent step, then the ellipse-regularised refinement) is scored against the ground truth at the
backend's work resolution; a seeded random search then picks the weights whose top-1 candidate
has the highest mean Dice. ``w_shape`` is held at its default so the shape word keeps its say.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from ..data import load_pair
from ..metrics import dice_iou
from .appearance import AppearanceBackend

WEIGHTS = ("w_contrast", "w_darkness", "w_shape", "w_position", "w_size", "w_edge", "border_penalty")
FEATURES = ("contrast", "darkness", "shape", "position", "size", "edge")
FORBIDDEN_PARTS = ("val", "test", "unlabeled")  # unlabeled: the method has no masks for them


class TuneError(ValueError):
    """Fitting asked for on images the protocol keeps away from fitting (validation, test)."""


def check_fit_samples(samples, part: str = "labeled", split: dict | None = None) -> None:
    """Refuse to fit on validation or test images: by the part's name, and id by id against ``split``."""
    if part in FORBIDDEN_PARTS:
        raise TuneError(f"tune: refusing to fit the appearance weights on the {part!r} part: validation masks only "
                        f"select checkpoints, test masks are scored once, the unlabeled pool has none. Fix: fit on the labeled images of "
                        f"the ratio (`busnb pseudo-label ... --fit-on labeled`, busnb.appg.tune.fit_on_labeled).")
    if split is not None:
        for name in ("val", "test"):
            bad = sorted({s.id for s in samples} & set(split.get(name, ())))
            if bad:
                raise TuneError(f"tune: {len(bad)} of the {len(samples)} images to fit on are in the split's "
                                f"{name!r} part (e.g. {bad[:3]}). Fix: fit on the labeled images of the ratio only "
                                f"(busnb.appg.tune.fit_on_labeled).")


def candidate_table(backend: AppearanceBackend, samples, phrase: str, progress: bool = True):
    """Per image: (features matrix [n_cand, n_feat], Dice of each candidate's final mask with the ground truth)."""
    from ..progress import tqdm

    out = []
    for s in tqdm(samples, desc="candidates", disable=not progress):
        img, gt = load_pair(s)
        cands = backend.candidates(img, phrase)
        if not cands:
            out.append((np.zeros((0, len(WEIGHTS))), np.zeros(0)))
            continue
        h, w = cands[0]["region"].shape
        g = np.asarray(Image.fromarray(gt.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        F = np.array([[c["features"].get(k, 0.0) for k in FEATURES] + [-c["features"]["touches"]] for c in cands])
        _, sm, fov, _, _ = backend._prep(img)
        dice = []
        for i in range(len(cands)):
            c = backend.extend(cands, i)
            m = backend.refine(sm, fov, backend.padded_box(c["box"], sm.shape), c["region"], c["polarity"])
            dice.append(dice_iou(m, g)[0])
        out.append((F, np.array(dice)))
    return out


def top1_each(table, weights: np.ndarray) -> np.ndarray:
    """Per image: the Dice of the candidate that ``weights`` score highest (0 for an image without candidates)."""
    return np.array([d[np.argmax(F @ weights)] if len(d) else 0.0 for F, d in table], float)


def top1_dice(table, weights: np.ndarray) -> float:
    return float(top1_each(table, weights).mean())


def _search(table, start_w: np.ndarray, hold: np.ndarray, n_iter: int, rng) -> tuple[np.ndarray, float]:
    """Seeded random search over the weights not in ``hold``, from ``start_w``: the weights with the highest
    top-1 Dice on ``table`` and that Dice."""
    best_w, best = start_w, top1_dice(table, start_w)
    for _ in range(n_iter):
        w = best_w * np.exp(rng.normal(0, 0.35, len(best_w))) if rng.random() < 0.7 else rng.uniform(0, 2, len(best_w))
        w = np.where(hold, best_w, w)
        d = top1_dice(table, w)
        if d > best + 1e-9:
            best, best_w = d, w
    return best_w, best


def cross_validate(table, start_w: np.ndarray, hold: np.ndarray, n_iter: int, folds: int, seed: int = 0) -> dict:
    """``folds``-fold cross-validation of the search on the images of ``table``: the images are dealt into
    ``folds`` groups (seeded permutation); each group is scored at the weights searched on the other groups.
    Returns the mean over all images of that out-of-fold top-1 Dice (``fitted``) beside the starting weights' top-1
    on the same images (``defaults``, equal to the in-sample ``top1_dice_before``): whether fitting on so few
    images generalises, measured on the labeled images alone."""
    n = len(table)
    folds = int(min(folds, n))
    if folds < 2:
        raise ValueError(f"cross_validate: {n} image(s) cannot be split into {folds} folds; need at least 2 images")
    group = np.empty(n, int)
    group[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    out = np.zeros(n)
    for k in range(folds):
        fit = [t for t, g in zip(table, group) if g != k]
        w, _ = _search(fit, start_w, hold, n_iter, np.random.default_rng(seed + 1 + k))
        held = np.nonzero(group == k)[0]
        out[held] = top1_each([table[i] for i in held], w)
    return {"folds": folds, "fitted": float(out.mean()), "defaults": top1_dice(table, start_w),
            "per_image": out.tolist(), "fold_of": group.tolist()}


def tune(backend: AppearanceBackend, samples, phrase: str = "dark oval", n_iter: int = 2000, seed: int = 0,
         fixed: dict | None = None, progress: bool = True, table=None, part: str = "labeled",
         split: dict | None = None, cv_folds: int = 5) -> tuple[AppearanceBackend, dict]:
    """Random search over the score weights (those in ``fixed``, and ``w_shape`` unless given, are held);
    returns a tuned backend and a report. ``part`` / ``split``: see :func:`check_fit_samples` (val and test
    are refused).

    The report's ceilings say how far any weighting could go on these images: ``oracle_dice`` is the mean over
    images of the best final mask among *all* candidates (a perfect ranking), ``oracle_top[k]`` the best among the
    ``k`` highest-scoring ones under the starting weights (``oracle_top[1]`` is ``top1_dice_before``). Both are
    in-sample, on the images fitted on, and so is ``top1_dice_after``. ``cv`` (when ``cv_folds`` >= 2) is the
    out-of-sample estimate: :func:`cross_validate` on the same images, each scored at weights searched without it.

    Holding ``w_shape`` keeps the backend prompt-sensitive: left free, a search on lesions of
    every shape may switch the shape word off."""
    check_fit_samples(samples, part, split)
    table = table if table is not None else candidate_table(backend, samples, phrase, progress)
    fixed = {"w_shape": backend.params.w_shape, **(fixed or {})}
    hold = np.array([k in fixed for k in WEIGHTS])
    start_w = np.array([fixed.get(k, getattr(backend.params, k)) for k in WEIGHTS], dtype=float)
    start = top1_dice(table, start_w)
    best_w, best = _search(table, start_w, hold, n_iter, np.random.default_rng(seed))
    tuned = AppearanceBackend(replace(backend.params, **{k: round(float(v), 3) for k, v in zip(WEIGHTS, best_w)}))
    def ceiling(k=None):  # mean over images of the best final mask among the k highest-scoring candidates (None: all)
        return float(np.mean([d[:k].max() if len(d) else 0.0 for _, d in table]))

    oracle, top = ceiling(), {k: ceiling(k) for k in (1, 5, 10)}
    cv = cross_validate(table, start_w, hold, n_iter, cv_folds, seed) if cv_folds >= 2 and len(table) >= 2 else None
    return tuned, {"phrase": phrase, "part": part, "n_images": len(samples), "ids": [s.id for s in samples],
                   "top1_dice_before": start, "top1_dice_after": best, "oracle_dice": oracle, "oracle_top": top,
                   "weights": dict(zip(WEIGHTS, map(float, best_w))), "cv": cv}


def fit_on_labeled(backend: AppearanceBackend, samples, split: dict, ratio: float, phrase: str = "dark oval",
                   n_iter: int = 2000, seed: int = 0, progress: bool = True, cv_folds: int = 5,
                   table=None) -> tuple[AppearanceBackend, dict]:
    """Weights fitted on the labeled images of ``ratio`` in ``split`` only (never val, test or the unlabeled
    pool): what ``busnb pseudo-label ... --fit-on labeled`` uses. ``phrase``: the phrases of the prompt
    (separated by '.'), scored as the pipeline scores them.

    The fitted weights are returned only when they beat the starting ones out of sample: ``cv_folds``-fold
    cross-validation on the same labeled images (:func:`cross_validate`) must give a higher top-1 Dice than the
    starting weights on those images; otherwise ``backend`` comes back unchanged. The report's ``adopted`` says
    which. (On BUSI, split seed 0, the search gains 0.03 / 0.11 in-sample at 10 / 2.5 % and loses 0.04 out of
    sample: results/RECORD.md, *Fitting the score on labeled images does not generalise*.) ``cv_folds=0`` skips the
    check and always returns the fitted weights. ``table``: the labeled images' :func:`candidate_table`, when
    already computed (it is then not recomputed; its rows must follow the labeled images' order)."""
    from ..splits import subsets

    labeled = subsets(samples, split, ratio)["labeled"]
    if not labeled:
        raise TuneError(f"fit_on_labeled: the split has no labeled images at {ratio} %. Fix: pick a ratio with labels.")
    tuned, rep = tune(backend, labeled, phrase, n_iter=n_iter, seed=seed, progress=progress, part="labeled",
                      split=split, cv_folds=cv_folds, table=table)
    rep["adopted"] = rep["cv"] is None or rep["cv"]["fitted"] > rep["cv"]["defaults"] + 1e-9
    return (tuned if rep["adopted"] else backend), rep


def score_table(backend: AppearanceBackend, samples, phrases, top_k: int = 5, iou: float = 0.5,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(raw scores, hit)`` of the top-``top_k`` non-suppressed boxes of every phrase on every image: ``hit`` is
    whether the box has IoU >= ``iou`` with the box of one of the image's lesions (``meta["lesions"][k]["bbox"]``,
    as the phantom records them; the ground-truth mask's box otherwise)."""
    from ..progress import tqdm

    from .appearance import box_iou

    raw, hit = [], []
    for s in tqdm(samples, desc="calibration boxes", disable=not progress):
        img, gt = load_pair(s)
        truth = [tuple(l["bbox"]) for l in (s.meta or {}).get("lesions", [])]
        if not truth and gt.any():
            ys, xs = np.nonzero(gt)
            truth = [(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)]
        for phrase in phrases:
            for d in backend.detect(img, phrase, top_k=top_k):
                raw.append(d.extra["raw_score"])
                hit.append(any(box_iou(d.box, t) >= iou for t in truth))
    return np.array(raw, float), np.array(hit, bool)


def fit_score_calibration(raw: np.ndarray, hit: np.ndarray, n_iter: int = 50) -> tuple[float, float]:
    """``(center, scale)`` of the logistic ``P(hit | raw) = 1 / (1 + exp(-(raw - center) / scale))``, by maximum
    likelihood (Newton's method on the intercept and slope). How the constants of
    :meth:`AppearanceBackend.calibrated_score` were obtained, from :func:`score_table` on a phantom the notebooks
    never use (``load_dataset("phantom", phantom=PhantomConfig(seed=1))``, the 11 phrases of the prompt
    families); never fit it on validation or test masks."""
    x, y = np.asarray(raw, float), np.asarray(hit, float)
    if y.min() == y.max():
        raise ValueError("fit_score_calibration needs boxes that hit a lesion and boxes that miss")
    X = np.stack([np.ones_like(x), x], 1)
    beta = np.zeros(2)
    for _ in range(n_iter):
        p = 1 / (1 + np.exp(-X @ beta))
        H = X.T @ (X * (p * (1 - p))[:, None]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(H, X.T @ (y - p))
        beta += step
        if np.abs(step).max() < 1e-8:
            break
    b0, b1 = beta
    return float(-b0 / b1), float(1 / b1)
