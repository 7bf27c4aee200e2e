"""The one training loop, shared by every method.

* device auto (CUDA / MPS / CPU), mixed precision on CUDA only;
* each step draws ``batch_labeled`` labeled and, for semi-supervised methods,
  ``batch_unlabeled`` unlabeled images; the order is a function of (seed, epoch),
  so a resumed run continues exactly as an uninterrupted one;
* Adam + ReduceLROnPlateau on validation Dice, or a method's own recipe (``Method.optimizer_recipe``:
  SGD with a per-iteration schedule, ``busnb.optim``); the best epoch by **validation**
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
from .augment import augment_batch, check_kind
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
    amp: str | bool = "auto"       # auto: bf16 where supported (CUDA), else fp16 + scaler on CUDA, off on CPU
    channels_last: bool = True     # CUDA only
    resident: bool = True          # training tensors on the device, batches indexed there
    capture: bool = True           # CUDA only: the whole step captured as a CUDA graph (methods with static shapes)
    checkpoint_seconds: float | None = None  # last.pt at most this often (and always after the last epoch);
                                             # None: every epoch on CPU, every 30 s on a GPU (epochs of ~1 s)
    augment: str = "none"         # busnb.augment: none | weak | us, on the device, every method alike
    progress: bool = True
    extra: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (CPU and every CUDA device) from one seed. Called once, at the top of a run."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def rng_state() -> dict:
    """CPU and CUDA generator states (CPU tensors), for a checkpoint."""
    st = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return st


def set_rng_state(st) -> None:
    """Inverse of :func:`rng_state`; accepts the old format (a bare CPU state tensor) too.
    States are moved to the CPU first: ``torch.set_rng_state`` needs a CPU ByteTensor."""
    if torch.is_tensor(st):
        st = {"cpu": st}
    torch.set_rng_state(st["cpu"].cpu().to(torch.uint8))
    if "cuda" in st and torch.cuda.is_available():
        states = [s.cpu().to(torch.uint8) for s in st["cuda"]]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def save_loop_state(path: str | Path, epoch: int, log: list, **parts) -> None:
    """Atomically write a pretraining loop's resume point: each of ``parts`` (name -> object with
    ``state_dict``: model, optimiser, scheduler), the epochs done, the per-epoch log and the RNG states."""
    torch_save({**{k: v.state_dict() for k, v in parts.items()}, "epoch": int(epoch), "log": list(log),
                "rng": rng_state()}, path)


def resume_loop_state(path: str | Path, **parts) -> tuple[int, list]:
    """Inverse of :func:`save_loop_state`: loads ``parts`` and the RNG states from ``path`` and returns
    (epochs done, log); (0, []) when there is no checkpoint yet."""
    path = Path(path)
    if not path.is_file():
        return 0, []
    st = torch.load(path, map_location="cpu", weights_only=False)
    for k, v in parts.items():
        v.load_state_dict(st[k])
    set_rng_state(st["rng"])
    return int(st["epoch"]), list(st["log"])


def amp_dtype(setting, device: torch.device):
    """The autocast dtype for ``amp`` on ``device`` (None: full precision)."""
    if setting in (False, None, "off", "fp32"):
        return None
    if device.type != "cuda":
        return None
    if setting in ("auto", True):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if setting == "bf16":
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    raise ValueError(f"amp must be auto, bf16, fp16 or off, not {setting!r}")


def _stream(n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` indices from successive seeded permutations of range(n)."""
    reps = math.ceil(count / n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:count]


class Trainer:
    """Trains ``method`` with Adam + ReduceLROnPlateau (on validation Dice), keeps ``best.pt`` (the evaluated
    network of the best validation epoch) and ``last.pt`` (what resume needs) in ``out_dir``.

    Speed switches (``TrainConfig``), all with the same semantics as the plain loop: ``amp`` (bf16 autocast on
    GPUs that support it: no loss scaler, no host synchronisation), ``channels_last``, ``resident`` (image and
    mask tensors live on the device; a batch is an index into them), ``capture`` (forward, backward, optimiser
    step and ``after_step`` recorded once as a CUDA graph and replayed; for methods with ``capturable = True``).
    """

    def __init__(self, method, cfg: TrainConfig, labeled: SegArrays, val: SegArrays,
                 unlabeled: SegArrays | None = None, out_dir: str | Path = "runs/train", callbacks=(),
                 label: str | None = None):
        if method.needs_unlabeled and (unlabeled is None or len(unlabeled) == 0):
            raise ValueError(f"method '{method.name}' needs an unlabeled set")
        if len(labeled) == 0:
            raise ValueError(f"method '{method.name}': the labeled set is empty")
        if len(val) == 0:
            raise ValueError(f"method '{method.name}': the validation set is empty; model selection needs at "
                             "least one validation image (see `busnb splits`)")
        self.cfg, self.method = cfg, method
        self.label = label or method.name  # the progress bar's name (a stage names itself, not its method)
        check_kind(cfg.augment)
        self.out = Path(out_dir)
        self.device = pick_device(cfg.device)
        cuda = self.device.type == "cuda"
        self.dtype = amp_dtype(cfg.amp, self.device)
        self.amp = self.dtype is not None
        self.channels_last = bool(cfg.channels_last and cuda)
        self.method.to(self.device)
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        recipe = method.optimizer_recipe()  # None: shared Adam + ReduceLROnPlateau; else SGD per iteration
        self.capture = bool(cfg.capture and cuda and getattr(method, "capturable", False)
                            and self.dtype != torch.float16 and recipe is None)
        res_dev = self.device if cfg.resident else torch.device("cpu")
        self.labeled = labeled.to(res_dev)
        self.unlabeled = unlabeled.to(res_dev) if unlabeled is not None and method.needs_unlabeled else None
        self.val = val.to(res_dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.callbacks = list(callbacks)
        n_pool = len(labeled) + (len(unlabeled) if self.unlabeled is not None else 0)
        per_step = cfg.batch_labeled + (cfg.batch_unlabeled if method.needs_unlabeled else 0)
        self.steps = cfg.steps_per_epoch or max(1, math.ceil(n_pool / per_step))
        method.total_steps = cfg.epochs * self.steps  # ramp-up horizons; the poly schedule's length
        self.iter_sched = None
        if recipe is None:
            lr = torch.tensor(cfg.lr, device=self.device) if self.capture else cfg.lr
            self.opt = torch.optim.Adam(method.trainable(), lr=lr, weight_decay=cfg.weight_decay,
                                        capturable=self.capture, foreach=cuda or None)
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
        else:  # the method's published recipe (busnb.optim); not captured: its lr changes every step
            from .optim import build_optimizer

            self.opt, self.iter_sched = build_optimizer(recipe, method.trainable(), method.total_steps)
            self.sched = self.iter_sched
        self.epoch, self.best, self.history = 0, -1.0, []
        self._graph = None
        self.ckpt_every = cfg.checkpoint_seconds if cfg.checkpoint_seconds is not None else (30.0 if cuda else 0.0)
        self._last_ckpt = time.time()

    # -- checkpoints ---------------------------------------------------------
    def _state(self) -> dict:
        return {"method": self.method.checkpoint_state(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "best": self.best, "history": self.history,
                "rng": rng_state(), "cfg": asdict(self.cfg)}

    def resume(self) -> bool:
        path = self.out / "last.pt"
        if not path.is_file():
            return False
        st = torch.load(path, map_location="cpu", weights_only=False)  # RNG states must stay on the CPU
        self.method.load_checkpoint_state(st["method"])
        self.opt.load_state_dict(st["opt"])
        if self.capture:  # capturable Adam keeps lr and step on the device
            for g in self.opt.param_groups:
                g["lr"] = torch.as_tensor(g["lr"], device=self.device, dtype=torch.float32)
        self.sched.load_state_dict(st["sched"])
        self.scaler.load_state_dict(st["scaler"])
        self.epoch, self.best, self.history = st["epoch"], st["best"], st["history"]
        set_rng_state(st["rng"])
        return True

    # -- loop ----------------------------------------------------------------
    def _indices(self, epoch: int):
        """(labeled, unlabeled) index tensors of shape (steps, batch) for an epoch, on the data's device."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        li = _stream(len(self.labeled), self.steps * self.cfg.batch_labeled, gen).view(self.steps, -1)
        ui = None
        if self.unlabeled is not None:
            ui = _stream(len(self.unlabeled), self.steps * self.cfg.batch_unlabeled, gen).view(self.steps, -1)
        dev = self.labeled.images.device
        return li.to(dev), (ui.to(dev) if ui is not None else None)

    def _batch(self, arrays, idx) -> dict:
        b = arrays.batch(idx)
        out = {}
        for k, v in b.items():
            if torch.is_tensor(v):
                v = v.to(self.device, non_blocking=True)
                if self.channels_last and v.dim() == 4:
                    v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def _autocast(self, cache: bool = True):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp, cache_enabled=cache)

    def _step_body(self, bl, bu, step, cache: bool = True):
        """Forward, backward, optimiser step, ``after_step``: the one step, run eagerly or recorded into the
        CUDA graph (there the loss scaler is disabled, so it is a plain ``opt.step()``). Batches are
        augmented first (``cfg.augment``, :func:`busnb.augment.augment_batch`)."""
        if self.cfg.augment != "none":
            bl, bu = augment_batch(bl, self.cfg.augment), augment_batch(bu, self.cfg.augment)
        with self._autocast(cache):
            loss, terms = self.method.loss(bl, bu, step)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.method.after_step(step)
        return loss.detach(), {k: v.detach() for k, v in terms.items()}

    def train_step(self, li_s, ui_s, step: int):
        """One optimiser step on the batch indexed by ``li_s`` / ``ui_s`` (rows of :meth:`_indices`):
        replays the captured graph when there is one, else runs :meth:`_step_body` eagerly."""
        if self._graph is not None:
            self._sl.copy_(li_s)
            if self._su is not None:
                self._su.copy_(ui_s)
            self._step_t.fill_(step)
            self._graph.replay()
            return self._g_out
        self.opt.zero_grad(set_to_none=True)
        bl = self._batch(self.labeled, li_s)
        bu = self._batch(self.unlabeled, ui_s) if ui_s is not None else None
        out = self._step_body(bl, bu, step)
        if self.iter_sched is not None:  # a method's recipe: the learning rate of the next step
            self.iter_sched.step()
        return out

    # captured step -------------------------------------------------------------
    def _build_graph(self, li, ui):
        """Record forward + backward + Adam + after_step once, reading its batch through static index buffers
        and its step count from a device scalar. Warm-up iterations are undone afterwards (parameters, buffers,
        optimiser state restored in place), so training continues exactly where it stood."""
        dev = self.device
        self._sl = li[0].clone()
        self._su = ui[0].clone() if ui is not None else None
        self._step_t = torch.zeros((), device=dev, dtype=torch.float32)
        snap_rng = rng_state()  # warm-up draws random numbers too: restored below, so capture changes nothing
        snap_m = {k: v.detach().clone() for k, v in self.method.state_dict().items()}
        had_state = len(self.opt.state) > 0
        snap_o = {id(p): {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()}
                  for p, st in self.opt.state.items()}

        def body():
            bl = self._batch(self.labeled, self._sl)
            bu = self._batch(self.unlabeled, self._su) if self._su is not None else None
            return self._step_body(bl, bu, self._step_t, cache=False)

        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self.opt.zero_grad(set_to_none=True)
                body()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            self._g_out = body()
        # undo the warm-up: same tensors, old values
        with torch.no_grad():
            for k, v in self.method.state_dict().items():
                v.copy_(snap_m[k])
            for p, st in self.opt.state.items():
                old = snap_o.get(id(p)) if had_state else None
                for k, v in st.items():
                    if torch.is_tensor(v):
                        v.copy_(old[k]) if old is not None else v.zero_()
        set_rng_state(snap_rng)
        self._graph = g

    def fit(self, resume: bool = True) -> dict:
        """Train from ``last.pt`` if present (``resume``), else from the networks as built. Seeding is the
        caller's job (once, at the top of a run: :func:`seed_everything`); the data order is a function of
        (seed, epoch) and the RNG state is saved in ``last.pt``, so a resumed run continues exactly."""
        from .progress import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        if resume and self.resume() and self.cfg.progress and self.epoch < self.cfg.epochs:
            print(f"{self.out}: resuming from last.pt after epoch {self.epoch} of {self.cfg.epochs}", flush=True)
        write_json(self.out / "config.json", asdict(self.cfg))
        bar = tqdm(range(self.epoch, self.cfg.epochs), desc=self.label, disable=not self.cfg.progress,
                   initial=self.epoch, total=self.cfg.epochs)
        for epoch in bar:
            t0, logs = time.time(), {}
            self.method.train()
            li, ui = self._indices(epoch)
            if self.capture and self._graph is None:
                self._build_graph(li, ui)
            for s in range(self.steps):
                loss, terms = self.train_step(li[s], ui[s] if ui is not None else None, epoch * self.steps + s)
                for k, v in {"loss": loss, **terms}.items():  # summed on device: no sync per step
                    logs[k] = logs.get(k, 0.0) + v.float()
            logs = {k: float(v) / self.steps for k, v in logs.items()}
            val, empty = self.validate_stats()
            self._sched_step(val)
            self.epoch = epoch + 1
            row = {"epoch": self.epoch, "val_dice": val, "val_empty": empty, "lr": float(self.opt.param_groups[0]["lr"]),
                   "seconds": round(time.time() - t0, 2), **logs}
            warm = max(2, self.cfg.epochs // 5)  # epochs in which a young network may still predict nothing
            if empty >= 0.5 and self.epoch > warm and not any(
                    r.get("val_empty", 0) >= 0.5 for r in self.history if r["epoch"] > warm):  # once per run
                tqdm.write(f"warning: {self.method.name} epoch {self.epoch}: the prediction is empty on "
                           f"{empty:.0%} of validation images (collapse to background?); best.pt keeps the "
                           f"best validation epoch so far ({self.best:.3f})")
            self.history.append(row)
            if val > self.best:
                self.best = val
                torch_save({"net": _cpu_state(self.method.eval_net()), "epoch": self.epoch, "val_dice": val},
                           self.out / "best.pt")
            if self.epoch == self.cfg.epochs or time.time() - self._last_ckpt >= self.ckpt_every:
                torch_save(self._state(), self.out / "last.pt")
                write_json(self.out / "history.json", self.history)
                self._last_ckpt = time.time()
            bar.set_postfix(loss=f"{logs.get('loss', 0):.3f}", val_dice=f"{val:.3f}", best=f"{self.best:.3f}")
            for cb in self.callbacks:
                cb(self, row)
        return {"best_val_dice": self.best, "epochs": self.epoch, "history": self.history}

    def _sched_step(self, val: float) -> None:
        """ReduceLROnPlateau; with a captured step the learning rate is a device tensor updated in place.
        Nothing for a method's own recipe (its schedule is stepped per iteration in :meth:`train_step`)."""
        if self.iter_sched is not None:
            return
        before = [g["lr"] for g in self.opt.param_groups]
        self.sched.step(val)
        for g, old in zip(self.opt.param_groups, before):
            if torch.is_tensor(old) and g["lr"] is not old:
                new = float(g["lr"])
                old.fill_(new)
                g["lr"] = old

    @torch.no_grad()
    def validate_stats(self, batch: int = 64) -> tuple[float, float]:
        """(mean per-image Dice, fraction of images whose thresholded prediction is empty) on the validation
        split at training resolution; batched on the device, one synchronisation at the end. Validation arrays
        with an ``infer(net, x)`` (3D volumes, ``busnb.vol.VolumeArrays``: sliding windows) predict through it."""
        net = self.method.eval_net()
        was = net.training
        net.eval()
        infer = getattr(self.val, "infer", None)
        dices, empty = [], []
        for i in range(0, len(self.val), batch):
            b = self._batch(self.val, torch.arange(i, min(i + batch, len(self.val)), device=self.val.images.device))
            with self._autocast():
                prob = torch.sigmoid((infer(net, b["image"]) if infer else net(b["image"])).float())
            dices.append(soft_dice_batch(prob, b["mask"]))
            empty.append((prob > 0.5).flatten(1).sum(1).eq(0))
        net.train(was)
        d, e = torch.cat(dices).mean(), torch.cat(empty).float().mean()
        return float(d), float(e)

    def load_best(self):
        st = torch.load(self.out / "best.pt", map_location="cpu", weights_only=False)
        self.method.eval_net().load_state_dict(st["net"])
        return self.method.eval_net()


def _cpu_state(module) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


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
    from .progress import tqdm

    rows = []
    for s in tqdm(samples, desc="evaluate", disable=not progress):
        img, gt = load_pair(s)
        prob = predict_prob(net, [img], size)[0]
        rows.append({"id": s.id, "class": s.cls, **score(prob > threshold, gt, empty_policy)})
    return rows


def train_config(profile, seed: int, n_train: int | None = None, **kw) -> TrainConfig:
    """The trainer's settings for a profile. Every method gets the same number of optimiser steps per epoch:
    one pass over the whole train pool (labeled + unlabeled) at ``batch_labeled + batch_unlabeled`` images a
    step, so a supervised baseline is not trained for fewer iterations than a semi-supervised method."""
    steps = profile.steps_per_epoch
    if steps is None and n_train:
        steps = max(1, math.ceil(n_train / (profile.batch_labeled + profile.batch_unlabeled)))
    return TrainConfig(epochs=profile.epochs, batch_labeled=profile.batch_labeled,
                       batch_unlabeled=profile.batch_unlabeled, steps_per_epoch=steps,
                       lr=profile.lr, plateau_patience=profile.plateau_patience, seed=seed,
                       augment=getattr(profile, "augment", "none"), **kw)


def evaluate_and_write(net, parts: dict, size: int, out, variant: str, seed: int, profile,
                       extra: dict, progress: bool = False) -> dict:
    """Score ``net`` on the test split (once, after training) and write ``test_per_image.csv`` and
    ``metrics.json`` (with provenance: code version, dataset fingerprint, profile, device)."""
    from .metrics import summarize
    from .provenance import provenance

    rows = evaluate(net, parts["test"], size, progress=progress)
    save_table(rows, Path(out) / "test_per_image.csv")
    dev = next(net.parameters()).device
    result = {"method": variant, "variant": variant, "dataset": parts["dataset"], "ratio": parts["ratio"],
              "seed": seed, "profile": profile.name, "n_labeled": len(parts["labeled"]),
              "n_unlabeled": len(parts["unlabeled"]), "n_test": len(parts["test"]),
              "split": parts["split_name"], "fingerprint": parts["fingerprint"],
              "test_resolution": "original", "test": summarize(rows), "provenance": provenance(dev), **extra}
    write_json(Path(out) / "metrics.json", result)
    return result


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
