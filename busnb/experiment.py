"""One experiment = dataset + split + method (or named variant) + profile -> trained net, test table, metrics.

This is what ``05_train.ipynb`` and ``busnb train`` call; everything it writes lands in
``out_dir``: ``config.json``, ``history.json``, ``best.pt``, ``last.pt``,
``test_per_image.csv`` and ``metrics.json``. A finished run is not retrained: calling it
again resumes from ``last.pt`` (nothing left to do) and re-scores the selected network.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from . import splits as S
from .atomic import write_json
from .config import Profile
from .data import load_dataset
from .data.tensors import SegArrays
from .methods import build_method
from .metrics import summarize
from .models import build_model
from .train import TrainConfig, Trainer, evaluate, save_table


def prepare(profile: Profile, dataset: str | None = None, ratio: float = 2.5, seed: int = 0, root=None) -> dict:
    """Samples of each part (labeled, unlabeled, val, test) for a dataset, ratio and split seed."""
    dataset = dataset or profile.dataset
    samples = load_dataset(dataset, root=root, phantom=profile.phantom)
    split_name = dataset if root is None else f"{dataset}-{Path(root).name}"
    splits = S.load_or_make(split_name, samples, seed=seed)
    return {"dataset": dataset, "ratio": float(ratio), "seed": seed, "samples": samples, "splits": splits,
            **S.subsets(samples, splits, ratio)}


def run_name(variant: str, dataset: str, ratio: float, seed: int) -> str:
    return f"{variant.replace('+', 'plus_')}-{dataset}-r{ratio:g}-s{seed}"


def net_factory(profile: Profile):
    return partial(build_model, profile.encoder, profile.encoder_weights, profile.decoder_channels)


def train_config(profile: Profile, seed: int, n_train: int | None = None, **kw) -> TrainConfig:
    """Every method gets the same number of optimiser steps per epoch: one pass over the
    whole train pool (labeled + unlabeled) at ``batch_labeled + batch_unlabeled`` images a step,
    so a supervised baseline is not trained for fewer iterations than a semi-supervised method."""
    steps = profile.steps_per_epoch
    if steps is None and n_train:
        steps = max(1, math.ceil(n_train / (profile.batch_labeled + profile.batch_unlabeled)))
    return TrainConfig(epochs=profile.epochs, batch_labeled=profile.batch_labeled,
                       batch_unlabeled=profile.batch_unlabeled, steps_per_epoch=steps,
                       lr=profile.lr, plateau_patience=profile.plateau_patience, seed=seed, **kw)


def evaluate_and_write(net, parts: dict, size: int, out: Path, variant: str, seed: int, profile: Profile,
                       extra: dict, progress: bool = False) -> dict:
    """Score ``net`` on the test split (once, after training) and write the table and metrics.json."""
    rows = evaluate(net, parts["test"], size, progress=progress)
    save_table(rows, Path(out) / "test_per_image.csv")
    result = {"method": variant, "variant": variant, "dataset": parts["dataset"], "ratio": parts["ratio"],
              "seed": seed, "profile": profile.name, "n_labeled": len(parts["labeled"]),
              "n_unlabeled": len(parts["unlabeled"]), "test": summarize(rows), **extra}
    write_json(Path(out) / "metrics.json", result)
    return result


def run_experiment(profile: Profile, method: str = "supervised", dataset: str | None = None, ratio: float = 2.5,
                   seed: int = 0, out_dir: str | Path = "runs/train", root=None, method_kwargs: dict | None = None,
                   progress: bool = True, parts: dict | None = None) -> dict:
    """Train ``method`` (a method or variant name) on the ``ratio`` % split, select on val, score on test."""
    parts = parts or prepare(profile, dataset, ratio, seed, root)
    out = Path(out_dir)
    size = profile.image_size
    m = build_method(method, net_factory(profile), **(method_kwargs or {}))
    if m.needs_unlabeled and not parts["unlabeled"]:
        raise ValueError(f"'{method}' is semi-supervised but ratio {ratio:g} % leaves no unlabeled images; "
                         "train 'supervised' for the fully supervised upper bound.")
    labeled = SegArrays(parts["labeled"], size, progress=progress)
    val = SegArrays(parts["val"], size, progress=progress)
    unlabeled = SegArrays(parts["unlabeled"], size, progress=progress) if m.needs_unlabeled else None
    if hasattr(m, "prepare"):
        m.prepare(parts=parts, profile=profile, seed=seed, out_dir=out, progress=progress,
                  arrays={"labeled": labeled, "val": val})
    n_train = len(parts["labeled"]) + len(parts["unlabeled"])
    trainer = Trainer(m, train_config(profile, seed, n_train, progress=progress), labeled, val, unlabeled, out)
    fit = trainer.fit()
    net = trainer.load_best()
    extra = {"base_method": m.name, "best_val_dice": fit["best_val_dice"], "epochs": fit["epochs"],
             "method_kwargs": method_kwargs or {}, "options": getattr(m, "opts", {}),
             "stage1": getattr(m, "stage1", None), "device": str(trainer.device)}
    return evaluate_and_write(net, parts, size, out, method, seed, profile, extra, progress)


def load_trained(out_dir: str | Path, profile: Profile, method: str, method_kwargs: dict | None = None):
    """The method object of a finished run with its last state (teachers included), in eval mode."""
    import torch

    m = build_method(method, net_factory(profile), **(method_kwargs or {}))
    st = torch.load(Path(out_dir) / "last.pt", map_location="cpu", weights_only=False)
    m.load_state_dict(st["method"])
    best = torch.load(Path(out_dir) / "best.pt", map_location="cpu", weights_only=False)
    m.eval_net().load_state_dict(best["net"])
    return m.eval()
