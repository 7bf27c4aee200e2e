"""What every notebook does first: resolve the profile, the run folder and the figure folder."""
from __future__ import annotations

from pathlib import Path

from .config import Profile, get_profile
from .paths import runs_dir


def context(profile: str = "smoke", run_dir: str | Path = "", **overrides) -> tuple[Profile, Path, Path]:
    """``(profile, run_dir, fig_dir)``; an empty ``run_dir`` means ``runs/interactive-<profile>``."""
    import matplotlib

    matplotlib.rcParams.update({"figure.dpi": 90, "font.size": 9})
    prof = get_profile(profile, **overrides)
    rd = Path(run_dir) if run_dir else runs_dir() / f"interactive-{profile}"
    figs = rd / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    return prof, rd, figs


def maybe_load(name: str, root=None, **kw):
    """Load a published dataset, or print how to get it and return ``None`` (notebooks only)."""
    from .data import DataError, load_dataset

    try:
        return load_dataset(name, root=root, **kw)
    except DataError as e:
        print(f"[{name} not shown] {e}")
        return None


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
