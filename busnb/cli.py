"""Command line of busnb: semi-supervised breast-ultrasound lesion segmentation (README for the methods and results).

Start with `busnb train -h` (one model) or `busnb run -h` (every notebook). Errors print one line, `error: <message>`
with the fix; add --debug (before or after the command) for the full traceback."""
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
    lines = [f"\nResults: {run_dir}"]
    if (run_dir / "results.json").is_file():
        lines.append(f"  metrics: {run_dir}/results.json")
    if (run_dir / "figures").is_dir():
        lines.append(f"  figures: {run_dir}/figures (copied to figures/)")
    print("\n".join(lines))
    return 0


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative; seeds are whole numbers >= 0")
    return v


def _train_kwargs(a) -> dict:
    kw = {}
    if getattr(a, "device", None):
        kw["device"] = a.device
    if getattr(a, "amp", None):
        kw["amp"] = a.amp
    if getattr(a, "no_capture", False):
        kw["capture"] = False
    return kw


def cmd_train(a) -> int:
    from .config import check_overrides, get_profile
    from .errors import closest
    from .experiment import run_experiment, run_name
    from .methods import VARIANTS, check_method_kwargs
    from .models import check_device
    from .paths import runs_dir
    from .splits import split_name

    overrides = check_overrides(a.profile, _kv(a.set))  # before any data is loaded
    if a.method not in VARIANTS:
        close = closest(a.method, VARIANTS)
        raise ValueError(f"unknown method {a.method!r}" + (f" (did you mean {close!r}?)" if close else "")
                         + f"; choose one of {sorted(VARIANTS)}")
    check_method_kwargs(a.method, _kv(a.method_arg))
    check_device(a.device or "auto")
    prof = get_profile(a.profile, **overrides)
    if prof.ndim == 3:  # volumes: the 3D phantom through busnb.vol (same trainer, 3D networks and metrics)
        return _train_3d(a, prof)
    dataset = a.dataset or prof.dataset
    out = a.out or runs_dir() / f"train-{prof.name}" / run_name(a.method, split_name(dataset, a.root, phantom=prof.phantom), a.ratio, a.seed)
    r = run_experiment(prof, a.method, a.dataset, a.ratio, a.seed, out, root=a.root, method_kwargs=_kv(a.method_arg),
                       force=a.force, retrain=a.force, train_kwargs=_train_kwargs(a))
    print(json.dumps(r["test"], indent=1))
    print(f"run folder: {out}")
    return 0


def _train_3d(a, prof) -> int:
    from .paths import runs_dir
    from .vol.experiment import run_volume_experiment

    if a.dataset not in (None, "phantom3d") or a.root:
        raise ValueError(f"profile {prof.name!r} trains on volumes of the 3D phantom; --dataset/--root name 2D "
                         "datasets (use a 2D profile for them)")
    out = a.out or runs_dir() / f"train-{prof.name}" / f"{a.method}-phantom3d-r{a.ratio:g}-s{a.seed}"
    r = run_volume_experiment(prof, a.method, a.ratio, a.seed, out, method_kwargs=_kv(a.method_arg), force=a.force,
                              retrain=a.force, train_kwargs=_train_kwargs(a))
    print(json.dumps(r["test"], indent=1))
    print(f"run folder: {out}")
    return 0


def cmd_splits(a) -> int:
    from . import splits as S
    from .data import load_dataset, validate_dataset

    samples = load_dataset(a.dataset, root=a.root)
    validate_dataset(samples, progress=True)
    name = S.split_name(a.dataset, a.root)
    grouped = S.derive_groups(samples, progress=True)  # once for every seed
    for seed in a.seeds:
        path = S.split_dir(name, seed)
        if a.verify:
            S.verify_splits(path, grouped, rederive=False)
            print(f"{path}: verified (groups and split re-derived from seed {seed}, no group across parts)")
        else:
            path, status = S.write_split(name, grouped, seed, a.val_frac, a.test_frac, force=a.force)
            print(f"{path}: {status}")
    return 0


# what rerunning an interrupted command does (the CLI says it on Ctrl-C)
RESUME = {
    "train": "rerun the same command to resume from the last finished epoch",
    "sweep": "rerun the same command: finished runs are skipped, unfinished ones resume from their last epoch",
    "run": "rerun the same command: finished training runs are reused, unfinished ones resume",
    "pseudo-label": "rerun the same command: the images already labeled are kept in the cache",
    "pretrain": "rerun the same command to resume from the last finished epoch",
    "vlm-pretrain": "rerun the same command to resume from the last finished epoch",
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="busnb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="execute the notebooks with papermill for a profile")
    r.add_argument("--profile", default="smoke", choices=["smoke", "demo", "cpu", "gpu", "scratch"])
    r.add_argument("--notebooks", nargs="*", help="subset of notebooks (default: all, in order)")
    r.add_argument("-p", "--param", action="append", help="extra notebook parameter key=value (JSON value)")
    r.add_argument("--out", help="run folder (default runs/<timestamp>-<profile>)")
    r.add_argument("--variants", nargs="+", help="variants trained by 05_train (default: supervised +static "
                   "dual_teacher); groups: baselines, ablation, dual_uncertainty_ablation, default")
    r.add_argument("--ratios", type=float, nargs="+", help="labeled ratios (default: the profile's)")
    r.add_argument("--seeds", type=int, nargs="+", help="split/training seeds (default: the profile's)")
    r.set_defaults(fn=cmd_run)

    t = sub.add_parser(
        "train", help="train and test one method on one split",
        description="Train one method on one labeled ratio of one split, select the epoch on validation Dice,\n"
        "score it once on test. The same command on a finished run reuses it; an interrupted one resumes.",
        epilog="examples:\n  busnb train --profile smoke --method dual_teacher --ratio 10 --seed 0\n"
        "  busnb train --profile cpu --method supervised --ratio 2.5 --seed 1 --set epochs=45 --set augment=weak\n"
        "  busnb train --profile cpu --method dusss --method-arg lambda_u=1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--profile", default="smoke", help="smoke | demo | cpu | gpu | scratch | smoke3d | phantom3d "
                   "(README, Profiles; default: smoke)")
    t.add_argument("--method", default="supervised", help="a method or variant, e.g. supervised, +static, "
                   "dual_teacher, mean_teacher, cps, bcp, dual_uncertainty, dusss (default: supervised; an unknown "
                   "name lists them all)")
    t.add_argument("--dataset", help="busi, busbra, udiat, folder, phantom (default: the profile's)")
    t.add_argument("--root", help="dataset folder (default: found automatically)")
    t.add_argument("--ratio", type=float, default=2.5, help="labeled %% of the train pool: 2.5, 10, 20 or 100 "
                   "(default: 2.5)")
    t.add_argument("--seed", type=_nonneg_int, default=0, help="split seed = training seed (default: 0)")
    t.add_argument("--out", help="run folder (default: runs/train-<profile>/<method>-<dataset>-r<ratio>-s<seed>)")
    t.add_argument("--set", action="append", help="profile override key=value, e.g. epochs=5 (repeatable)")
    t.add_argument("--method-arg", action="append", help="method option key=value, e.g. lambda_u=1 (repeatable; "
                   "checked against the method's options before anything runs)")
    t.add_argument("--force", action="store_true", help="delete the run in --out (the same run, an unfinished or "
                   "a different one) and train anew; cached stages are reused")
    t.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: auto)")
    t.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], help="mixed precision (default auto: bf16 on GPUs)")
    t.add_argument("--no-capture", action="store_true", help="do not capture the training step as a CUDA graph")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("splits", help="write or verify split files")
    s.add_argument("--dataset", default="busi", help="dataset to split (default: busi)")
    s.add_argument("--root", help="dataset folder (default: found automatically)")
    s.add_argument("--seeds", type=_nonneg_int, nargs="+", default=[0, 1, 2], help="split seeds (default: 0 1 2)")
    s.add_argument("--val-frac", type=float, default=0.1, help="share of the groups for validation (default: 0.1)")
    s.add_argument("--test-frac", type=float, default=0.2, help="share of the groups for test (default: 0.2)")
    s.add_argument("--verify", action="store_true", help="re-derive groups and split from pixels and compare")
    s.add_argument("--force", action="store_true",
                   help="replace an existing split with different content (changes the test set)")
    s.set_defaults(fn=cmd_splits)

    for mod, fn in (("appg.cli", "add_parser"), ("predict", "add_parsers"), ("bench", "add_parsers"),
                    ("sweep", "add_parsers"), ("ssl", "add_parsers"), ("vlm", "add_parsers")):
        try:
            module = __import__(f"busnb.{mod}", fromlist=[fn])
        except ImportError as e:  # the other commands still work; say which are missing and why
            print(f"busnb: the commands of busnb.{mod} are unavailable ({e}). Fix: install the pinned stack "
                  "(`make venv`, or pip install -r requirements.txt -c requirements.lock).", file=sys.stderr)
            continue
        getattr(module, fn)(sub)

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted before or after the sub-command
    a = p.parse_args([x for x in argv if x != "--debug"])
    if debug:
        return a.fn(a)
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {RESUME.get(a.cmd, 'nothing is left half-written; rerun the same command')}",
              file=sys.stderr)
        return 130
    except Exception as e:  # user-facing: one line, not a traceback
        from .errors import is_user_error

        if not is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        print("(rerun with --debug for the full traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
