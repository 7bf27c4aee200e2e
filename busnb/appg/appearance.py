"""Weight-free APPG backend: an appearance phrase -> box and mask by classical image processing.

It reads the same phrase Grounding DINO would get (``"dark oval"``) through
:func:`busnb.prompts.parse_phrase` and uses its two words:

* the **intensity** word sets the sign of the contrast a candidate must have against
  its surroundings (``dark``: darker than its ring; ``bright``: brighter; none: either);
* the **shape** word sets which region geometry scores well (aspect ratio, solidity,
  convexity deficit of oval / round / lobulated / irregular).

Steps (on a copy resized to ``work_size`` on its long side):

1. field of view: the largest bright-enough connected region (removes black margins);
   burned-in text, rulers and calipers (small, near-saturated, thin) are replaced by the
   local median before anything else;
2. speckle reduction: median then Gaussian filter;
3. candidates: connected components of ``n_levels`` intensity thresholds (quantiles of
   the field of view) in the phrase's polarity, after a morphological opening;
4. score per candidate: ``w_contrast * contrast + w_shape * shape_match +
   w_position * position_prior + w_size * size_prior + w_edge * edge - border_penalty * touches``
   (``edge``: mean gradient magnitude on the region's outline over the image's median gradient);
5. extent: the best-scoring region fixes *where* the lesion is; *how far* it reaches is the
   region, among the candidates that hold >= 90 % of it (the nested iso-intensity regions
   of the same spot), with the highest ``contrast - touches`` (:meth:`AppearanceBackend.extend`):
   a lesion's outline is the level set that separates it best from its ring, so a large
   lesion is not cut down to its darkest core by the size prior;
6. mask, ellipse-regularised (:meth:`AppearanceBackend.refine`): the pixel-wise majority of
   three masks, (a) the candidate region, (b) the per-box Otsu threshold's component
   overlapping it (:meth:`AppearanceBackend.refine_otsu`, the previous refinement) and
   (c) the ellipse with the second moments of (b), axes scaled by ``ellipse_scale``;
7. confidence in [0, 1]: the box score (a sigmoid of the candidate's score, :meth:`AppearanceBackend.box_score`)
   times the mask quality (:meth:`AppearanceBackend.mask_quality`): the agreement of the three masks of
   step 6 (their mean pairwise Dice) times the final mask's separation, its contrast with its ring on the
   *unfiltered* image in standard deviations of the field of view, clipped to [0, 1] (a blob that
   smoothing carved out of noise barely differs from its ring before smoothing; a lesion does).
   The pipeline stores it with each pseudo-label.
8. the score of a detection (what ``box_threshold`` applies to and the explorer shows) is the candidate's
   score mapped by :meth:`AppearanceBackend.calibrated_score`, which spreads over [0, 1] (the sigmoid of
   step 7 puts nearly every lesion-like region above 0.9); boxes of the ``top_k`` are made distinct by
   non-maximum suppression (:meth:`AppearanceBackend.detect`).

**Where the defaults come from (no BUSI mask is used).** The score weights are first principles:
every feature is already on a unit scale (contrast in standard deviations of the field of view,
the shape posterior, position and size priors and the border flag in [0, 1]), so each gets weight
1 and none is preferred; the edge feature (about 1-4) gets 1/4 so that it breaks ties
rather than dominating. The priors are anatomy, not fitted: lesions sit near the middle of the
field (Gaussian, sd 0.22 of the width/height), cover a few percent of it (log-normal around 6 %,
sd 1.1 in log), and do not touch its border. ``ellipse_scale`` 1.1 and ``w_edge`` 0.25 were chosen
on the phantom (:mod:`busnb.data.phantom`) and a 30-image development subset of the *labeled*
10 % images of ``splits/busi/seed0``, never on validation or test images. The earlier defaults
(``w_contrast`` 2.23, ``w_position`` 1.1, ``w_size`` 1.16, ``border_penalty`` 1.69) had been fitted on
the 65 BUSI validation masks, which the protocol forbids; they are gone. To fit the weights on
the labeled images of a ratio, use :func:`busnb.appg.tune.fit_on_labeled`
(``busnb pseudo-label ... --fit-on labeled``).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from ..prompts import parse_phrase
from .types import Detection


@dataclass(frozen=True)
class AppearanceParams:
    """Settings of :class:`AppearanceBackend`; all of them enter the pseudo-label cache key.

    ``algorithm`` names the version of the steps in the module docstring, so labels cached by an
    older algorithm are never reused silently when the code changes. ``v2.1``: suppression of step 8 compares
    the padded boxes that :meth:`AppearanceBackend.detect` returns (``v2`` compared the unpadded candidate
    boxes and could return boxes overlapping by IoU up to 0.65); the first box, hence every top-1
    pseudo-label, is the same as ``v2``'s, but ``box_policy="union"`` labels can differ."""

    algorithm: str = "v2.1-extent-vote-conf"
    work_size: int = 256
    median: int = 5
    sigma: float = 2.0
    n_levels: int = 10
    q_low: float = 0.04
    q_high: float = 0.45
    min_area: float = 0.002
    max_area: float = 0.45
    # first-principles weights: every feature is on a unit scale, so all get 1 (module docstring)
    w_contrast: float = 1.0
    w_darkness: float = 0.0
    w_shape: float = 1.0
    w_position: float = 1.0
    w_size: float = 1.0
    border_penalty: float = 1.0
    w_edge: float = 0.25
    edge_sigma: float = 1.5
    extent_overlap: float = 0.9   # step 5: a larger candidate must hold this share of the chosen one
    ellipse_scale: float = 1.1    # step 6: axes of the moment ellipse, chosen on the phantom + dev subset
    top_margin: float = 0.08
    box_pad: float = 0.08
    local_scales: tuple = (12.0, 24.0)
    local_levels: int = 6

    def to_dict(self) -> dict:
        return asdict(self)


def _resize(img: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    h, w = img.shape
    s = long_side / max(h, w)
    if s >= 1:
        return img.astype(np.float32), 1.0
    out = Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    return np.asarray(out, dtype=np.float32), s


def field_of_view(img: np.ndarray) -> np.ndarray:
    """Largest connected region brighter than the black margin, holes filled."""
    sm = ndimage.uniform_filter(img, 9)
    fov = sm > max(8.0, 0.1 * np.percentile(img, 50))
    lab, n = ndimage.label(fov)
    if n == 0:
        return np.ones_like(img, bool)
    largest = np.argmax(np.bincount(lab.ravel())[1:]) + 1
    return ndimage.binary_fill_holes(lab == largest)


def remove_marks(img: np.ndarray) -> np.ndarray:
    """Replace near-saturated thin marks (text, rulers, calipers) by the local median."""
    bright = img >= np.percentile(img, 99.5) * 0.95
    bright &= img > 200
    if not bright.any():
        return img
    thin = bright & ~ndimage.binary_opening(bright, np.ones((5, 5), bool))
    marks = ndimage.binary_dilation(thin, iterations=2)
    med = ndimage.median_filter(img, 9)
    return np.where(marks, med, img)


def _shape_features(region: np.ndarray) -> dict:
    ys, xs = np.nonzero(region)
    area = len(ys)
    cy, cx = ys.mean(), xs.mean()
    cov = np.cov(np.stack([ys - cy, xs - cx])) if area > 2 else np.eye(2)
    ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
    aspect = float(np.sqrt(max(ev[0], 1e-6) / max(ev[1], 1e-6)))
    # solidity via the convex hull of the boundary pixels
    from skimage.morphology import convex_hull_image

    y0, x0 = ys.min(), xs.min()
    crop = region[y0: ys.max() + 1, x0: xs.max() + 1]
    hull = convex_hull_image(crop) if crop.shape[0] > 2 and crop.shape[1] > 2 else crop
    solidity = float(area / max(hull.sum(), 1))
    horizontal = float(abs(np.linalg.eigh(cov)[1][1, -1]))  # |x component| of the major axis
    return {"aspect": aspect, "solidity": solidity, "horizontal": horizontal, "cy": cy, "cx": cx, "area": area}


# What each shape word means for a candidate region: (aspect mean, sd), (solidity mean, sd).
# Solidity is that of the speckle-smoothed candidate, so spiculated borders read ~0.85, not ~0.7.
SHAPE_MODELS = {
    "oval": ((1.9, 0.35), (0.97, 0.02)),
    "round": ((1.05, 0.1), (0.975, 0.02)),
    "lobulated": ((1.4, 0.25), (0.90, 0.035)),
    "irregular": ((1.5, 0.4), (0.84, 0.07)),
}


def shape_match(shape: str | None, f: dict) -> float:
    """P(shape word | region): Gaussian likelihoods of (aspect, solidity) under each shape word,
    normalised over the four words (equal priors); 0.5 when the phrase names no shape."""
    if shape is None or shape not in SHAPE_MODELS:
        return 0.5
    a, s = f["aspect"], f["solidity"]

    def lik(m):
        (am, asd), (sm, ssd) = SHAPE_MODELS[m]
        return np.exp(-0.5 * ((a - am) / asd) ** 2 - 0.5 * ((s - sm) / ssd) ** 2) / (asd * ssd)

    liks = {m: lik(m) for m in SHAPE_MODELS}
    total = sum(liks.values())
    return float(liks[shape] / total) if total > 1e-300 else 0.25


def moment_ellipse(mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The filled ellipse with the centroid and second moments of ``mask`` (semi-axes 2 sqrt(eigenvalue),
    exact for a filled ellipse), its axes multiplied by ``scale``."""
    ys, xs = np.nonzero(mask)
    if len(ys) < 5:
        return mask.copy()
    cy, cx = ys.mean(), xs.mean()
    ev, vec = np.linalg.eigh(np.cov(np.stack([ys - cy, xs - cx])))
    a, b = (2 * scale * np.sqrt(max(e, 0.25)) for e in (ev[1], ev[0]))
    y0, y1 = max(0, int(cy - a - 1)), min(mask.shape[0], int(np.ceil(cy + a + 2)))
    x0, x1 = max(0, int(cx - a - 1)), min(mask.shape[1], int(np.ceil(cx + a + 2)))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.stack([yy - cy, xx - cx], -1)
    out = np.zeros_like(mask, bool)
    out[y0:y1, x0:x1] = ((d @ vec[:, 1]) / a) ** 2 + ((d @ vec[:, 0]) / b) ** 2 <= 1
    return out


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (0 for empty ones)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def majority(masks: list[np.ndarray]) -> np.ndarray:
    """Pixels in more than half of ``masks``, holes filled, the largest component kept."""
    m = np.sum(masks, axis=0) > len(masks) / 2
    lab, n = ndimage.label(m)
    if n > 1:
        m = lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    return ndimage.binary_fill_holes(m)


# :meth:`AppearanceBackend.calibrated_score`: centre fitted on a phantom the notebooks never use (seed 1),
# slope from first principles (one unit of evidence per e-fold of the odds)
CALIB_CENTER = 4.8
CALIB_SCALE = 1.0


class AppearanceBackend:
    """``detect(image, phrase)`` -> scored boxes; ``segment(image, boxes)`` -> masks. No weights."""

    name = "appearance"

    def __init__(self, params: AppearanceParams | None = None, **overrides):
        self.params = params or AppearanceParams(**overrides)
        self._last = None  # (image hash, preprocessing) of the last image seen
        self._bases = None  # (image hash, {polarity: phrase-independent candidates}) of the last image seen

    def __getstate__(self):  # worker processes get the settings, not the memo of the last image
        return {**self.__dict__, "_last": None, "_bases": None}

    def id(self) -> dict:
        return {"backend": self.name, **self.params.to_dict()}

    # -- shared preprocessing -------------------------------------------------
    def _prep(self, image: np.ndarray):
        """Steps 1-2 for one image, memoised for the last image: ``detect`` and ``segment`` share it."""
        key = self._prep_key(image)
        if self._last is None or self._last[0] != key:
            self._last = (key, self._compute_prep(image))
        return self._last[1]

    @staticmethod
    def _prep_key(image: np.ndarray) -> str:
        return hashlib.sha1(str(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()

    def _compute_prep(self, image: np.ndarray):
        p = self.params
        if image.ndim == 3:
            image = np.asarray(Image.fromarray(image).convert("L"))
        small, s = _resize(image, p.work_size)
        fov = field_of_view(small)
        clean = remove_marks(small)
        sm = ndimage.gaussian_filter(ndimage.median_filter(clean, p.median), p.sigma)
        grad = ndimage.gaussian_gradient_magnitude(sm, p.edge_sigma)
        edge = grad / (float(np.median(grad[fov])) + 1e-6 if fov.any() else 1.0)
        return small, sm, fov, s, edge

    def _base_candidates(self, image: np.ndarray, pol: int) -> list[dict]:
        """Step 3 and the phrase-independent features of step 4 for one polarity (1: darker, -1: brighter than
        the surroundings), in the order they are found. Memoised for the last image (any number of phrases
        then costs one search per polarity, e.g. the prompt-family comparison); the regions are never modified
        by the later steps, so sharing them between phrases gives the same boxes and masks as recomputing."""
        key = self._prep_key(image)
        if self._bases is None or self._bases[0] != key:
            self._bases = (key, {})
        memo = self._bases[1]
        if pol in memo:
            return memo[pol]
        p = self.params
        _, sm, fov, s, edge = self._prep(image)
        h, w = sm.shape
        vals = sm[fov]
        mu, sd = float(vals.mean()), float(vals.std())
        qs = np.linspace(p.q_low, p.q_high, p.n_levels)
        eroded_fov = ndimage.binary_erosion(fov, iterations=3)
        out, seen = [], set()
        maps = [(sm * pol, np.quantile(vals * pol, qs))]
        for scale in p.local_scales:  # darker than the neighbourhood at this scale
            bg = ndimage.gaussian_filter(np.where(fov, sm, mu), scale)
            local = (sm - bg) * pol
            maps.append((local, np.quantile(local[fov], np.linspace(0.03, 0.3, p.local_levels))))
        for img, thresholds in maps:
            for t in thresholds:
                bw = ndimage.binary_opening((img <= t) & fov, iterations=2)
                lab, n = ndimage.label(bw)
                if n == 0:
                    continue
                areas = np.bincount(lab.ravel())[1:]
                objs = ndimage.find_objects(lab)
                for k in np.nonzero((areas >= p.min_area * h * w) & (areas <= p.max_area * h * w))[0]:
                    region = np.zeros((h, w), bool)  # holes filled in the component's bounding box (same result)
                    region[objs[k]] = ndimage.binary_fill_holes(lab[objs[k]] == k + 1)
                    rkey = (int(region.sum()) // 16, int(np.argmax(region)))
                    if rkey in seen:
                        continue
                    seen.add(rkey)
                    out.append(self._features(region, sm, fov, eroded_fov, mu, sd, pol, h, w, edge))
        memo[pol] = out
        return out

    def candidates(self, image: np.ndarray, phrase: str) -> list[dict]:
        """All scored candidate regions (work resolution), best first.

        ``phrase`` may hold several phrases separated by '.' ("dark oval. dark round."): regions are
        found once per polarity (:meth:`_base_candidates`) and each is scored under every phrase; it keeps
        its best phrase."""
        phrases = [q.strip() for q in phrase.split(".") if q.strip()] or [phrase]
        apps = {q: parse_phrase(q) for q in phrases}
        _, sm, fov, s, edge = self._prep(image)
        vals = sm[fov]
        if vals.size == 0 or vals.std() < 1e-3:
            return []
        polarities = sorted({pol for a in apps.values() for pol in {"dark": [1], "bright": [-1]}.get(a.intensity, [1, -1])},
                            reverse=True)
        out = []
        for pol in polarities:
            for base in self._base_candidates(image, pol):
                best = None
                for q, app in apps.items():
                    if app.intensity is not None and {"dark": 1, "bright": -1}[app.intensity] != pol:
                        continue
                    feats = self._phrase_features(base, app)
                    c = {**base, "features": feats, "score": self.score(feats), "phrase": q,
                         "polarity": pol, **feats}
                    if best is None or c["score"] > best["score"]:
                        best = c
                out.append(best)
        out.sort(key=lambda c: -c["score"])
        for c in out:
            c["scale"] = s
        return out

    def _features(self, region, sm, fov, eroded_fov, mu, sd, pol, h, w, edge=None) -> dict:
        """Phrase-independent features of one candidate region."""
        p = self.params
        f = _shape_features(region)
        r = max(3, int(0.25 * np.sqrt(f["area"])))
        ys, xs = np.nonzero(region)
        y0, y1 = max(0, ys.min() - r - 1), min(h, ys.max() + r + 2)
        x0, x1 = max(0, xs.min() - r - 1), min(w, xs.max() + r + 2)
        reg = region[y0:y1, x0:x1]
        ring = ndimage.binary_dilation(reg, iterations=r) & ~reg & fov[y0:y1, x0:x1]
        inside = sm[y0:y1, x0:x1][reg].mean()
        around = sm[y0:y1, x0:x1][ring].mean() if ring.any() else mu
        cy, cx = f["cy"] / h, f["cx"] / w
        frac = f["area"] / float(fov.sum())
        outline = reg & ~ndimage.binary_erosion(reg)
        edge_strength = float(edge[y0:y1, x0:x1][outline].mean()) if edge is not None and outline.any() else 0.0
        return {"region": region, "edge": edge_strength, "box": (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                "signed_contrast": float(pol * (around - inside) / (sd + 1e-6)),
                "signed_darkness": float(pol * (mu - inside) / (sd + 1e-6)),
                "position": float(np.exp(-((cx - 0.5) ** 2) / (2 * 0.22 ** 2) - ((cy - 0.45) ** 2) / (2 * 0.22 ** 2))),
                "size": float(np.exp(-0.5 * ((np.log(frac) - np.log(0.06)) / 1.1) ** 2)),
                "touches": float((region & ~eroded_fov).sum() / max(1, f["area"]) > 0.02) + float(cy < p.top_margin),
                "geometry": f, "aspect": f["aspect"], "solidity": f["solidity"]}

    @staticmethod
    def _phrase_features(base: dict, app) -> dict:
        """The score's features under one phrase: contrast sign from its intensity word, shape from its shape word."""
        c, d = base["signed_contrast"], base["signed_darkness"]
        if app.intensity is None:  # no intensity word: either polarity counts
            c, d = abs(c), abs(d)
        return {"contrast": c, "darkness": d, "shape": shape_match(app.shape, base["geometry"]),
                "position": base["position"], "size": base["size"], "touches": base["touches"],
                "edge": base.get("edge", 0.0)}

    def score(self, feats: dict) -> float:
        """Candidate score: the weighted sum of its features (step 4 in the module docstring)."""
        p = self.params
        return float(p.w_contrast * feats["contrast"] + p.w_darkness * feats["darkness"] + p.w_shape * feats["shape"]
                     + p.w_position * feats["position"] + p.w_size * feats["size"] + p.w_edge * feats.get("edge", 0.0)
                     - p.border_penalty * feats["touches"])

    # -- the two stages the pipeline calls ------------------------------------
    def extend(self, cands: list[dict], i: int) -> dict:
        """Step 5: the candidate that holds >= ``extent_overlap`` of ``cands[i]`` (itself included) with the
        highest ``contrast - touches``: where the lesion is comes from the score, how far it reaches from
        the level set that separates it best from its ring. Returns that candidate with ``phrase`` and
        ``score`` of ``cands[i]`` (the phrase chose the spot)."""
        c = cands[i]
        region, area = c["region"], c["geometry"]["area"]

        def key(d):
            return d["contrast"] - d["touches"]

        best = c
        for d in cands:
            if d is c or d["polarity"] != c["polarity"] or d["geometry"]["area"] < area or key(d) <= key(best):
                continue
            if (d["region"] & region).sum() >= self.params.extent_overlap * area:
                best = d
        return c if best is c else {**best, "phrase": c["phrase"], "score": c["score"], "extended_from": c["box"]}

    def detect(self, image: np.ndarray, phrase: str, box_threshold: float = 0.0, top_k: int = 5,
               nms_iou: float = 0.5) -> list[Detection]:
        """Boxes in **pixel xyxy of the input image**, best first, with a calibrated score in (0, 1)
        (:meth:`calibrated_score`; ``box_threshold`` applies to it, as Grounding DINO's box threshold applies
        to its scores).

        Each of the best candidates is extended (step 5), then greedy non-maximum suppression keeps a box only
        if its IoU with every box kept before it is below ``nms_iou``: the nested iso-intensity regions of one
        lesion (step 3) would otherwise fill the ``top_k`` with near-copies of one box. The first box does not
        depend on ``nms_iou``, so top-1 pseudo-labels are the same with or without it. Each detection keeps the
        uncalibrated :meth:`box_score` in ``extra["box_score"]`` (the pipeline's per-image confidence is built
        from it, :func:`busnb.appg.pipeline.label_image`)."""
        cands = self.candidates(image, phrase)
        dets, kept = [], []
        for i in range(len(cands)):
            if len(dets) >= top_k:
                break
            c = self.extend(cands, i)
            padded = self.padded_box(c["box"], c["region"].shape)  # the box returned: suppress on it
            if any(box_iou(padded, k) >= nms_iou for k in kept):
                continue
            kept.append(padded)
            sc = self.calibrated_score(c["score"])
            if sc < box_threshold:
                continue
            s = c["scale"]
            box = [v / s for v in padded]
            dets.append(Detection(box=tuple(float(b) for b in box), score=sc, phrase=c["phrase"],
                                  extra={"seed": c, "raw_score": float(c["score"]),
                                         "box_score": self.box_score(c["score"])}))
        return dets

    @staticmethod
    def box_score(score: float) -> float:
        """A candidate's score mapped to (0, 1): 0.5 at 2.5, what a region one standard deviation darker than
        its ring, with middling shape, position and size priors (0.5 each) and a clear outline reaches.
        Uncalibrated: almost every lesion-like region scores above 0.9, so it is no use as a threshold
        (:meth:`calibrated_score` is); the pipeline's confidence (step 7) keeps it so cached pseudo-labels
        stay valid."""
        return float(1 / (1 + np.exp(-(score - 2.5))))

    @staticmethod
    def calibrated_score(score: float) -> float:
        """A candidate's raw score (step 4) mapped to (0, 1) so that a box threshold means something: the score
        :meth:`detect` returns and ``box_threshold`` applies to. A logistic function, increasing in the raw score:
        ``1 / (1 + exp(-(score - CALIB_CENTER) / CALIB_SCALE))``. Fixed without any BUSI mask:

        * ``CALIB_CENTER`` = 4.8: where a box is as likely to hold a lesion as not. A logistic regression of "the
          box has IoU >= 0.5 with a lesion's box" on the raw score (:func:`busnb.appg.tune.fit_score_calibration`)
          over the top-5 non-suppressed boxes of the 11 prompt-family phrases on a phantom the notebooks never
          use (``PhantomConfig(seed=1)``, 48 images, 2630 boxes) puts it at 4.77.
        * ``CALIB_SCALE`` = 1.0: first principles, not the fit. Every feature of the raw score is on a unit scale,
          so one unit of evidence (one standard deviation of contrast, a shape word fully matched) multiplies the
          odds by e. The phantom's own fit is far steeper (0.245): its lesions separate from everything else more
          cleanly than real scans do, and that slope would make every score 0 or 1, an overconfident map for
          real images and a box threshold that does nothing between 0.05 and 0.95.

        On that phantom, boxes that hit a lesion score 0.53 / 0.73 / 0.89 (10th / 50th / 90th percentile) and boxes
        that miss 0.04 / 0.12 / 0.31. Monotone, so it never changes which box is best: top-1 pseudo-labels
        are the same as with the uncalibrated :meth:`box_score`."""
        return float(1 / (1 + np.exp(-(score - CALIB_CENTER) / CALIB_SCALE)))

    def refine_otsu(self, sm: np.ndarray, fov: np.ndarray, box, seed: np.ndarray | None, polarity: int) -> np.ndarray:
        """Otsu threshold inside ``box`` (work resolution), the component overlapping ``seed`` (the refinement
        before ``v2``; one of the three votes of :meth:`refine`)."""
        from skimage.filters import threshold_otsu

        x0, y0, x1, y1 = box
        m = np.zeros_like(sm, bool)
        crop = sm[y0:y1, x0:x1] * polarity
        if crop.size < 9 or crop.std() < 1e-6:
            return seed.copy() if seed is not None else m
        bw = (crop <= threshold_otsu(crop)) & fov[y0:y1, x0:x1]
        bw = ndimage.binary_opening(bw, iterations=1)
        lab, n = ndimage.label(bw)
        k = 0
        if n and seed is not None:
            overlap = np.bincount(lab[seed[y0:y1, x0:x1]].ravel(), minlength=n + 1)[1:]
            k = int(np.argmax(overlap)) + 1 if overlap.max() > 0 else 0
        elif n:
            k = int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
        if k:
            m[y0:y1, x0:x1] = ndimage.binary_fill_holes(ndimage.binary_closing(lab == k, iterations=2))
        if seed is not None and m.sum() < 0.3 * seed.sum():
            m = seed.copy()
        return m

    def refine_votes(self, sm: np.ndarray, fov: np.ndarray, box, seed: np.ndarray | None,
                     polarity: int) -> list[np.ndarray]:
        """The three masks step 6 votes over: the candidate, its Otsu refinement, the moment ellipse of that."""
        otsu = self.refine_otsu(sm, fov, box, seed, polarity)
        return [seed if seed is not None else otsu, otsu, moment_ellipse(otsu, self.params.ellipse_scale) & fov]

    def refine(self, sm: np.ndarray, fov: np.ndarray, box, seed: np.ndarray | None, polarity: int) -> np.ndarray:
        """Step 6: pixel-wise majority of :meth:`refine_votes` (ellipse-regularised), holes filled, its largest
        component kept."""
        return majority(self.refine_votes(sm, fov, box, seed, polarity))

    @staticmethod
    def agreement(votes: list[np.ndarray]) -> float:
        """The mean pairwise Dice of the three masks of step 6, in [0, 1]. A clear, convex lesion makes all
        three agree; a ragged dark band does not."""
        pairs = [(a, b) for i, a in enumerate(votes) for b in votes[i + 1:]]
        return float(np.mean([2 * (a & b).sum() / max(1, a.sum() + b.sum()) for a, b in pairs])) if pairs else 0.0

    @staticmethod
    def separation(raw: np.ndarray, fov: np.ndarray, mask: np.ndarray, polarity: int | None) -> float:
        """Contrast of ``mask`` with its ring on the unfiltered work image ``raw``, in standard deviations of the
        field of view, in the phrase's polarity (either, for a phrase without intensity word), clipped to [0, 1]:
        one standard deviation darker (brighter) than the surroundings counts as fully separated."""
        if not mask.any():
            return 0.0
        r = max(3, int(0.25 * np.sqrt(mask.sum())))
        ys, xs = np.nonzero(mask)
        y0, y1 = max(0, ys.min() - r - 1), min(mask.shape[0], ys.max() + r + 2)
        x0, x1 = max(0, xs.min() - r - 1), min(mask.shape[1], xs.max() + r + 2)
        m = mask[y0:y1, x0:x1]
        ring = ndimage.binary_dilation(m, iterations=r) & ~m & fov[y0:y1, x0:x1]
        if not ring.any():
            return 0.0
        crop = raw[y0:y1, x0:x1]
        c = (crop[ring].mean() - crop[m].mean()) / (float(raw[fov].std()) + 1e-6)
        c = abs(c) if polarity is None else polarity * c
        return float(np.clip(c, 0.0, 1.0))

    def mask_quality(self, raw, fov, votes: list[np.ndarray], mask: np.ndarray, polarity: int | None) -> float:
        """Step 7's mask quality: :meth:`agreement` times :meth:`separation`, in [0, 1]. The pipeline's per-image
        confidence is the box score times this (:func:`busnb.appg.pipeline.confidence`)."""
        return self.agreement(votes) * self.separation(raw, fov, mask, polarity)

    def padded_box(self, box, shape) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box
        pw, ph = self.params.box_pad * (x1 - x0), self.params.box_pad * (y1 - y0)
        return (max(0, int(x0 - pw)), max(0, int(y0 - ph)), min(shape[1], int(np.ceil(x1 + pw))),
                min(shape[0], int(np.ceil(y1 + ph))))

    def segment(self, image: np.ndarray, detections: list[Detection]) -> list[tuple[np.ndarray, float]]:
        """One mask (input resolution) and its quality (:meth:`mask_quality`, step 7) per detection."""
        raw, sm, fov, s, _ = self._prep(image)
        H, W = image.shape[:2]
        out = []
        for d in detections:
            seed = d.extra.get("seed", {}).get("region") if d.extra else None
            x0, y0, x1, y1 = [int(round(v * s)) for v in d.box]
            box = (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))
            intensity = parse_phrase(d.phrase).intensity
            pol = (d.extra["seed"]["polarity"] if d.extra and "seed" in d.extra
                   else -1 if intensity == "bright" else 1)  # the candidate's polarity (either, with no intensity word)
            votes = self.refine_votes(sm, fov, box, seed, pol)
            m = majority(votes)
            full = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((W, H), Image.BILINEAR)) > 127
            out.append((full, self.mask_quality(raw, fov, votes, m, None if intensity is None else pol)))
        return out
