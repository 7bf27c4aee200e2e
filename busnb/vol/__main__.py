"""``python -m busnb.vol train --profile phantom3d --method dual_uncertainty --ratio 10 --seed 0 [--set k=v]
[--method-arg k=v] [--out DIR] [--force]``: one 3D run (see :mod:`busnb.vol.experiment`)."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    from ..cli import _kv
    from ..config import SettingError, check_overrides, get_profile
    from .experiment import run_volume_experiment

    ap = argparse.ArgumentParser(prog="python -m busnb.vol", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and test one 3D run")
    t.add_argument("--profile", default="phantom3d")
    t.add_argument("--method", default="dual_uncertainty")
    t.add_argument("--ratio", type=float, default=10.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    t.add_argument("--method-arg", nargs="*", default=[], metavar="OPTION=VALUE")
    t.add_argument("--out", default=None)
    t.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    try:
        prof = get_profile(a.profile, **check_overrides(a.profile, _kv(a.set)))
        if getattr(prof, "ndim", 2) != 3:
            raise SettingError(f"profile {a.profile!r} is 2D; choose a 3D profile (smoke3d, phantom3d) or use "
                               "`busnb train` for 2D")
        out = a.out or f"runs/3d/{a.method}-phantom3d-r{a.ratio:g}-s{a.seed}"
        r = run_volume_experiment(prof, a.method, a.ratio, a.seed, out, method_kwargs=_kv(a.method_arg),
                                  force=a.force)
    except (SettingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r["test"], indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
