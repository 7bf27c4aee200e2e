"""``busnb pool-report``: score a finished ``dusss`` run's final teacher and text refinement on the run's
unlabeled pool again (:func:`busnb.methods.dusss.pool_report`; reporting only, nothing is fitted or selected), for
runs trained before a field of that report existed. Writes ``pool_report.json`` beside the run's ``metrics.json``
(which stays as the run wrote it); :func:`busnb.results.collect` reads both."""
from __future__ import annotations

import json
from pathlib import Path


def run_pool_report(run_dir: str | Path, root=None, progress: bool = False) -> dict:
    """:func:`busnb.methods.dusss.pool_report` of the finished ``dusss`` run in ``run_dir`` (its ``last.pt`` and
    the stages its ``metrics.json`` lists, from the stage cache), on the unlabeled pool of the run's own split,
    written atomically to ``run_dir/pool_report.json`` and returned."""
    from ..atomic import write_json
    from ..data.tensors import SegArrays
    from ..experiment import load_trained, prepare, profile_from_dict
    from ..methods import VARIANTS
    from ..methods.dusss import pool_report

    run_dir = Path(run_dir)
    meta = run_dir / "run.json"
    if not meta.is_file() or not (run_dir / "last.pt").is_file() or not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished busnb run with its checkpoint (needs run.json, "
                                "metrics.json and last.pt; results/ folders hold no checkpoints). Fix: point at the "
                                "run folder that `busnb train --out` wrote.")
    info = json.loads(meta.read_text())
    ident = info["identity"]
    variant = ident["variant"]
    if VARIANTS.get(variant, ("",))[0] != "dusss":
        raise ValueError(f"{run_dir}: a {variant!r} run; pool-report scores the text refinement of dusss runs only")
    prof = profile_from_dict(ident["profile"])
    method = load_trained(run_dir, prof, variant, ident["method_kwargs"])
    if not method.has_map:
        raise ValueError(f"{run_dir}: this dusss run has no text map (text_refine=False): nothing to report")
    parts = prepare(prof, ident["dataset"], ident["ratio"], ident["seed"], root or info.get("root"),
                    validate=False)
    if (parts["fingerprint"]["content"], parts["fingerprint"]["ids"]) != (ident["data_content"], ident["data_ids"]):
        raise ValueError(f"{run_dir}: the dataset found now differs from the one the run was trained on "
                         f"(fingerprint {parts['fingerprint']['content']} vs {ident['data_content']}). Fix: pass "
                         "--root with the run's dataset folder.")
    rep = pool_report(method, SegArrays(parts["unlabeled"], prof.image_size, progress=progress))
    rep = {"run": str(run_dir), "variant": variant, "ratio": ident["ratio"], "seed": ident["seed"], **rep}
    write_json(run_dir / "pool_report.json", rep)
    return rep


def cmd_pool_report(a) -> int:
    from ..methods.dusss import describe_pool

    for d in a.runs:
        r = run_pool_report(d, a.root, progress=True)
        print(f"{d}:\n  " + "\n  ".join(describe_pool(r)))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("pool-report", help="score finished dusss runs' pseudo-labels and text refinement on their "
                       "unlabeled pool again (reporting only); writes pool_report.json beside metrics.json")
    p.add_argument("runs", nargs="+", help="run folders (as written by busnb train --out)")
    p.add_argument("--root", help="dataset folder (default: the run's own, else found automatically)")
    p.set_defaults(fn=cmd_pool_report)
