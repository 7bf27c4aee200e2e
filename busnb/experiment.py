"""One experiment = dataset + split + method (or named variant) + profile -> trained net, test table, metrics.

This is what ``05_train.ipynb``, ``busnb train`` and ``busnb sweep`` call. Order of a run:

1. the data: samples, their content fingerprint (``busnb.data.fingerprint``), masks validated once, the
   split (committed or made once; ``busnb.splits``);
2. the run folder: one writer (``run.lock``), leftovers of interrupted writes removed, ``run.json`` compared
   with this run's identity (dataset fingerprint, split, method and options, profile, busnb source): a
   finished identical run is reused, an unfinished one resumed, a different one is an error (``--force``);
3. **seed once** (``seed_everything``), then the networks are built;
4. the method's stages (``busnb.stages``: cached by their inputs, trained in their own RNG stream);
5. the trainer (selects on validation), then test scored once: ``test_per_image.csv``, ``metrics.json``.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from . import splits as S
from .atomic import write_json
from .config import Profile
from .data import load_dataset
from .data.tensors import SegArrays
from .methods import VARIANTS, build_method, check_method_kwargs
from .models import build_model
from .provenance import snapshot
from .rundir import PUBLISHED_STAGES, RunLock, check_identity, clean_tmp
from .train import TrainConfig, Trainer, evaluate_and_write, seed_everything, train_config  # noqa: F401

__all__ = ["prepare", "run_experiment", "run_name", "net_factory", "train_config", "evaluate_and_write",
           "load_trained", "load_net", "run_identity", "profile_from_dict", "resolve_encoder"]


def prepare(profile: Profile, dataset: str | None = None, ratio: float = 2.5, seed: int = 0, root=None,
            validate: bool = True, progress: bool = False) -> dict:
    """Samples of each part (labeled, unlabeled, val, test) for a dataset, ratio and split seed, with the
    split's name and the dataset's fingerprint. Masks are validated once per dataset copy (cached)."""
    from .data.fingerprint import dataset_fingerprint

    dataset = dataset or profile.dataset
    samples = load_dataset(dataset, root=root, phantom=profile.phantom)
    if validate:
        from .data.validate import validate_dataset

        validate_dataset(samples, progress=progress)
    name = S.split_name(dataset, root, phantom=profile.phantom)
    splits = S.load_or_make(name, samples, seed=seed)
    return {"dataset": dataset, "split_name": name, "root": str(root) if root is not None else None,
            "ratio": float(ratio), "seed": seed, "samples": samples, "splits": splits,
            "fingerprint": dataset_fingerprint(samples), **S.subsets(samples, splits, ratio)}


def run_name(variant: str, dataset: str, ratio: float, seed: int) -> str:
    """Folder name of a run; ``dataset`` is the split name (``busnb.splits.split_name``), which for a
    user's folder carries a hash of its path, so two folders of one name never share runs."""
    return f"{variant.replace('+', 'plus_')}-{dataset}-r{ratio:g}-s{seed}"


def net_factory(profile: Profile, init: bool = True):
    """A function building the profile's network. ``init=False`` leaves the encoder random (for networks
    whose weights are loaded right after, e.g. from ``best.pt``), so no download or pretraining is needed."""
    weights = profile.encoder_weights if init else None
    return partial(build_model, profile.encoder, weights, profile.decoder_channels)


def resolve_encoder(profile: Profile, parts: dict, progress: bool = True) -> Profile:
    """``encoder_weights=ssl`` replaced by the path of this split seed's in-domain pretrained weights
    (``busnb.ssl.pretrain_encoder`` with the profile's ``ssl_method``: pretrained now on the train pool if not
    cached); other profiles as given."""
    if profile.encoder_weights != "ssl":
        return profile
    from dataclasses import replace

    from .ssl import SSLConfig, pretrain_encoder

    path = pretrain_encoder(parts, profile.encoder, profile.image_size,
                            SSLConfig(epochs=profile.ssl_epochs, method=profile.ssl_method), progress=progress,
                            depth=profile.encoder_depth, decoder_channels=profile.decoder_channels)
    return replace(profile, encoder_weights=str(path))


def run_identity(profile: Profile, variant: str, parts: dict, method_kwargs: dict | None) -> dict:
    """Everything a run's result depends on; a folder is reused only for the same identity."""
    fp = parts["fingerprint"]
    return {"variant": variant, "method_kwargs": method_kwargs or {}, "dataset": parts["dataset"],
            "split": parts["split_name"], "ratio": parts["ratio"], "seed": parts["seed"],
            "data_content": fp["content"], "data_ids": fp["ids"], "profile": profile.to_dict(),
            "busnb_source": snapshot()}


def run_experiment(profile: Profile, method: str = "supervised", dataset: str | None = None, ratio: float = 2.5,
                   seed: int = 0, out_dir: str | Path = "runs/train", root=None, method_kwargs: dict | None = None,
                   progress: bool = True, parts: dict | None = None, force: bool = False,
                   train_kwargs: dict | None = None, retrain: bool = False) -> dict:
    """Train ``method`` (a method or variant name) on the ``ratio`` % split, select on val, score on test.

    ``train_kwargs`` go to :class:`busnb.train.TrainConfig` (device, amp, capture, ...: speed, not results).
    A finished run with the same identity is returned as stored; ``force`` retrains a folder that holds a
    different run; ``retrain`` (``busnb train --force``) retrains whatever the folder holds."""
    if method not in VARIANTS:
        raise ValueError(f"unknown method or variant {method!r}; choose one of {sorted(VARIANTS)}")
    check_method_kwargs(method, method_kwargs)  # before anything is written into the run folder
    parts = parts or prepare(profile, dataset, ratio, seed, root, progress=progress)
    if VARIANTS[method][0] != "supervised" and not parts["unlabeled"]:
        raise ValueError(f"'{method}' is semi-supervised but ratio {ratio:g} % leaves no unlabeled images; "
                         "train 'supervised' for the fully supervised upper bound.")
    out = Path(out_dir)
    identity = run_identity(profile, method, parts, method_kwargs)
    with RunLock(out):
        clean_tmp(out, quiet=not progress)
        state = check_identity(out, identity, force, info={"root": parts.get("root")}, retrain=retrain)
        if state == "finished":
            if progress:
                print(f"{out}: finished run with the same data, settings and code: reused (--force trains it anew)")
            return json.loads((out / "metrics.json").read_text())
        built = resolve_encoder(profile, parts, progress)  # the SSL encoder: own RNG stream, cached
        seed_everything(seed)  # once, before any network is built
        m = build_method(method, net_factory(built), **(method_kwargs or {}))
        size = profile.image_size
        labeled = SegArrays(parts["labeled"], size, progress=progress)
        val = SegArrays(parts["val"], size, progress=progress)
        unlabeled = SegArrays(parts["unlabeled"], size, progress=progress) if m.needs_unlabeled else None
        stage_info = []
        specs = m.stages()
        if specs:
            from .stages import StageContext, run_stage

            ctx = StageContext(parts, profile, seed, net_factory(built), {"labeled": labeled, "val": val},
                               dict(train_kwargs or {}), progress)
            for spec in specs:
                st, info = run_stage(spec, ctx)
                m.attach(spec.kind, st)
                stage_info.append(info)
                _publish_stage(info, out.parent)
        n_train = len(parts["labeled"]) + len(parts["unlabeled"])
        tc = train_config(profile, seed, n_train, progress=progress, **(train_kwargs or {}))
        trainer = Trainer(m, tc, labeled, val, unlabeled, out)
        fit = trainer.fit()
        report = m.report(unlabeled) if unlabeled is not None else {}
        net = trainer.load_best()
        extra = {**report, "base_method": m.name, "best_val_dice": fit["best_val_dice"], "epochs": fit["epochs"],
                 "method_kwargs": method_kwargs or {}, "options": getattr(m, "opts", {}),
                 "stages": stage_info, "stage1": stage_info[0] if stage_info else None,
                 "encoder_weights": built.encoder_weights,  # the file behind encoder_weights=ssl (its cache key)
                 "train_seconds": round(sum(h["seconds"] for h in fit["history"]), 1)}
        return evaluate_and_write(net, parts, size, out, method, seed, profile, extra, progress)


def _publish_stage(info: dict, where: Path) -> None:
    """Copy a stage's own test metrics (e.g. the static teacher scored alone) next to the runs that used it,
    as ``<where>/_stages/<kind>-<key>/metrics.json`` (with ``stage_dir``, where its network is), so result
    tables of a run folder list it once."""
    src = Path(info["dir"]) / "metrics.json"
    if src.is_file():
        dest = where / PUBLISHED_STAGES / f"{info['kind']}-{Path(info['dir']).name}" / "metrics.json"
        if not dest.is_file():
            write_json(dest, {**json.loads(src.read_text()), "stage_dir": info["dir"]})


def profile_from_dict(d: dict) -> Profile:
    """A Profile from its ``to_dict()`` form (as stored in run.json); unknown keys are ignored."""
    from dataclasses import fields

    from .data.phantom import PhantomConfig

    kw = {f.name: d[f.name] for f in fields(Profile) if f.name in d}
    if isinstance(kw.get("phantom"), dict):
        kw["phantom"] = PhantomConfig(**kw["phantom"])
    for k in ("decoder_channels", "seeds", "ratios"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return Profile(**kw)


def load_net(run_dir: str | Path, device="cpu"):
    """(network selected on validation, its Profile) of a trained run folder, rebuilt from ``run.json``
    and ``best.pt``, in eval mode on ``device``."""
    import torch

    run_dir = Path(run_dir)
    meta, best = run_dir / "run.json", run_dir / "best.pt"
    if not meta.is_file() or not best.is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished busnb run (needs run.json and best.pt). Fix: train "
                                "it with `busnb train ... --out` or point at the run folder.")
    prof = profile_from_dict(json.loads(meta.read_text())["identity"]["profile"])
    net = net_factory(prof, init=False)()
    net.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["net"])
    return net.to(device).eval(), prof


def load_trained(out_dir: str | Path, profile: Profile, method: str, method_kwargs: dict | None = None):
    """The method object of a finished run with its last state, the selected network in ``eval_net()``, and
    its stages re-attached from the stage cache (listed in the run's metrics.json)."""
    import torch

    out_dir = Path(out_dir)
    m = build_method(method, net_factory(profile, init=False), **(method_kwargs or {}))
    st = torch.load(out_dir / "last.pt", map_location="cpu", weights_only=False)
    m.load_checkpoint_state(st["method"])
    metrics = out_dir / "metrics.json"
    stages = json.loads(metrics.read_text()).get("stages") or [] if metrics.is_file() else []
    for info in stages:
        best = Path(info["dir"]) / "best.pt"
        if not best.is_file():
            raise FileNotFoundError(f"{out_dir}: its {info['kind']} stage {best} is gone (cache cleared?). Fix: "
                                    "rerun the same command with --force to retrain the run and its stage.")
        m.attach(info["kind"], torch.load(best, map_location="cpu", weights_only=False)["net"])
    best = torch.load(out_dir / "best.pt", map_location="cpu", weights_only=False)
    m.eval_net().load_state_dict(best["net"])
    return m.eval()
