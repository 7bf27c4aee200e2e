"""The one training loop, shared by every method.

* device auto (CUDA / MPS / CPU), mixed precision on CUDA only;
* each step draws ``batch_labeled`` labeled and, for semi-supervised methods,
  ``batch_unlabeled`` unlabeled images; the order is a function of (seed, epoch),
  so a resumed run continues exactly as an uninterrupted one;
* Adam + ReduceLROnPlateau on validation Dice; the best epoch by **validation**
  Dice is kept in ``best.pt`` (the test split is never looked at here);
* ``last.pt`` is written atomically after every epoch and resumed from automatically.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import torch_save, write_json
from .data.io import load_pair
from .data.tensors import SegArrays, resize_pair
from .metrics import score, soft_dice_batch
from .models import pick_device


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_labeled: int = 4
    batch_unlabeled: int = 4
    steps_per_epoch: int | None = None  # None: one pass over labeled + unlabeled pool
    lr: float = 1e-3
    weight_decay: float = 0.0
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    progress: bool = True
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stream(n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` indices from successive seeded permutations of range(n)."""
    reps = math.ceil(count / n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:count]


class Trainer:
    def __init__(self, method, cfg: TrainConfig, labeled: SegArrays, val: SegArrays,
                 unlabeled: SegArrays | None = None, out_dir: str | Path = "runs/train", callbacks=()):
        if method.needs_unlabeled and (unlabeled is None or len(unlabeled) == 0):
            raise ValueError(f"method '{method.name}' needs an unlabeled set")
        self.cfg, self.method = cfg, method
        self.labeled, self.unlabeled, self.val = labeled, unlabeled, val
        self.out = Path(out_dir)
        self.device = pick_device(cfg.device)
        self.method.to(self.device)
        self.amp = cfg.amp and self.device.type == "cuda"
        self.opt = torch.optim.Adam(method.trainable(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.callbacks = list(callbacks)
        n_pool = len(labeled) + (len(unlabeled) if (method.needs_unlabeled and unlabeled) else 0)
        per_step = cfg.batch_labeled + (cfg.batch_unlabeled if method.needs_unlabeled else 0)
        self.steps = cfg.steps_per_epoch or max(1, math.ceil(n_pool / per_step))
        self.epoch, self.best, self.history = 0, -1.0, []

    # -- checkpoints ---------------------------------------------------------
    def _state(self) -> dict:
        return {"method": self.method.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "best": self.best, "history": self.history,
                "rng": torch.get_rng_state(), "cfg": asdict(self.cfg)}

    def resume(self) -> bool:
        path = self.out / "last.pt"
        if not path.is_file():
            return False
        st = torch.load(path, map_location=self.device, weights_only=False)
        self.method.load_state_dict(st["method"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        self.scaler.load_state_dict(st["scaler"])
        self.epoch, self.best, self.history = st["epoch"], st["best"], st["history"]
        torch.set_rng_state(st["rng"])
        return True

    # -- loop ----------------------------------------------------------------
    def _batches(self, epoch: int):
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        li = _stream(len(self.labeled), self.steps * self.cfg.batch_labeled, gen).view(self.steps, -1)
        ui = None
        if self.method.needs_unlabeled:
            ui = _stream(len(self.unlabeled), self.steps * self.cfg.batch_unlabeled, gen).view(self.steps, -1)
        for s in range(self.steps):
            bl = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.labeled.batch(li[s]).items()}
            bu = None
            if ui is not None:
                bu = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.unlabeled.batch(ui[s]).items()}
            yield bl, bu

    def fit(self, resume: bool = True) -> dict:
        from tqdm.auto import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        if not (resume and self.resume()):
            seed_everything(self.cfg.seed)
        write_json(self.out / "config.json", asdict(self.cfg))
        bar = tqdm(range(self.epoch, self.cfg.epochs), desc=f"{self.method.name}", disable=not self.cfg.progress,
                   initial=self.epoch, total=self.cfg.epochs)
        for epoch in bar:
            t0, logs = time.time(), {}
            self.method.train()
            for s, (bl, bu) in enumerate(self._batches(epoch)):
                step = epoch * self.steps + s
                with torch.autocast(self.device.type, enabled=self.amp):
                    loss, terms = self.method.loss(bl, bu, step)
                self.opt.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
                self.method.after_step(step)
                for k, v in {"loss": loss.detach(), **terms}.items():  # summed on device: no sync per step
                    logs[k] = logs.get(k, 0.0) + v.detach().float()
            logs = {k: float(v) / self.steps for k, v in logs.items()}
            val, empty = self.validate_stats()
            self.sched.step(val)
            self.epoch = epoch + 1
            row = {"epoch": self.epoch, "val_dice": val, "val_empty": empty, "lr": self.opt.param_groups[0]["lr"],
                   "seconds": round(time.time() - t0, 2), **logs}
            if empty >= 0.5 and not any(r.get("val_empty", 0) >= 0.5 for r in self.history):
                tqdm.write(f"warning: {self.method.name} epoch {self.epoch}: the prediction is empty on "
                           f"{empty:.0%} of validation images (collapse to background?); best.pt keeps the "
                           f"best validation epoch so far ({self.best:.3f})")
            self.history.append(row)
            if val > self.best:
                self.best = val
                torch_save({"net": self.method.eval_net().state_dict(), "epoch": self.epoch, "val_dice": val},
                           self.out / "best.pt")
            torch_save(self._state(), self.out / "last.pt")
            write_json(self.out / "history.json", self.history)
            bar.set_postfix(loss=f"{logs.get('loss', 0):.3f}", val_dice=f"{val:.3f}", best=f"{self.best:.3f}")
            for cb in self.callbacks:
                cb(self, row)
        return {"best_val_dice": self.best, "epochs": self.epoch, "history": self.history}

    @torch.no_grad()
    def validate_stats(self) -> tuple[float, float]:
        """(mean per-image Dice, fraction of images whose thresholded prediction is empty) on the validation
        split at training resolution."""
        net = self.method.eval_net()
        was = net.training
        net.eval()
        dices, empty = [], []
        for i in range(0, len(self.val), 16):
            b = self.val.batch(range(i, min(i + 16, len(self.val))))
            with torch.autocast(self.device.type, enabled=self.amp):
                prob = torch.sigmoid(net(b["image"].to(self.device)).float())
            dices.append(soft_dice_batch(prob, b["mask"].to(self.device)).cpu())
            empty.append((prob > 0.5).flatten(1).sum(1).eq(0).cpu())
        net.train(was)
        return float(torch.cat(dices).mean()), float(torch.cat(empty).float().mean())

    def load_best(self):
        st = torch.load(self.out / "best.pt", map_location=self.device, weights_only=False)
        self.method.eval_net().load_state_dict(st["net"])
        return self.method.eval_net()


@torch.no_grad()
def predict_prob(net, images: list[np.ndarray], size: int, device=None, batch: int = 16) -> list[np.ndarray]:
    """Foreground probability of each uint8 image, at the image's own resolution."""
    device = device or next(net.parameters()).device
    was = net.training
    net.eval()
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i: i + batch]
        x = torch.stack([torch.from_numpy(resize_pair(im, None, size)[0].copy()) for im in chunk])[:, None]
        prob = torch.sigmoid(net(x.float().div(255).to(device)).float())
        for im, p in zip(chunk, prob):
            out.append(F.interpolate(p[None], size=im.shape, mode="bilinear", align_corners=False)[0, 0].cpu().numpy())
    net.train(was)
    return out


def evaluate(net, samples, size: int, empty_policy: str = "diagonal", progress: bool = False,
             threshold: float = 0.5) -> list[dict]:
    """Per-image metrics at each image's original resolution (prediction upsampled bilinearly)."""
    from tqdm.auto import tqdm

    rows = []
    for s in tqdm(samples, desc="evaluate", disable=not progress):
        img, gt = load_pair(s)
        prob = predict_prob(net, [img], size)[0]
        rows.append({"id": s.id, "class": s.cls, **score(prob > threshold, gt, empty_policy)})
    return rows


def save_table(rows: list[dict], path: str | Path) -> None:
    """Per-image table as CSV (atomic)."""
    import csv
    import io

    from .atomic import atomic_path

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def load_json(path) -> dict:
    return json.loads(Path(path).read_text())
