"""What every notebook does first: resolve the profile, the run folder and the figure folder."""
from __future__ import annotations

from pathlib import Path

from .config import Profile, get_profile
from .paths import runs_dir


def context(profile: str = "smoke", run_dir: str | Path = "", **overrides) -> tuple[Profile, Path, Path]:
    """``(profile, run_dir, fig_dir)``; an empty ``run_dir`` means ``runs/interactive-<profile>``. Sets
    matplotlib's figure resolution and font size for the notebooks."""
    import matplotlib

    matplotlib.rcParams.update({"figure.dpi": 90, "font.size": 9})
    prof = get_profile(profile, **overrides)
    rd = Path(run_dir) if run_dir else runs_dir() / f"interactive-{profile}"
    figs = rd / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    return prof, rd, figs


def replace_stale(run_dir: str | Path = "") -> bool:
    """``force`` for a notebook's ``run_experiment``: True for its own scratch folder (``run_dir`` empty:
    ``runs/interactive-<profile>``), where a run left by older code or other settings is retrained in place
    instead of stopping the notebook with a RunConflict (a finished run of the same identity is still reused);
    False for a run folder it was given (``busnb run``), which is never overwritten."""
    return not run_dir


def trained_method(prof, parts: dict, run_dir: Path, variant: str, ratio: float, seed: int, force: bool = False):
    """The run ``run_dir/train/<run name>`` of ``variant`` on ``parts``, trained now or reused when a finished run
    of the same identity is there (notebooks 03 and 04 share one), and its method with the selected weights.
    Returns (run folder, metrics, method)."""
    from .experiment import load_trained, run_experiment, run_name

    out = Path(run_dir) / "train" / run_name(variant, parts["split_name"], ratio, seed)
    result = run_experiment(prof, variant, parts["dataset"], ratio, seed, out, parts=parts, force=force)
    return out, result, load_trained(out, prof, variant)


SIZE_NOTES = {
    "smoke": "profile smoke: 18 optimiser steps on a handful of 64-px phantom images. It checks that the code runs; "
             "its numbers and maps mean nothing (the networks have barely left their random start). Use "
             "profile='demo' (under a minute on one core) to see the method work.",
    "demo": "profile demo: a handful of labeled 64-px phantom images (4 at 2.5 %), 100 optimiser steps per "
            "network, 11 test images and one seed. Enough to see each part of the method work; not enough to rank "
            "methods: differences of a few Dice points here are within the spread between seeds and images, and "
            "none of it says anything about real ultrasound (use profile cpu or gpu on BUSI for that).",
    "smoke3d": "profile smoke3d: a few steps on tiny 3D phantom volumes. It checks that the code runs; its numbers "
               "mean nothing.",
}


def size_note(profile) -> str:
    """What the numbers of a run of this profile (a Profile or its name) can and cannot show, or '' for the
    full-size profiles; notebooks print it beside their tables."""
    name = getattr(profile, "name", profile)
    return SIZE_NOTES.get(name, "")


def maybe_load(name: str, root=None, **kw):
    """Load a published dataset, or print how to get it and return ``None`` (notebooks only)."""
    from .data import DataError, load_dataset

    try:
        return load_dataset(name, root=root, **kw)
    except DataError as e:
        print(f"[{name} not shown] {e}")
        return None


def in_repo(path: str | Path) -> Path:
    """``path`` as given when absolute or when it exists from here; else relative to the checkout (so a notebook's
    ``results/...`` parameter works from ``notebooks/`` and from the repo root alike)."""
    from .paths import repo_root

    p = Path(path)
    return p if p.is_absolute() or p.exists() else repo_root() / p


def check_params(**params) -> None:
    """Validate a notebook's parameters before anything is loaded (the first cell after ``parameters``).

    Known names are checked for their value (profile, method, dataset, ratio, seeds, overrides, roots,
    backend); a bad one raises ``ValueError`` saying what is allowed. Papermill passes unknown names
    silently, so ``busnb run`` checks names against each notebook's parameters cell before executing it."""
    from pathlib import Path

    from .config import PROFILES, check_overrides
    from .data import DATASETS
    from .methods import VARIANTS
    from .splits import RATIOS

    p = params
    prof = p.get("profile", "smoke")
    if prof not in PROFILES:
        raise ValueError(f"profile={prof!r}: choose one of {sorted(PROFILES)}")
    if "method" in p and p["method"] not in VARIANTS:
        raise ValueError(f"method={p['method']!r}: choose one of {sorted(VARIANTS)}")
    for k in ("dataset", "eval_dataset"):
        if p.get(k) is not None and p[k] not in DATASETS:
            raise ValueError(f"{k}={p[k]!r}: choose one of {DATASETS} (or None for the profile's dataset)")
    if "ratio" in p and float(p["ratio"]) not in RATIOS:
        raise ValueError(f"ratio={p['ratio']!r}: splits exist for {RATIOS} (% of train labeled)")
    if p.get("ssl_epochs") is not None and (not isinstance(p["ssl_epochs"], int) or p["ssl_epochs"] < 1):
        raise ValueError(f"ssl_epochs={p['ssl_epochs']!r}: a positive integer, or None for the profile's")
    for k in ("seed", "split_seed"):
        if k in p and (not isinstance(p[k], int) or p[k] < 0):
            raise ValueError(f"{k}={p[k]!r}: a non-negative integer")
    if p.get("overrides"):
        check_overrides(prof, dict(p["overrides"]))
    for k in ("root", "busi_root", "eval_root", "images", "model_dir"):
        if p.get(k) and not Path(p[k]).exists():
            raise ValueError(f"{k}={p[k]!r}: no such file or folder")
    if p.get("size_dir") and not in_repo(p["size_dir"]).is_dir():
        raise ValueError(f"size_dir={p['size_dir']!r}: no such folder (here or in the checkout). Pass a folder with one "
                         "sub-folder per row and its runs below it, e.g. results/cpu-2026-11-24/d64e45-r10")
    for label, d in (p.get("glance_dirs") or {}).items():
        if not in_repo(d).is_dir():
            raise ValueError(f"glance_dirs[{label!r}]={d!r}: no such folder (here or in the checkout). Pass folders with "
                             "one sub-folder per row, e.g. results/cpu-2026-11-24/d64e45-r10-weak")
    if p.get("model_dir"):
        m = Path(p["model_dir"])
        if not (m.is_file() and m.suffix == ".pt") and not (m / "best.pt").is_file():
            raise ValueError(f"model_dir={p['model_dir']!r}: not a trained run (no best.pt there). Pass the folder "
                             "`busnb train` printed, or its best.pt.")
    if "threshold" in p and not 0 < p["threshold"] < 1:
        raise ValueError(f"threshold={p['threshold']}: must be between 0 and 1 (exclusive)")
    if "eval_part" in p:
        from .predict import PARTS

        if p["eval_part"] not in PARTS:
            raise ValueError(f"eval_part={p['eval_part']!r}: choose one of {PARTS}")
    if p.get("eval_dataset") == "folder" and not p.get("eval_root"):
        raise ValueError("eval_dataset='folder' needs eval_root=<folder with images/ and masks/>")
    if "backend" in p and p["backend"] not in ("appearance", "gdino_sam"):
        raise ValueError(f"backend={p['backend']!r}: appearance or gdino_sam")
    if p.get("dataset") == "folder" and "root" in p and not p.get("root"):
        raise ValueError("dataset='folder' needs root=<folder with images/ and masks/>")
