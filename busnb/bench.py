"""``busnb bench``: milliseconds per training step of each method on the current device.

For every method three numbers, same networks, same batch (``batch_labeled`` + ``batch_unlabeled`` of the
profile), random images of the profile's size (speed does not depend on content):

* ``trainer`` - the trainer as configured (on CUDA: bf16 autocast, channels_last, tensors resident on the
  device, the step captured as a CUDA graph when the method allows it);
* ``plain`` - a plain fp32 eager loop of the same method: batches indexed on the CPU and copied each step,
  no autocast, no capture (the trainer as it was before these switches);
* ``reference`` (one row) - the supervised U-Net step at its leanest: static input tensors, BCE + Dice,
  capturable Adam, bf16 + channels_last, captured once as a CUDA graph and replayed (on CPU: the same step
  eager fp32). It is the limit the trainer's supervised step is compared with.

Warm-up steps (and the graph capture) are excluded from the timing; the device is synchronised before and
after the timed steps. Results: a table on stdout and ``bench.json``.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

METHODS = ("supervised", "dual_teacher", "mean_teacher", "cps", "bcp", "dual_uncertainty")


def random_arrays(n: int, size: int, seed: int = 0):
    """SegArrays of ``n`` random uint8 images with centred disc masks (speed does not depend on content)."""
    from .data.tensors import SegArrays

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    r = torch.rand(n, 1, 1, 1, generator=g) * 0.4 + 0.2
    return SegArrays.from_tensors(images, (yy ** 2 + xx ** 2)[None, None] < r ** 2)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_trainer(method_name: str, profile, steps: int, warmup: int, device: str = "auto", plain: bool = False,
                 seed: int = 0) -> float:
    """ms per step of the trainer's loop body for ``method_name`` (no validation, no checkpoints)."""
    import tempfile

    from .experiment import net_factory
    from .methods import build_method
    from .train import Trainer, TrainConfig

    torch.manual_seed(seed)
    m = build_method(method_name, net_factory(profile))
    n = 64
    lab, unl, val = (random_arrays(n, profile.image_size, s) for s in (1, 2, 3))
    kw = dict(amp="off", channels_last=False, resident=False, capture=False) if plain else {}
    cfg = TrainConfig(epochs=1, batch_labeled=profile.batch_labeled, batch_unlabeled=profile.batch_unlabeled,
                      steps_per_epoch=steps + warmup, lr=profile.lr, seed=seed, device=device, progress=False, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(m, cfg, lab, val, unl if m.needs_unlabeled else None, tmp)
        m.train()
        li, ui = tr._indices(0)
        if tr.capture:
            tr._build_graph(li, ui)

        def one(s):
            return tr.train_step(li[s], ui[s] if ui is not None else None, s)

        for s in range(warmup):
            one(s)
        _sync(tr.device)
        t0 = time.perf_counter()
        for s in range(warmup, warmup + steps):
            one(s)
        _sync(tr.device)
        return (time.perf_counter() - t0) / steps * 1000


def time_reference(profile, steps: int, warmup: int, device: str = "auto") -> float:
    """ms per step of the leanest supervised step (see module docstring)."""
    from .experiment import net_factory
    from .losses import bce_dice
    from .models import pick_device

    dev = pick_device(device)
    torch.manual_seed(0)
    net = net_factory(profile)().to(dev)
    b = profile.batch_labeled + profile.batch_unlabeled
    x = torch.rand(b, 1, profile.image_size, profile.image_size, device=dev)
    y = (torch.rand_like(x) > 0.7).float()
    cuda = dev.type == "cuda"
    if cuda:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=torch.tensor(1e-4, device=dev) if cuda else 1e-4, capturable=cuda)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda, cache_enabled=False):
            loss = bce_dice(net(x), y)
        loss.backward()
        opt.step()
        return loss

    if not cuda:
        for _ in range(warmup):
            opt.zero_grad(set_to_none=True)
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            step()
        return (time.perf_counter() - t0) / steps * 1000
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        step()
    for _ in range(warmup):
        g.replay()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        g.replay()
    _sync(dev)
    return (time.perf_counter() - t0) / steps * 1000


def bench(profile, methods=METHODS, steps: int | None = None, warmup: int | None = None, device: str = "auto",
          out: str | Path | None = None, progress: bool = True) -> list[dict]:
    from .models import pick_device
    from .provenance import device_name

    dev = pick_device(device)
    steps = steps or (50 if dev.type == "cuda" else 3)
    warmup = warmup if warmup is not None else (10 if dev.type == "cuda" else 1)
    rows = []
    ref = time_reference(profile, steps, warmup, device)
    rows.append({"method": "reference (captured supervised step)", "trainer_ms": None, "plain_ms": round(ref, 2)})
    for name in methods:
        t = time_trainer(name, profile, steps, warmup, device)
        p = time_trainer(name, profile, steps, warmup, device, plain=True)
        rows.append({"method": name, "trainer_ms": round(t, 2), "plain_ms": round(p, 2),
                     "speedup": round(p / t, 2), "x_reference": round(t / ref, 2)})
        if progress:
            print(f"{name:18s} trainer {t:8.2f} ms  plain fp32 eager {p:8.2f} ms", flush=True)
    sup = next(r["trainer_ms"] for r in rows if r["method"] == "supervised") if "supervised" in methods else None
    for r in rows:
        if sup and r["trainer_ms"]:
            r["x_supervised"] = round(r["trainer_ms"] / sup, 2)
    result = {"profile": profile.name, "image_size": profile.image_size, "encoder": profile.encoder,
              "batch": profile.batch_labeled + profile.batch_unlabeled, "steps": steps, "warmup": warmup,
              "device": device_name(dev), "torch": torch.__version__, "rows": rows}
    if out:
        from .atomic import write_json

        write_json(out, result)
    return rows if not out else result["rows"]


def cmd_bench(a) -> int:
    import pandas as pd

    from .config import check_overrides, get_profile
    from .cli import _kv

    prof = get_profile(a.profile, **check_overrides(a.profile, _kv(a.set)))
    out = Path(a.out)
    rows = bench(prof, a.methods, a.steps, a.warmup, a.device or "auto", out)
    print(pd.DataFrame(rows).to_markdown(index=False))
    print(f"written to {out}")
    return 0


def add_parsers(sub) -> None:
    b = sub.add_parser("bench", help="ms per training step of each method (trainer vs plain fp32 eager)")
    b.add_argument("--profile", default="smoke", help="profile whose networks and batch sizes are timed (default: smoke)")
    b.add_argument("--methods", nargs="+", default=list(METHODS), help="methods to time (default: all)")
    b.add_argument("--steps", type=int, help="timed steps per method (default: 50 on a GPU, 3 on a CPU)")
    b.add_argument("--warmup", type=int, help="untimed steps first (default: 10 on a GPU, 1 on a CPU)")
    b.add_argument("--device", help="cpu, cuda, ... (default: auto)")
    b.add_argument("--set", action="append", help="profile override key=value")
    b.add_argument("--out", default="bench.json", help="table file (default: bench.json)")
    b.set_defaults(fn=cmd_bench)


__all__ = ["bench", "time_trainer", "time_reference", "METHODS"]
