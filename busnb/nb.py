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
