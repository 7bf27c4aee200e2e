"""``busnb run``: execute the ordered notebooks headless with papermill.

A run folder ``runs/<timestamp>-<profile>/`` receives the executed notebooks, the
parameters of each (``params.json``), every trained model's ``metrics.json``, the
collected ``results.json`` and the figures, which are then copied to ``figures/``.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from .atomic import write_json
from .config import get_profile
from .paths import repo_root, runs_dir

NOTEBOOK_DIR = repo_root() / "notebooks"


def notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def jobs(profile: str, variants=None, ratios=None, seeds=None) -> list[tuple[str, str, dict]]:
    """(notebook stem, output suffix, parameters) in execution order for a profile; ``ratios`` and
    ``seeds`` replace the profile's lists, ``variants`` may name groups (``busnb.methods.GROUPS``).

    ``05_train`` runs once per variant x labeled ratio x seed of the profile; 03 and 04 train (or reuse)
    the dual-teacher run of the first ratio and seed, which 05 then finds finished."""
    from .experiment import run_name
    from .methods import RUN_BY_DEFAULT, expand_variants

    prof = get_profile(profile)
    ratios = [float(r) for r in (ratios or prof.ratios)]
    seeds = [int(s) for s in (seeds or prof.seeds)]
    out = []
    for nb in notebooks():
        stem = nb.stem
        if stem.startswith("05_"):
            for v in expand_variants(variants or RUN_BY_DEFAULT):
                for ratio in ratios:
                    if ratio >= 100 and not _supervised_only(v):
                        continue  # 100 % labeled: no unlabeled pool, only the supervised upper bound
                    for seed in seeds:
                        name = run_name(v, prof.dataset, ratio, seed)  # the split name of a published dataset
                        out.append((stem, f"-{name}", {"method": v, "ratio": ratio, "seed": seed}))
        elif stem[:2] in ("02", "03", "04", "07"):
            out.append((stem, "", {"ratio": ratios[0], **({} if stem.startswith("02") else {"seed": seeds[0]})}))
        else:
            out.append((stem, "", {}))
    return out


def _supervised_only(variant: str) -> bool:
    from .methods import VARIANTS

    return VARIANTS.get(variant, (variant, {}))[0] == "supervised"


def kernel_manager_class():
    """The kernel manager papermill starts each notebook's kernel with: local kernels talk over IPC (Unix
    sockets) where the platform has them, so the kernel opens no TCP port and ipykernel has no reason to print
    its "Kernel is running over TCP without encryption" warning into the progress line at every start.
    Each kernel's sockets get their own path (``<tmp>/busnb-kernel-<uuid>-ipc-<n>``, removed at shutdown), so
    concurrent runs never share one. ``None`` (papermill's default, TCP on localhost) on Windows, or where the
    socket path would pass the Unix limit of ~107 bytes (a very long temporary folder)."""
    import os
    import tempfile
    import uuid

    if os.name != "posix":
        return None
    from jupyter_client.manager import KernelManager
    from traitlets import default

    tmp = os.path.abspath(tempfile.gettempdir())
    if len(tmp) + len("/busnb-kernel-") + 36 + len("-ipc-99999") > 100:
        return None

    class IPCKernelManager(KernelManager):
        @default("transport")
        def _transport_default(self):
            return "ipc"

        @default("ip")
        def _ip_default(self):  # jupyter_client's default is the relative "kernel-ipc": shared by every kernel
            return os.path.join(tmp, f"busnb-kernel-{uuid.uuid4()}-ipc")

    return IPCKernelManager


def check_parameters(todo, extra: dict | None) -> dict:
    """Papermill only warns about a parameter a notebook does not declare (and runs with its default): here
    it is an error. Returns, per notebook stem, the names its ``parameters`` cell declares."""
    import papermill as pm

    from .errors import closest

    declared = {stem: set(pm.inspect_notebook(str(NOTEBOOK_DIR / f"{stem}.ipynb"))) for stem in {j[0] for j in todo}}
    every = set().union(*declared.values()) if declared else set()
    for k in extra or {}:
        if k not in every:
            close = closest(k, every)
            raise ValueError(f"parameter {k!r} is declared by none of the notebooks to run"
                             + (f"; did you mean {close!r}?" if close else "") + f". Declared: {sorted(every)}")
    return declared


def run_profile(profile: str = "smoke", notebooks: list[str] | None = None, extra: dict | None = None,
                out: str | Path | None = None, progress: bool = True, variants=None, ratios=None,
                seeds=None, sweep: bool | None = None, per_gpu: int = 4) -> Path:
    """Execute the notebooks in order into a run folder. With ``sweep`` (default: the ``gpu`` profile) the
    05_train jobs are first trained concurrently by :func:`busnb.sweep.sweep` into ``<run>/train/`` (several per
    GPU); the notebooks then find those runs finished and only show them."""
    import papermill as pm

    run_dir = Path(out) if out else runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{profile}"
    every = jobs(profile, variants, ratios, seeds)
    unmatched = [n for n in notebooks or [] if not any(j[0].startswith(n) for j in every)]
    if unmatched:
        raise ValueError(f"--notebooks {' '.join(unmatched)}: no notebook name starts with that. Fix: name them by "
                         f"number or name, e.g. --notebooks 00 05_train; the notebooks: "
                         f"{sorted({j[0] for j in every})}.")
    todo = [j for j in every if not notebooks or any(j[0].startswith(n) for n in notebooks)]
    declared = check_parameters(todo, extra)
    run_dir.mkdir(parents=True, exist_ok=True)
    if sweep is None:
        sweep = profile == "gpu"
    train_jobs = [j for j in todo if j[0].startswith("05_")]
    if sweep and train_jobs and not (extra or {}).get("dataset"):
        from .sweep import sweep as run_sweep

        vs = list(dict.fromkeys(j[2]["method"] for j in train_jobs))
        rs = sorted({j[2]["ratio"] for j in train_jobs})
        ss = sorted({j[2]["seed"] for j in train_jobs})
        res = run_sweep(profile, vs, rs, ss, run_dir / "train", per_gpu=per_gpu, progress=progress)
        if res["failed"]:
            raise RuntimeError(f"sweep: {len(res['failed'])} run(s) failed; logs in {run_dir / 'train' / 'logs'}")
    log = []
    km = kernel_manager_class()
    for i, (stem, suffix, params) in enumerate(todo, 1):
        params = {"profile": profile, "run_dir": str(run_dir.resolve()), **params,
                  **{k: v for k, v in (extra or {}).items() if k in declared[stem]}}
        dest = run_dir / f"{stem}{suffix}.ipynb"
        print(f"[{i}/{len(todo)}] {stem}{suffix}", flush=True)
        t0 = time.time()
        pm.execute_notebook(str(NOTEBOOK_DIR / f"{stem}.ipynb"), str(dest), parameters=params,
                            kernel_name="python3", cwd=str(NOTEBOOK_DIR), progress_bar=progress,
                            **({"kernel_manager_class": km} if km else {}))
        log.append({"notebook": dest.name, "parameters": params, "seconds": round(time.time() - t0, 1)})
        write_json(run_dir / "params.json", log)
    figs = run_dir / "figures"
    if figs.is_dir():
        dest = repo_root() / "figures"
        dest.mkdir(exist_ok=True)
        for f in figs.glob("*.png"):
            shutil.copy2(f, dest / f.name)
    return run_dir
