"""Stages: the steps some methods need before their main loop, run by the experiment and cached by inputs.

A method declares what it needs (:meth:`busnb.methods.base.Method.stages` returns :class:`StageSpec`s) and
receives the result (:meth:`~busnb.methods.base.Method.attach`); it never trains a stage itself and never
imports the experiment. Each stage kind is one function here:

* ``static_teacher`` - the paper's T^A: APPG pseudo-labels of the unlabeled pool (cached by
  ``busnb.appg.pipeline``), masks with foreground <= ``min_fg`` dropped, optionally only the ``keep_top``
  most confident share of the rest (:func:`most_confident`; 1 = all, the paper), a U-Net trained on labeled +
  kept pseudo-labels, selected on validation Dice; also scored alone on test (``appg_static_teacher``).
* ``bcp_pretrain`` - BCP's pre-training (Bai et al. 2023): supervised with copy-paste among labeled images,
  selected on validation Dice; also scored alone on test (``bcp_pretrain``).
* ``vlm_pretrain`` - DuSSS's vision-language model (DCL + SSS, ``busnb.vlm``) on the train pool's images and
  texts; its ``best.pt`` holds the VLM state (last epoch, activation map calibrated on labeled masks). With
  ``pool_grounding="appg"`` it also grounds its phrases on the unlabeled pool's APPG pseudo-labels.
* ``appg_masks`` - the APPG pseudo-labels of the unlabeled pool at the profile's size (nothing trained):
  ``dusss``'s phrase-conditioned map with ``refine_map="appg"``.
* ``label_rate`` - the labeled train masks' foreground base rate pi (share of lesion pixels at the profile's
  image size; :func:`busnb.data.tensors.foreground_rate`): DuSSS's fusion prior and alignment target. Nothing
  is trained; its ``best.pt`` holds ``{"pi": tensor}``.

A stage folder ``<cache>/stages/<kind>/<key>/`` is keyed by everything its result depends on: the stage's
parameters, the dataset's content fingerprint, the ids of the labeled / unlabeled / validation sets, the
profile, the seed and the busnb source version. It is written under a lock (concurrent sweep jobs wait for
each other), resumes from its own ``last.pt``, and is finished when ``result.json`` exists. A stage trains in
a forked RNG seeded from (seed, kind), so the run's own random stream is the same whether the stage was
computed now or loaded from the cache.
"""
from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import write_json
from .paths import cache_dir
from .provenance import source_hash
from .rundir import RunLock, clean_tmp


@dataclass
class StageSpec:
    kind: str
    params: dict = field(default_factory=dict)


@dataclass
class StageContext:
    """What a stage may use: the experiment's parts (samples per split part), arrays already loaded, the
    network factory, the profile and seed, and the trainer's speed switches."""
    parts: dict
    profile: object
    seed: int
    make_net: object
    arrays: dict
    train_kwargs: dict = field(default_factory=dict)
    progress: bool = True


def _ids_hash(samples) -> str:
    return hashlib.sha1("\n".join(sorted(s.id for s in samples)).encode()).hexdigest()[:12]


def stage_key(spec: StageSpec, ctx: StageContext) -> tuple[str, dict]:
    p = ctx.parts
    inputs = {"kind": spec.kind, "params": spec.params, "dataset": p["dataset"], "split": p["split_name"],
              "content": p["fingerprint"]["content"], "seed": ctx.seed,
              "labeled": _ids_hash(p["labeled"]), "unlabeled": _ids_hash(p["unlabeled"]), "val": _ids_hash(p["val"]),
              "profile": ctx.profile.to_dict(), "code": source_hash()}
    key = hashlib.sha1(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return key, inputs


def stage_dir(spec: StageSpec, ctx: StageContext) -> Path:
    return cache_dir() / "stages" / spec.kind / stage_key(spec, ctx)[0]


def run_stage(spec: StageSpec, ctx: StageContext) -> tuple[dict, dict]:
    """(state_dict of the stage's selected network, info) - from the cache, or computed now."""
    if spec.kind not in STAGES:
        raise ValueError(f"unknown stage {spec.kind!r}; known: {sorted(STAGES)}")
    key, inputs = stage_key(spec, ctx)
    out = cache_dir() / "stages" / spec.kind / key
    with RunLock(out, wait=True):
        done = out / "result.json"
        if not done.is_file():
            clean_tmp(out, quiet=not ctx.progress)
            write_json(out / "inputs.json", inputs)
            seed = ctx.seed * 1000 + zlib.crc32(spec.kind.encode()) % 1000
            devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):
                from .train import seed_everything

                seed_everything(seed)
                info = STAGES[spec.kind](spec, ctx, out)
            write_json(done, {"key": key, "stage_seed": seed, **info})
        info = json.loads(done.read_text())
    state = torch.load(out / "best.pt", map_location="cpu", weights_only=False)["net"]
    return state, {"kind": spec.kind, "dir": str(out), **info}


def _train(method, ctx: StageContext, labeled, out: Path, batch_labeled: int | None = None,
           label: str | None = None) -> dict:
    from .train import Trainer, train_config

    p = ctx.parts
    tc = train_config(ctx.profile, ctx.seed, len(p["labeled"]) + len(p["unlabeled"]), progress=ctx.progress,
                      **ctx.train_kwargs)
    if batch_labeled:
        tc.batch_labeled = batch_labeled
    trainer = Trainer(method, tc, labeled, ctx.arrays["val"], None, out, label=label)
    fit = trainer.fit()
    return {"best_val_dice": fit["best_val_dice"], "epochs": fit["epochs"], "trainer": trainer}


def most_confident(samples: list, labels, frac: float) -> list:
    """The ``frac`` share (rounded up, at least one) of ``samples`` whose pseudo-labels have the highest
    per-image confidence (:meth:`busnb.appg.pipeline.PseudoLabels.confidence`: box score x mask agreement,
    computed from the image alone, so ranking uses no mask), ties broken by id; order of ``samples`` kept."""
    if not 0 < frac <= 1:
        raise ValueError(f"keep_top must be in (0, 1], not {frac!r}")
    if not samples:
        return []
    n = max(1, math.ceil(round(frac * len(samples), 9)))
    ranked = sorted(samples, key=lambda s: (-labels.confidence(s.id), s.id))[:n]
    keep = {s.id for s in ranked}
    return [s for s in samples if s.id in keep]


def _appg_labels(sp: dict, ctx: StageContext):
    """APPG pseudo-labels of the unlabeled pool (``busnb.appg.pipeline``, cached there) for the stage parameters
    ``sp`` (``prompt``, ``min_fg``, ``backend``, ``kwargs``); ``BUSNB_APPG_WORKERS`` processes for the CPU backend."""
    import os

    from .appg.pipeline import PseudoLabelConfig, backend_from_name, dataset_cache_id, generate

    p = ctx.parts
    cfg = PseudoLabelConfig(**({"prompt": sp["prompt"]} if sp.get("prompt") else {}), min_fg=sp.get("min_fg", 0.01))
    backend = backend_from_name(sp.get("backend", "appearance"), **sp.get("kwargs", {}))
    data_id = dataset_cache_id(p["split_name"], fingerprint=p["fingerprint"])
    workers = int(os.environ.get("BUSNB_APPG_WORKERS", "1")) if backend.name == "appearance" else 1
    return generate(p["unlabeled"], backend, cfg, data_id, progress=ctx.progress, workers=workers)


def _kept(labels, samples: list) -> list:
    """The ``samples`` whose APPG pseudo-label the area filter keeps, in their order."""
    kept = set(labels.kept_ids())
    return [s for s in samples if s.id in kept]


def appg_masks(spec: StageSpec, ctx: StageContext, out: Path) -> dict:
    """The APPG pseudo-labels of the unlabeled pool at the profile's size, in the pool's order, those the area
    filter drops left empty: the phrase-conditioned map of ``dusss``'s ``refine_map="appg"``. Nothing is
    trained; its ``best.pt`` holds ``{"masks": uint8 (N,1,S,S), "ids": [...]}``."""
    import numpy as np

    from .atomic import torch_save
    from .data.tensors import SegArrays

    pool = ctx.parts["unlabeled"]
    labels = _appg_labels(spec.params, ctx)
    kept = set(labels.kept_ids())
    targets = {s.id: labels.mask(s.id) if s.id in kept else np.zeros_like(labels.mask(s.id), bool) for s in pool}
    masks = SegArrays(pool, ctx.profile.image_size, targets=targets, progress=ctx.progress).masks
    torch_save({"net": {"masks": masks.to(torch.uint8), "ids": [s.id for s in pool]}}, out / "best.pt")
    return {"n_images": len(pool), "n_kept": sum(s.id in kept for s in pool), "pseudo_cache": str(labels.folder)}


def static_teacher(spec: StageSpec, ctx: StageContext, out: Path) -> dict:
    """T^A: U-Net on labeled + kept APPG pseudo-labels of the unlabeled pool (batch = labeled + unlabeled
    batch of the main stage, same number of steps), selected on validation Dice, scored alone on test."""
    from .data.tensors import SegArrays
    from .methods.base import Supervised

    p, prof, sp = ctx.parts, ctx.profile, spec.params
    labels = _appg_labels(sp, ctx)
    pseudo = _kept(labels, p["unlabeled"])
    if sp.get("keep_top", 1.0) < 1.0:
        pseudo = most_confident(pseudo, labels, sp["keep_top"])
    targets = {s.id: labels.mask(s.id) for s in pseudo}
    train_set = SegArrays(p["labeled"] + pseudo, prof.image_size, targets=targets, progress=ctx.progress)
    r = _train(Supervised(ctx.make_net), ctx, train_set, out, prof.batch_labeled + prof.batch_unlabeled,
               label="static teacher T^A (stage)")
    extra = {"n_pseudo_kept": len(pseudo), "pseudo_cache": str(labels.folder)}
    return {**_score_alone(r, ctx, out, "appg_static_teacher", extra), "n_unlabeled": len(p["unlabeled"])}


def _score_alone(r: dict, ctx: StageContext, out: Path, variant: str, extra: dict | None = None) -> dict:
    """A stage's selected network scored alone on test, once, after its training (``metrics.json`` and
    ``test_per_image.csv`` in the stage folder as ``variant``; the experiment copies them next to the runs that
    used it); the stage's info with its test metrics."""
    from .train import evaluate_and_write

    info = {"best_val_dice": r["best_val_dice"], "epochs": r["epochs"], **(extra or {})}
    res = evaluate_and_write(r["trainer"].load_best(), ctx.parts, ctx.profile.image_size, out, variant, ctx.seed,
                             ctx.profile, info)
    return {**info, "test": res["test"]}


def bcp_pretrain(spec: StageSpec, ctx: StageContext, out: Path) -> dict:
    """BCP stage 1: copy-paste among labeled images, selected on validation Dice."""
    from .methods.classic import BCPPretrain

    r = _train(BCPPretrain(ctx.make_net, **spec.params), ctx, ctx.arrays["labeled"], out,  # params: optimizer
               label="bcp pre-training (stage)")
    return _score_alone(r, ctx, out, "bcp_pretrain")


def vlm_pretrain(spec: StageSpec, ctx: StageContext, out: Path) -> dict:
    """DuSSS step 1: the vision-language model (DCL + SSS) pretrained on the train pool's images and texts
    (``busnb.vlm.pretrain``); ``best.pt`` holds its last epoch (no selection). With ``pool_grounding="appg"``
    the unlabeled pool's APPG pseudo-labels (default phrases and backend, those the area filter keeps; the same
    call as ``static_teacher``'s) are made here and grounded too."""
    from .vlm.pretrain import pretrain_vlm

    pseudo, extra = None, {}
    if spec.params.get("pool_grounding", "none") == "appg":
        from .data.tensors import SegArrays

        labels = _appg_labels({}, ctx)
        pool = _kept(labels, ctx.parts["unlabeled"])
        pseudo = SegArrays(pool, ctx.profile.image_size, targets={s.id: labels.mask(s.id) for s in pool},
                           progress=ctx.progress)
        extra = {"pseudo_cache": str(labels.folder)}
    info = pretrain_vlm(spec.params, ctx.parts, ctx.profile, out, progress=ctx.progress,
                        device=ctx.train_kwargs.get("device", "auto"), pseudo=pseudo)
    return {**info, **extra}


def label_rate(spec: StageSpec, ctx: StageContext, out: Path) -> dict:
    """pi: the foreground rate of the labeled train masks at the profile's size (never val, test or the
    unlabeled pool); the same function the VLM's calibration uses, so the two cannot disagree."""
    from .atomic import torch_save
    from .data.tensors import foreground_rate

    masks = ctx.arrays["labeled"].masks
    pi = foreground_rate(masks)
    torch_save({"net": {"pi": torch.tensor(pi)}}, out / "best.pt")
    return {"pi": pi, "n_images": int(masks.shape[0])}


STAGES = {"static_teacher": static_teacher, "bcp_pretrain": bcp_pretrain, "label_rate": label_rate}
STAGES["vlm_pretrain"] = vlm_pretrain
STAGES["appg_masks"] = appg_masks
