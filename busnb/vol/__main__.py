"""``python -m busnb.vol train [...]``: the same as ``busnb train``, with 3D defaults (``--profile phantom3d
--method dual_uncertainty --ratio 10``) where the options do not name them. ``busnb train --profile phantom3d``
dispatches to :func:`busnb.vol.experiment.run_volume_experiment` itself."""
from __future__ import annotations

import sys

DEFAULTS_3D = {"--profile": "phantom3d", "--method": "dual_uncertainty", "--ratio": "10"}


def main(argv=None) -> int:
    from ..cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["train"]:
        print("usage: python -m busnb.vol train [busnb train options]", file=sys.stderr)
        return 2
    for k, v in DEFAULTS_3D.items():
        if k not in argv:
            argv += [k, v]
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
