"""One 3D run through the one trainer: phantom volumes, seeded split, method, validation, test once.

Order (as ``busnb.experiment.run_experiment`` for 2D): volumes (``Phantom3DConfig`` from the profile's
``phantom`` field: ``n_images`` volumes of ``size``^3 voxels), the split (seeded by ``seed``: 20 % test, 10 %
validation, the rest train; the labeled volumes are the first ``ratio`` % of a seeded order of train, at least
one), the run folder (lock, ``run.json`` identity, resume), seed once, networks
(:func:`busnb.vol.nets.build_volume_model`), :class:`busnb.train.Trainer` with :class:`VolumeArrays`
(training on random ``patch_size`` crops, validation by sliding windows over whole volumes), then the
validation-selected network is scored once on the test volumes (3D Dice / IoU / HD95 / ASD in voxels):
``test_per_volume.csv``, ``metrics.json``.
"""
from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..config import Profile
from .arrays import VolumeArrays
from .metrics import score_volume
from .nets import build_volume_model
from .phantom import Phantom3DConfig, make_phantom3d


def phantom_config(profile: Profile) -> Phantom3DConfig:
    ph = profile.phantom
    return Phantom3DConfig(n_volumes=ph.n_images, size=ph.size, seed=ph.seed, p_second_lesion=ph.p_second_lesion)


def split_volumes(n: int, ratio: float, seed: int, val_frac: float = 0.1, test_frac: float = 0.2) -> dict:
    """Index lists ``train``, ``val``, ``test``, ``labeled``, ``unlabeled`` of ``n`` volumes (seeded; labeled
    subsets of one seed are nested across ratios)."""
    n_test, n_val = max(1, round(test_frac * n)), max(1, round(val_frac * n))
    if n - n_test - n_val < 2:
        raise ValueError(f"{n} volumes are too few for a split (need at least {n_test + n_val + 2}: "
                         "test, validation, one labeled and one unlabeled); raise phantom n_images")
    perm = np.random.default_rng([seed, 31]).permutation(n).tolist()
    test, val, train = sorted(perm[:n_test]), sorted(perm[n_test:n_test + n_val]), perm[n_test + n_val:]
    n_lab = min(len(train), max(1, round(ratio / 100 * len(train))))
    return {"train": sorted(train), "val": val, "test": test, "labeled": sorted(train[:n_lab]),
            "unlabeled": sorted(train[n_lab:])}


def volume_factory(profile: Profile):
    return partial(build_volume_model, profile.encoder, profile.encoder_weights, profile.decoder_channels)


def run_volume_experiment(profile: Profile, method: str = "supervised", ratio: float = 10.0, seed: int = 0,
                          out_dir: str | Path = "runs/3d", method_kwargs: dict | None = None, progress: bool = True,
                          force: bool = False, train_kwargs: dict | None = None, retrain: bool = False) -> dict:
    """Train ``method`` (a method or variant name) on the 3D phantom at ``ratio`` % labels; select on
    validation, score the test volumes once; returns (and writes) ``metrics.json``."""
    from ..atomic import write_json
    from ..methods import VARIANTS, build_method
    from ..provenance import provenance, snapshot
    from ..rundir import RunLock, check_identity, clean_tmp
    from ..train import Trainer, save_table, seed_everything, train_config

    if getattr(profile, "ndim", 2) != 3:
        raise ValueError(f"profile {profile.name!r} is 2D; use a 3D profile (smoke3d, phantom3d)")
    if method not in VARIANTS:
        raise ValueError(f"unknown method or variant {method!r}; choose one of {sorted(VARIANTS)}")
    cfg = phantom_config(profile)
    patch = tuple(profile.patch_size)
    if len(patch) != 3 or any(p > cfg.size for p in patch) or any(p % 16 for p in patch):
        raise ValueError(f"patch_size={patch}: needs 3 sizes, each a multiple of 16 (the 3D networks halve the "
                         f"size 4 times) and at most the volume size {cfg.size} (phantom size)")
    vols, masks, _ = make_phantom3d(cfg, progress=progress)
    sp = split_volumes(len(vols), ratio, seed)
    if VARIANTS[method][0] != "supervised" and not sp["unlabeled"]:
        raise ValueError(f"'{method}' is semi-supervised but ratio {ratio:g} % leaves no unlabeled volume")
    out = Path(out_dir)
    identity = {"variant": method, "method_kwargs": method_kwargs or {}, "dataset": "phantom3d",
                "phantom": cfg.key(), "ratio": float(ratio), "seed": seed, "split": sp,
                "profile": profile.to_dict(), "busnb_source": snapshot()}
    with RunLock(out):
        clean_tmp(out, quiet=not progress)
        if check_identity(out, identity, force, retrain=retrain) == "finished":
            return json.loads((out / "metrics.json").read_text())
        seed_everything(seed)
        m = build_method(method, volume_factory(profile), **(method_kwargs or {}))
        part = lambda k, p: VolumeArrays(vols[sp[k]], masks[sp[k]], patch=p, roi=patch,  # noqa: E731
                                         ids=[f"vol_{i:04d}" for i in sp[k]])
        labeled, val = part("labeled", patch), part("val", None)
        unlabeled = part("unlabeled", patch) if m.needs_unlabeled else None
        tc = train_config(profile, seed, None, progress=progress, **(train_kwargs or {}))
        trainer = Trainer(m, tc, labeled, val, unlabeled, out)
        fit = trainer.fit()
        net = trainer.load_best().eval()
        test = part("test", None).to(trainer.device)
        rows = []
        with torch.no_grad():
            for i in range(len(test)):
                b = test.batch([i])
                prob = torch.sigmoid(test.infer(net, b["image"]).float())[0, 0].cpu().numpy()
                rows.append({"id": test.ids[i], **score_volume(prob > 0.5, b["mask"][0, 0].cpu().numpy() > 0.5)})
        save_table(rows, out / "test_per_volume.csv")
        from ..metrics import summarize

        result = {"method": method, "variant": method, "base_method": m.name, "dataset": "phantom3d",
                  "phantom": {**cfg.__dict__, "key": cfg.key()}, "ratio": float(ratio), "seed": seed,
                  "profile": profile.name, "n_labeled": len(sp["labeled"]), "n_unlabeled": len(sp["unlabeled"]),
                  "n_val": len(sp["val"]), "n_test": len(sp["test"]), "patch_size": list(patch),
                  "test_resolution": "voxels (whole volumes, sliding window)", "test": summarize(rows),
                  "best_val_dice": fit["best_val_dice"], "epochs": fit["epochs"],
                  "method_kwargs": method_kwargs or {}, "options": getattr(m, "opts", {}),
                  "train_seconds": round(sum(h["seconds"] for h in fit["history"]), 1),
                  "provenance": provenance(trainer.device)}
        write_json(out / "metrics.json", result)
        return result


# 2D profile names `busnb run` passes to every notebook -> the 3D profile the volume notebook uses
VOLUME_PROFILE_OF = {"smoke": "smoke3d", "cpu": "phantom3d", "gpu": "phantom3d", "scratch": "phantom3d"}


def volume_profile(name: str, **overrides) -> Profile:
    """The 3D profile for ``name``: a 3D profile itself, or the 3D counterpart of a 2D one (``smoke`` ->
    ``smoke3d``, the others -> ``phantom3d``); ``overrides`` are checked against it."""
    from ..config import PROFILES, SettingError, check_overrides, get_profile

    target = name if name in PROFILES and getattr(PROFILES[name], "ndim", 2) == 3 else VOLUME_PROFILE_OF.get(name)
    if target is None:
        raise SettingError(f"profile {name!r} has no 3D counterpart; choose smoke3d or phantom3d "
                           f"(or a 2D profile among {sorted(VOLUME_PROFILE_OF)})")
    return get_profile(target, **check_overrides(target, dict(overrides)))


def load_volume_net(run_dir: str | Path, device="cpu"):
    """(network selected on validation, its Profile, the run's split) of a finished 3D run, in eval mode."""
    from ..experiment import profile_from_dict

    run_dir = Path(run_dir)
    meta, best = run_dir / "run.json", run_dir / "best.pt"
    if not meta.is_file() or not best.is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished 3D run (needs run.json and best.pt). Fix: train it "
                                "with `busnb train --profile phantom3d ... --out` or point at that folder.")
    ident = json.loads(meta.read_text())["identity"]
    prof = profile_from_dict(ident["profile"])
    prof = replace(prof, patch_size=tuple(prof.patch_size))
    net = volume_factory(prof)()
    net.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["net"])
    return net.to(device).eval(), prof, ident["split"]


@torch.no_grad()
def predict_volume(net, volume: np.ndarray, roi) -> np.ndarray:
    """Foreground probability (D, H, W) of a uint8 volume by sliding windows of ``roi``."""
    dev = next(net.parameters()).device
    arr = VolumeArrays(volume[None], np.zeros(volume.shape, bool)[None], roi=roi).to(dev)
    return torch.sigmoid(arr.infer(net, arr.batch([0])["image"]).float())[0, 0].cpu().numpy()
