"""Run an APPG backend over images: boxes -> masks -> area filter -> resumable cache.

Cache layout (one folder per dataset x backend x prompt x thresholds x weights)::

    <cache>/pseudo/<dataset>/<backend>-<key>/
        config.json          everything the key was made from
        masks/<id>.png       the mask before the area filter (so the filter's effect can be studied)
        records/<id>.json    prompt, box, score, area, kept, backend, seconds

Each file is written atomically; a record is written last, so an interrupted run resumes
at the first image without a record and never recomputes a finished one.
The area filter (APPG): a mask whose foreground fraction is <= ``min_fg`` (1 %) is dropped.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path, write_json
from ..data import load_pair, read_image
from ..paths import cache_dir
from ..prompts import PAPER_PROMPTS, to_gdino_text

BOX_POLICIES = ("top1", "union")


@dataclass(frozen=True)
class PseudoLabelConfig:
    prompt: str = ". ".join(PAPER_PROMPTS)
    box_policy: str = "top1"          # top1: best box; union: all boxes above threshold, masks united
    max_boxes: int = 3
    min_fg: float = 0.01              # drop masks with foreground fraction <= min_fg
    box_threshold: float | None = None  # None: the backend's default

    def __post_init__(self):
        if self.box_policy not in BOX_POLICIES:
            raise ValueError(f"box_policy must be one of {BOX_POLICIES}")


def dataset_cache_id(name: str, samples=None, fingerprint: dict | None = None) -> str:
    """The cache's name for a dataset copy: its split name plus its content fingerprint (given, or computed
    from ``samples``), so two copies that share a name (a resized BUSI, two folders called my_data) never
    share pseudo-labels."""
    if fingerprint is None:
        from ..data.fingerprint import dataset_fingerprint

        fingerprint = dataset_fingerprint(samples)
    return f"{name}-{fingerprint['content']}"


def cache_key(dataset: str, backend, cfg: PseudoLabelConfig) -> tuple[str, dict]:
    spec = {"dataset": dataset, **asdict(cfg), "prompt": to_gdino_text(cfg.prompt), "backend": backend.id()}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return key, spec


def label_image(backend, image: np.ndarray, cfg: PseudoLabelConfig) -> tuple[np.ndarray, dict]:
    """Pseudo-label of one image: (mask before the area filter, record)."""
    if image.size == 0 or image.max() == image.min():
        return np.zeros(image.shape[:2], bool), {"box": None, "score": 0.0, "n_boxes": 0, "phrase": None,
                                                 "confidence": 0.0, "reason": "blank image"}
    kw = {} if cfg.box_threshold is None else {"box_threshold": cfg.box_threshold}
    dets = backend.detect(image, cfg.prompt, top_k=1 if cfg.box_policy == "top1" else cfg.max_boxes, **kw)
    if not dets:
        return np.zeros(image.shape[:2], bool), {"box": None, "score": 0.0, "n_boxes": 0, "phrase": None,
                                                 "confidence": 0.0, "reason": "no box above threshold"}
    masks = backend.segment(image, dets)
    mask = np.logical_or.reduce([m for m, _ in masks])
    # the box score behind the confidence: a backend may keep an uncalibrated one beside its display score
    # (appearance: ``extra["box_score"]``, so records and confidences do not depend on its score calibration)
    score = float((dets[0].extra or {}).get("box_score", dets[0].score))
    return mask, {"box": [round(v, 1) for v in dets[0].box], "boxes": [[round(v, 1) for v in d.box] for d in dets],
                  "score": score, "mask_score": float(masks[0][1]), "n_boxes": len(dets),
                  "phrase": dets[0].phrase, "confidence": confidence(score, masks[0][1])}


def confidence(box_score: float, mask_score: float) -> float:
    """Per-image confidence of a pseudo-label in [0, 1]: the best box's score times its mask's quality score
    (``appearance``: agreement of its three refinement masks; ``gdino_sam``: SAM's predicted IoU). 0 for an image
    with no box. Methods may weight or drop pseudo-labels by it (:meth:`PseudoLabels.confidence`)."""
    return float(np.clip(box_score, 0, 1) * np.clip(mask_score, 0, 1))


class PseudoLabels:
    """A cache folder of pseudo-labels; ``mask(id)``, ``records``, ``kept_ids``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.config = json.loads((self.folder / "config.json").read_text())

    @property
    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.folder / "records").glob("*.json"))]

    def kept_ids(self) -> list[str]:
        return [r["id"] for r in self.records if r["kept"]]

    def confidence(self, sid: str) -> float:
        """The per-image confidence stored with the pseudo-label of ``sid`` (:func:`confidence`), in [0, 1].
        Caches written before confidences were stored raise a clear error instead of guessing."""
        rec = json.loads((self.folder / "records" / f"{_fname(sid)}.json").read_text())
        if "confidence" not in rec:
            raise KeyError(f"{self.folder}: the record of {sid!r} has no confidence (written by an older version); "
                           f"Fix: delete {self.folder} and run `busnb pseudo-label` again.")
        return float(rec["confidence"])

    def mask(self, sid: str) -> np.ndarray:
        return np.asarray(Image.open(self.folder / "masks" / f"{_fname(sid)}.png")) > 0


def _fname(sid: str) -> str:
    return sid.replace("/", "__")


def _label_and_write(backend, cfg: PseudoLabelConfig, s, folder: Path, key: str) -> str:
    """Pseudo-label one sample and write its mask, then its record (the record last: it marks it done)."""
    t0 = time.time()
    image = read_image(s.image)
    mask, rec = label_image(backend, image, cfg)
    area = float(mask.mean())
    rec.update({"id": s.id, "class": s.cls, "prompt": to_gdino_text(cfg.prompt), "area": area,
                "kept": bool(area > cfg.min_fg), "backend": backend.name, "key": key,
                "seconds": round(time.time() - t0, 3)})
    with atomic_path(folder / "masks" / f"{_fname(s.id)}.png") as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
    write_json(folder / "records" / f"{_fname(s.id)}.json", rec)
    return s.id


def _open_cache(dataset: str, backend, cfg: PseudoLabelConfig, root=None) -> tuple[Path, str]:
    """The cache folder of (dataset, backend, cfg), created with its ``config.json``; returns ``(folder, key)``."""
    key, spec = cache_key(dataset, backend, cfg)
    folder = Path(root or cache_dir() / "pseudo") / dataset / f"{backend.name}-{key}"
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    (folder / "records").mkdir(exist_ok=True)
    write_json(folder / "config.json", spec)
    return folder, key


_WORKER = {}


def _init_worker(backend, cfg, folder, key):
    _WORKER.update(backend=backend, cfg=cfg, folder=folder, key=key)


def _work(s):
    w = _WORKER
    return _label_and_write(w["backend"], w["cfg"], s, w["folder"], w["key"])


def generate(samples, backend, cfg: PseudoLabelConfig = PseudoLabelConfig(), dataset: str = "dataset",
             root: str | Path | None = None, progress: bool = True, limit: int | None = None,
             workers: int = 1) -> PseudoLabels:
    """Pseudo-label ``samples`` with ``backend`` into the cache (resuming a previous run).

    ``workers`` > 1 labels images in that many processes (CPU backends such as ``appearance``, whose object is
    picklable; the outputs are the same files, each written atomically). ``workers=0``: one per CPU core."""
    import os

    from ..progress import tqdm

    folder, key = _open_cache(dataset, backend, cfg, root)
    todo = [s for s in samples if not (folder / "records" / f"{_fname(s.id)}.json").is_file()][:limit]
    bar = tqdm(total=len(samples) if limit is None else len(todo), desc=f"pseudo-labels ({backend.name})",
               disable=not progress or not todo, initial=len(samples) - len(todo) if limit is None else 0)
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(backend, cfg, folder, key)) as ex:
            for _ in ex.map(_work, todo, chunksize=4):
                bar.update(1)
    else:
        for s in todo:
            _label_and_write(backend, cfg, s, folder, key)
            bar.update(1)
    bar.close()
    return PseudoLabels(folder)


def quality_table(labels: PseudoLabels, samples):
    """Per image: kept, area, Dice / IoU of the (unfiltered) pseudo-label with the ground truth, box hit."""
    import pandas as pd

    from ..metrics import dice_iou

    by_id = {s.id: s for s in samples}
    rows = []
    for r in labels.records:
        if r["id"] not in by_id:
            continue
        _, gt = load_pair(by_id[r["id"]])
        d, j = dice_iou(labels.mask(r["id"]), gt)
        hit = False
        if r["box"] is not None and gt.any():
            ys, xs = np.nonzero(gt)
            x0, y0, x1, y1 = r["box"]
            hit = bool(x0 <= xs.mean() <= x1 and y0 <= ys.mean() <= y1)
        rows.append({"id": r["id"], "class": r["class"], "kept": r["kept"], "area": r["area"],
                     "gt_area": float(gt.mean()), "dice": d, "iou": j, "box_hit": hit, "seconds": r["seconds"],
                     "confidence": r.get("confidence", np.nan)})
    return pd.DataFrame(rows)


def quality_summary(df) -> "pd.DataFrame":
    """Per class and overall: images, keep rate, box hit rate, Dice of all masks and of kept masks, and Dice of
    all masks split by whether the box holds the lesion's centre (``dice_box_hit`` / ``dice_box_miss``: finding the
    lesion and outlining it, the two parts of ``dice_all``)."""
    import pandas as pd

    def mean(x):  # NaN, not 0, for a group with no such image
        return x.mean() if len(x) else np.nan

    def agg(g):
        kept = g[g["kept"]]
        hit = g["box_hit"].astype(bool)
        return pd.Series({"images": len(g), "keep_rate": g["kept"].mean(), "box_hit_rate": g["box_hit"].mean(),
                          "dice_all": g["dice"].mean(), "dice_kept": mean(kept["dice"]),
                          "dice_box_hit": mean(g["dice"][hit]), "dice_box_miss": mean(g["dice"][~hit]),
                          "iou_kept": mean(kept["iou"]),
                          "confidence": g["confidence"].mean(), "seconds_per_image": g["seconds"].mean()})

    parts = {c: agg(g) for c, g in df.groupby("class")}
    parts["all"] = agg(df)
    return pd.DataFrame(parts).T


def area_filter_report(df, min_fg: float = 0.01) -> dict:
    """What the area filter does on data with ground truth: how many it drops and how good they were."""
    dropped = df[~df["kept"]]
    return {"images": len(df), "dropped": int(len(dropped)),
            "dropped_with_small_true_lesion": int((dropped["gt_area"] <= min_fg).sum()),
            "dropped_mean_dice": float(dropped["dice"].mean()) if len(dropped) else float("nan"),
            "true_lesions_at_most_min_fg": int((df["gt_area"] <= min_fg).sum()),
            "kept_mean_dice": float(df[df["kept"]]["dice"].mean()) if df["kept"].any() else float("nan")}


AREA_FILTER_ROWS = {
    "images": "images",
    "dropped": "pseudo-labels dropped (area <= min_fg)",
    "dropped_with_small_true_lesion": "  of those, true lesion also <= min_fg",
    "dropped_mean_dice": "  their mean Dice",
    "true_lesions_at_most_min_fg": "true lesions <= min_fg (all images)",
    "kept_mean_dice": "mean Dice of kept pseudo-labels",
}


def area_filter_table(report: dict, min_fg: float = 0.01):
    """:func:`area_filter_report` as a one-column table with readable row names (counts as integers, Dice with 3
    decimals, '-' where nothing was dropped)."""
    import pandas as pd

    def fmt(k, v):
        if k.endswith("dice"):
            return "-" if v != v else f"{v:.3f}"
        return f"{int(v)}"

    rows = {AREA_FILTER_ROWS[k].replace("min_fg", f"{min_fg * 100:g} %"): fmt(k, v) for k, v in report.items()}
    return pd.DataFrame({"area filter": pd.Series(rows)})


def area_filter_note(report: dict, min_fg: float = 0.01) -> str:
    """One sentence on what the filter did here, saying so when the data cannot show its cost (no true lesion
    at or below ``min_fg``, as on the phantom, whose lesions all cover several % of the image)."""
    pct = f"{min_fg * 100:g} %"
    if report["dropped"] == 0 and report["true_lesions_at_most_min_fg"] == 0:
        return (f"The filter dropped nothing here: no pseudo-label and no true lesion of these {report['images']} "
                f"images is at or below {pct} of its image, so this data cannot show the filter's cost "
                f"(dropping correct small lesions)." + (" BUSI can: 61 of its 647 lesion masks are <= 1 %."
                                                         if abs(min_fg - 0.01) < 1e-9 else ""))
    return (f"The filter dropped {report['dropped']} of {report['images']} pseudo-labels; "
            f"{report['dropped_with_small_true_lesion']} of them belong to a true lesion that is itself <= {pct} "
            f"(a correct small lesion lost), and {report['true_lesions_at_most_min_fg']} true lesions of these images "
            f"are <= {pct} in all.")


def compare_prompts(samples, backend, prompts: dict[str, tuple[str, ...]], dataset: str = "dataset",
                    cfg: PseudoLabelConfig = PseudoLabelConfig(), progress: bool = True, root=None):
    """One row per prompt: family, prompt, keep rate, box hit rate, Dice (all and kept) and ``dice_sem``, the
    standard error of ``dice_all`` over the images (``std / sqrt(n)``: differences smaller than about twice it are
    not resolved by this many images).

    Each prompt's pseudo-labels go to the same cache folder :func:`generate` would use (so ``busnb pseudo-label``
    and this comparison share them, and a rerun recomputes nothing). Images are the outer loop: a backend that
    memoises its work per image (``appearance`` searches candidate regions once per image and polarity, then
    scores them under each phrase) does the phrase-independent part once for all prompts. One progress bar counts
    (image, prompt) pairs."""
    import pandas as pd
    from dataclasses import replace

    from ..progress import tqdm

    pairs = [(family, phrase) for family, phrases in prompts.items() for phrase in phrases]
    cfgs = {phrase: replace(cfg, prompt=phrase) for _, phrase in pairs}
    caches = {phrase: _open_cache(dataset, backend, c, root) for phrase, c in cfgs.items()}
    with tqdm(total=len(samples) * len(pairs), desc=f"prompt families ({backend.name})", disable=not progress) as bar:
        for s in samples:
            for _, phrase in pairs:
                folder, key = caches[phrase]
                if not (folder / "records" / f"{_fname(s.id)}.json").is_file():
                    _label_and_write(backend, cfgs[phrase], s, folder, key)
                bar.update(1)
    rows = []
    for family, phrase in pairs:
        df = quality_table(PseudoLabels(caches[phrase][0]), samples)
        s = quality_summary(df).loc["all"]
        sem = float(df["dice"].std(ddof=1) / np.sqrt(len(df))) if len(df) > 1 else float("nan")
        rows.append({"family": family, "prompt": phrase, **s.to_dict(), "dice_sem": sem})
    return pd.DataFrame(rows)


def family_summary(df):
    """Per family of :func:`compare_prompts`'s table: its prompts' mean ``dice_all``, lowest and highest, the mean
    standard error of a prompt's Dice (``dice_sem``), and the gap to the best family's mean in units of that
    standard error (``gap_in_sem``: below about 2, this many images do not resolve the difference)."""
    import pandas as pd

    g = df.groupby("family", sort=False)
    out = pd.DataFrame({"prompts": g.size(), "mean_dice": g["dice_all"].mean(), "min_dice": g["dice_all"].min(),
                        "max_dice": g["dice_all"].max(), "dice_sem": g["dice_sem"].mean()})
    out["gap_in_sem"] = (out["mean_dice"].max() - out["mean_dice"]) / out["dice_sem"]
    return out


def backend_from_name(name: str, **kw):
    """``appearance`` (no weights) or ``gdino_sam`` (kw: gdino, sam, box_threshold, ...)."""
    if name == "appearance":
        from .appearance import AppearanceBackend

        return AppearanceBackend(**kw)
    if name == "gdino_sam":
        from .gdino_sam import GDinoSamBackend

        return GDinoSamBackend(**kw)
    raise ValueError(f"unknown backend {name!r}; choose 'appearance' or 'gdino_sam'")
