"""Command line: ``busnb run | train | splits | pseudo-label``. ``busnb <cmd> -h`` for options."""
from __future__ import annotations

import argparse
import json
import sys


def _kv(items) -> dict:
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_run(a) -> int:
    from .runner import run_profile

    run_dir = run_profile(a.profile, notebooks=a.notebooks, extra=_kv(a.param), out=a.out, variants=a.variants,
                          ratios=a.ratios, seeds=a.seeds)
    print(f"\nResults: {run_dir}\n  metrics: {run_dir}/results.json\n  figures: {run_dir}/figures (copied to figures/)")
    return 0


def cmd_train(a) -> int:
    from .config import get_profile
    from .experiment import run_experiment
    from .paths import runs_dir

    prof = get_profile(a.profile, **_kv(a.set))
    from .experiment import run_name

    out = a.out or runs_dir() / f"train-{prof.name}" / run_name(a.method, a.dataset or prof.dataset, a.ratio, a.seed)
    r = run_experiment(prof, a.method, a.dataset, a.ratio, a.seed, out, root=a.root, method_kwargs=_kv(a.method_arg))
    print(json.dumps(r["test"], indent=1))
    print(f"written to {out}")
    return 0


def cmd_splits(a) -> int:
    from . import splits as S
    from .data import load_dataset

    samples = load_dataset(a.dataset, root=a.root)
    from pathlib import Path

    name = a.dataset if a.root is None else f"{a.dataset}-{Path(a.root).name}"  # as experiment.prepare names it
    for seed in a.seeds:
        path = S.split_dir(name, seed)
        if a.verify:
            S.verify_splits(path, samples)
            print(f"{path}: verified (re-derived from seed {seed}, no duplicate group across parts)")
        else:
            sp = S.make_splits(samples, seed, a.val_frac, a.test_frac)
            S.write_splits(sp, path, S.split_meta(name, samples, sp, seed, a.val_frac, a.test_frac))
            print(f"{path}: written")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="busnb", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="execute the notebooks with papermill for a profile")
    r.add_argument("--profile", default="smoke", choices=["smoke", "cpu", "gpu"])
    r.add_argument("--notebooks", nargs="*", help="subset of notebooks (default: all, in order)")
    r.add_argument("-p", "--param", action="append", help="extra notebook parameter key=value (JSON value)")
    r.add_argument("--out", help="run folder (default runs/<timestamp>-<profile>)")
    r.add_argument("--variants", nargs="+", help="variants trained by 05_train (default: supervised +static "
                   "dual_teacher); groups: baselines, ablation, dual_uncertainty_ablation, default")
    r.add_argument("--ratios", type=float, nargs="+", help="labeled ratios (default: the profile's)")
    r.add_argument("--seeds", type=int, nargs="+", help="split/training seeds (default: the profile's)")
    r.set_defaults(fn=cmd_run)

    t = sub.add_parser("train", help="train and test one method on one split")
    t.add_argument("--profile", default="smoke")
    t.add_argument("--method", default="supervised")
    t.add_argument("--dataset")
    t.add_argument("--root", help="dataset folder (default: found automatically)")
    t.add_argument("--ratio", type=float, default=2.5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out")
    t.add_argument("--set", action="append", help="profile override key=value, e.g. epochs=5")
    t.add_argument("--method-arg", action="append", help="method option key=value")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("splits", help="write or verify split files")
    s.add_argument("--dataset", default="busi")
    s.add_argument("--root")
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s.add_argument("--val-frac", type=float, default=0.1)
    s.add_argument("--test-frac", type=float, default=0.2)
    s.add_argument("--verify", action="store_true")
    s.set_defaults(fn=cmd_splits)

    try:
        from .appg.cli import add_parser as add_pl
        add_pl(sub)
    except ImportError:
        pass

    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
