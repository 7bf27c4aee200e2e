"""``busnb sweep``: many (variant, ratio, seed) runs at once - several per GPU, or over a Ray cluster.

Each job is one ``busnb train`` in its own process, writing its usual run folder
``<out>/<run_name>/`` (so a sweep's folder is read by ``06_results`` / ``busnb.results.collect`` like any
other). A job whose folder already holds a finished run of the same identity is skipped; an interrupted
one resumes from its ``last.pt``; a job whose folder holds a *different* run fails with that reason (no
silent reuse). Jobs that share a stage (the static teacher of one ratio and seed) wait for each other on
the stage's lock, and the first job of each stage group is started first.

Executors:

* ``local`` (default): a pool of ``slots`` worker processes; on CUDA machines ``slots = GPUs x per_gpu``
  and each worker is pinned to one GPU (``CUDA_VISIBLE_DEVICES``); on a CPU machine ``--workers`` (1).
* ``ray``: the same jobs as Ray tasks (``num_gpus = 1 / per_gpu`` on GPU clusters), on an existing
  cluster (``--ray-address``; nodes share a filesystem) or a local Ray started for the sweep and shut down
  after it. Ray is pinned in ``requirements.txt``; the run folders are the same with either executor.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Job:
    variant: str
    ratio: float
    seed: int
    out: str
    args: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.out).name


def make_jobs(profile: str, variants, ratios, seeds, out: str | Path, dataset: str | None = None, root=None,
              sets: list[str] | None = None, extra_args: list[str] | None = None) -> list[Job]:
    """The job list: variants x ratios x seeds, minus semi-supervised variants at 100 % (nothing unlabeled)."""
    from .config import get_profile
    from .experiment import run_name
    from .methods import VARIANTS, expand_variants
    from .splits import split_name

    prof = get_profile(profile)
    ds = dataset or prof.dataset
    sname = split_name(ds, root, phantom=prof.phantom)
    jobs = []
    for v, r, s in itertools.product(expand_variants(variants), [float(x) for x in ratios], [int(x) for x in seeds]):
        if r >= 100 and VARIANTS[v][0] != "supervised":
            continue
        args = ["--profile", profile, "--method", v, "--ratio", f"{r:g}", "--seed", str(s)]
        if dataset:
            args += ["--dataset", dataset]
        if root:
            args += ["--root", str(root)]
        for kv in sets or []:
            args += ["--set", kv]
        args += list(extra_args or [])
        jobs.append(Job(v, r, s, str(Path(out) / run_name(v, sname, r, s)), args))
    return _stage_first(jobs)


def _stage_first(jobs: list[Job]) -> list[Job]:
    """Order: the first job of each (ratio, seed) that needs a stage, then jobs without stages, then the rest
    (they find the stage cached instead of waiting on its lock)."""
    from .methods import VARIANTS

    def needs_stage(j):
        base, opts = VARIANTS[j.variant]
        return base == "bcp" or (base == "dual_teacher" and opts.get("static", True))

    first, plain, rest, seen = [], [], [], set()
    for j in jobs:
        if not needs_stage(j):
            plain.append(j)
        elif (VARIANTS[j.variant][0], j.ratio, j.seed) not in seen:
            seen.add((VARIANTS[j.variant][0], j.ratio, j.seed))
            first.append(j)
        else:
            rest.append(j)
    return first + plain + rest


def finished(job: Job) -> bool:
    return (Path(job.out) / "metrics.json").is_file()


def _run_one(job: Job, env: dict | None = None, log_dir: Path | None = None, cwd: str | None = None) -> dict:
    t0 = time.time()
    cmd = [sys.executable, "-m", "busnb", "train", *job.args, "--out", job.out]
    log = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / f"{job.name}.log", "w")
    try:
        p = subprocess.run(cmd, env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}, cwd=cwd,
                           stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    finally:
        if log:
            log.close()
    return {"job": job.name, "rc": p.returncode, "seconds": round(time.time() - t0, 1)}


def run_local(jobs: list[Job], slots: int, gpus: list[int], log_dir: Path, progress: bool = True) -> list[dict]:
    from .progress import tqdm

    results = []
    free = list(itertools.islice(itertools.cycle(gpus or [None]), slots))  # slot -> GPU, round robin
    import queue

    q: queue.Queue = queue.Queue()
    for g in free:
        q.put(g)

    def work(job):
        g = q.get()
        try:
            env = {"CUDA_VISIBLE_DEVICES": str(g)} if g is not None else {}
            return _run_one(job, env, log_dir)
        finally:
            q.put(g)

    bar = tqdm(total=len(jobs), desc="sweep", disable=not progress)
    with ThreadPoolExecutor(max_workers=slots) as ex:
        for r in ex.map(work, jobs):
            results.append(r)
            bar.update(1)
            if r["rc"] != 0:
                bar.write(f"job {r['job']} failed (rc {r['rc']}): see {log_dir / (r['job'] + '.log')}")
    bar.close()
    return results


# environment a Ray worker's ``busnb train`` needs from the driver (data roots, offline switches, threads)
_FORWARD_ENV = ("BUSNB_", "HF_", "TRANSFORMERS_", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _forwarded_env() -> dict:
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_ENV)}


def run_ray(jobs: list[Job], per_gpu: int, address: str | None, log_dir: Path, progress: bool = True,
            workers: int = 1) -> list[dict]:
    """Each job as a Ray task running ``busnb train`` in a subprocess (Ray sets its ``CUDA_VISIBLE_DEVICES``).

    ``address``: an existing cluster (``ray start --head`` on one machine, ``ray start --address=...`` on the
    others); every node must see the repository, the data and ``log_dir`` at the same paths (a shared
    filesystem), because jobs write their run folders there. Without ``address`` a local Ray with ``workers``
    CPUs is started for the sweep and shut down after it. Tasks run in the driver's working directory with its
    ``BUSNB_*`` / ``HF_*`` / thread variables, so relative paths and offline switches mean the same there.
    """
    try:
        import ray
    except ImportError as e:
        raise ValueError("the ray executor needs Ray: `pip install ray` (or use the default local executor)") from e
    started = not ray.is_initialized()
    if started:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": max(1, workers)}))
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        opts = {"num_gpus": 1.0 / per_gpu} if gpus else {"num_cpus": 1}
        remote = ray.remote(max_retries=0, **opts)(_run_one)
        cwd, env = os.getcwd(), _forwarded_env()
        refs = [remote.remote(j, env, Path(log_dir).resolve(), cwd) for j in jobs]
        results = []
        from .progress import tqdm

        bar = tqdm(total=len(refs), desc="sweep (ray)", disable=not progress)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in ray.get(done):
                results.append(r)
                if r["rc"] != 0:
                    bar.write(f"job {r['job']} failed (rc {r['rc']}): see {Path(log_dir) / (r['job'] + '.log')}")
            bar.update(len(done))
        bar.close()
        return results
    finally:
        if started:
            ray.shutdown()


def sweep(profile: str, variants, ratios, seeds, out: str | Path, per_gpu: int = 4, workers: int | None = None,
          executor: str = "local", ray_address: str | None = None, dataset=None, root=None, sets=None,
          extra_args=None, progress: bool = True) -> dict:
    import torch

    from .atomic import write_json

    out = Path(out)
    jobs = make_jobs(profile, variants, ratios, seeds, out, dataset, root, sets, extra_args)
    todo = [j for j in jobs if not finished(j)]
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    slots = workers or (len(gpus) * per_gpu if gpus else 1)
    if progress:
        print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} already finished, {len(todo)} to run on "
              f"{slots} slot(s) ({len(gpus)} GPU(s), {per_gpu} per GPU)" if executor == "local" else
              f"{len(jobs)} jobs, {len(todo)} to run with Ray", flush=True)
    t0 = time.time()
    if executor == "ray":
        results = run_ray(todo, per_gpu, ray_address, out / "logs", progress, slots)
    else:
        results = run_local(todo, slots, gpus, out / "logs", progress)
    summary = {"profile": profile, "jobs": [asdict(j) for j in jobs], "ran": results, "skipped": len(jobs) - len(todo),
               "failed": [r["job"] for r in results if r["rc"] != 0], "wall_seconds": round(time.time() - t0, 1),
               "slots": slots, "gpus": len(gpus), "executor": executor}
    write_json(out / "sweep.json", summary)
    return summary


def cmd_sweep(a) -> int:
    from .cli import _kv
    from .config import check_overrides, get_profile
    from .paths import runs_dir

    check_overrides(a.profile, _kv(a.set))  # before anything starts
    prof = get_profile(a.profile)
    out = a.out or runs_dir() / f"sweep-{a.profile}"
    extra = ["--no-capture"] if a.no_capture else []
    s = sweep(a.profile, a.variants or ["default"], a.ratios or prof.ratios, a.seeds or prof.seeds, out, a.per_gpu,
              a.workers, a.executor, a.ray_address, a.dataset, a.root, a.set, extra)
    print(json.dumps({k: s[k] for k in ("skipped", "failed", "wall_seconds", "slots")}))
    if s["failed"]:
        print(f"error: {len(s['failed'])} job(s) failed; logs in {Path(out) / 'logs'}", file=sys.stderr)
        return 1
    print(f"runs in {out}; tables: busnb.results.collect('{out}')")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("sweep", help="train (variant x ratio x seed) runs concurrently: several per GPU, or on Ray")
    p.add_argument("--profile", default="smoke", help="smoke | demo | cpu | gpu | scratch (default: smoke)")
    p.add_argument("--variants", nargs="+", help="variants or groups (default: supervised +static dual_teacher)")
    p.add_argument("--ratios", type=float, nargs="+", help="labeled %% ratios (default: the profile's)")
    p.add_argument("--seeds", type=int, nargs="+", help="split = training seeds (default: the profile's)")
    p.add_argument("--dataset", help="default: the profile's")
    p.add_argument("--root", help="dataset folder (default: found automatically)")
    p.add_argument("--set", action="append", help="profile override key=value for every job")
    p.add_argument("--out", help="sweep folder (default runs/sweep-<profile>)")
    p.add_argument("--per-gpu", type=int, default=4, help="concurrent runs per GPU (default 4)")
    p.add_argument("--workers", type=int, help="concurrent runs in all (default: GPUs x per-gpu, or 1 on CPU)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="local processes (default) or Ray")
    p.add_argument("--ray-address", help="an existing Ray cluster (default: a local Ray)")
    p.add_argument("--no-capture", action="store_true", help="do not capture training steps as CUDA graphs")
    p.set_defaults(fn=cmd_sweep)
