"""A method is a set of networks plus a loss made of named terms; the trainer does the rest.

Subclasses implement :meth:`Method.loss` returning the total loss and a dict of its
terms (for logging). Networks not meant to be optimised (EMA or frozen teachers) are
registered as modules but left out of :meth:`trainable`, so the optimiser never updates
them; :meth:`after_step` updates them (e.g. EMA).

Some methods need a *stage* before their main loop (a static teacher trained on pseudo-labels, a
pre-training). A method only declares it (:meth:`Method.stages`, a list of :class:`busnb.stages.StageSpec`)
and receives its result (:meth:`Method.attach`); the experiment runs each stage through the one trainer
and caches it by its inputs (``busnb.stages``). Methods never import the experiment.

``step`` passed to :meth:`Method.loss` and :meth:`Method.after_step` is an int in the eager loop and a
0-dim device tensor when the trainer replays a captured CUDA graph; ramp-ups and EMA rates are written
with tensor-safe arithmetic (:func:`sigmoid_rampup`, :func:`ema_update`) so both work. A method whose loss
has data-dependent shapes or host synchronisation sets ``capturable = False``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..losses import bce_dice


class Method(nn.Module):
    name = "base"
    needs_unlabeled = False
    capturable = True          # static shapes, no host sync in loss/after_step: the trainer may capture it
    frozen: tuple = ()         # submodules restored by attach() from a stage: not stored in last.pt
    total_steps: int | None = None  # optimiser steps of the whole run; set by the Trainer (ramp-up horizons)

    def __init__(self, make_net):
        super().__init__()
        self.student = make_net()

    def optimizer_recipe(self) -> dict | None:
        """The optimiser this method trains with: None = the profile's shared Adam + ReduceLROnPlateau on
        validation Dice (every method alike, as in the paper's comparison table); or a dict for
        :func:`busnb.optim.build_optimizer`, e.g. ``{"name": "sgd", "lr": 0.01, "momentum": 0.9,
        "weight_decay": 1e-4, "schedule": "poly", "power": 0.9}`` (stepped per iteration by the trainer)."""
        return None

    def horizon(self, steps: int | None) -> int:
        """A ramp-up length in optimiser steps: ``steps`` when given, else the whole run (``total_steps``,
        which the trainer sets before the first step)."""
        if steps is not None:
            return int(steps)
        if self.total_steps is None:
            raise ValueError(f"method '{self.name}': its ramp-up spans the whole run but total_steps is not set; "
                             "train it through busnb.train.Trainer (which sets it) or pass rampup_steps=<int>")
        return int(self.total_steps)

    def trainable(self):
        return [p for p in self.student.parameters() if p.requires_grad]

    def supervised(self, batch_l: dict) -> torch.Tensor:
        """L_s = BCE + Dice on the labeled batch."""
        return bce_dice(self.student(batch_l["image"]), batch_l["mask"])

    def loss(self, batch_l: dict, batch_u: dict | None, step: int) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Called after every optimiser step (EMA updates go here)."""

    def eval_net(self) -> nn.Module:
        """The network that is validated, selected and tested."""
        return self.student

    def report(self, unlabeled) -> dict:
        """After training: method-specific quantities for ``metrics.json`` (e.g. the quality of the pseudo-labels
        on the unlabeled pool ``unlabeled``, a :class:`busnb.data.tensors.SegArrays`). **Reporting only**:
        nothing is fitted or selected on it. None by default."""
        return {}

    # -- stages ----------------------------------------------------------------
    def stages(self) -> list:
        """Stages this method needs before its loop (``busnb.stages.StageSpec``); none by default."""
        return []

    def attach(self, kind: str, state: dict) -> None:
        """Receive a finished stage's network state (``state_dict`` of the stage's selected network)."""
        raise ValueError(f"{self.name} has no stage {kind!r}")

    # -- checkpoints -----------------------------------------------------------
    def _frozen_key(self, key: str) -> bool:
        return key.startswith(tuple(f + "." for f in self.frozen))

    def checkpoint_state(self) -> dict:
        """What ``last.pt`` stores: the state dict without the frozen stage networks (``frozen``), which are
        re-attached from the stage cache on resume."""
        return {k: v for k, v in self.state_dict().items() if not self._frozen_key(k)}

    def load_checkpoint_state(self, state: dict) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not self._frozen_key(k)]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint does not match method '{self.name}': missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")


class Supervised(Method):
    """Labeled-only U-Net: L = L_s (BCE + Dice). Lower bound at r < 100 %, upper bound at 100 %."""

    name = "supervised"

    def loss(self, batch_l, batch_u, step):
        ls = self.supervised(batch_l)
        return ls, {"Ls": ls.detach()}


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step, warmup: str = "count") -> None:
    """theta_T <- a theta_T + (1 - a) theta_S, buffers (BN statistics) copied from the student. The decay warms
    up to ``decay``:

    * ``warmup="count"`` (default; every EMA teacher of this repo): a = min(decay, (step + 1) / (step + 10)), the
      num_updates form of TensorFlow's ``ExponentialMovingAverage``. It reaches 0.99 only at step 891.
    * ``warmup="mean"``: a = min(decay, 1 - 1 / (step + 1)), the form of Mean Teacher's own code (Tarvainen &
      Valpola 2017) and of SSL4MIS: the teacher is the plain mean of every student so far until the exponential
      average takes over (0.99 from step 99).

    ``step`` may be an int or a 0-dim device tensor (captured CUDA graph)."""
    if warmup not in ("count", "mean"):
        raise ValueError(f"ema_update: warmup={warmup!r}; choose 'count' ((t+1)/(t+10)) or 'mean' (1 - 1/(t+1))")
    tp = [p for p in teacher.parameters()]
    sp = [p.detach() for p in student.parameters()]
    t = step.float() if torch.is_tensor(step) else step
    a = (t + 1) / (t + 10) if warmup == "count" else 1 - 1 / (t + 1)
    if torch.is_tensor(step):
        a = torch.clamp(a, max=decay)
        torch._foreach_mul_(tp, a)
        torch._foreach_add_(tp, torch._foreach_mul(sp, 1 - a))
    else:
        a = min(decay, a)
        torch._foreach_mul_(tp, a)
        torch._foreach_add_(tp, sp, alpha=1 - a)
    tb, sb = list(teacher.buffers()), list(student.buffers())
    if tb:
        torch._foreach_copy_(tb, sb)


@torch.no_grad()
def distinct_decoder(second: nn.Module, first: nn.Module) -> bool:
    """Give ``second`` a decoder of its own when it starts with the very decoder of ``first``.

    Cross supervision between two networks of one architecture needs networks that start different: CPS (Chen
    et al., CVPR 2021, Sec. 3) uses "two segmentation networks with the same structure and different
    initialisation", the backbones from the same pretrained weights and the segmentation heads (DeepLabv3+'s
    decoder) initialised at random. A pretrained ``unet.pt`` (``ssl_method=restore`` / ``simclr+restore``)
    loaded into both networks makes them equal but for the one-channel output layer; here ``second``'s decoder
    is then drawn again as smp initialises a new one (``initialize_decoder``: Kaiming-uniform convolutions,
    unit batch-norm scale, zero bias) with fresh running statistics, and its encoder keeps the pretrained
    weights, as in the paper. Networks whose decoders already differ (from scratch, an encoder-only
    ``encoder.pt``, another architecture) are left as they are, so those runs do not change. Returns whether
    the decoder was drawn again (reported in the run's ``metrics.json``)."""
    from segmentation_models_pytorch.base.initialization import initialize_decoder

    dec_a, dec_b = (getattr(getattr(n, "net", None), "decoder", None) for n in (first, second))
    if dec_a is None or dec_b is None:
        return False
    sa, sb = dec_a.state_dict(), dec_b.state_dict()
    if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
        return False
    initialize_decoder(dec_b)
    for m in dec_b.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return True


def forward_joint(net, x: torch.Tensor, n: int, joint: bool = True, **kw):
    """``net`` on a batch whose first ``n`` images are labeled and the rest unlabeled: one forward pass
    (``joint``: batch-norm statistics of both kinds mixed, as the published two-network methods do) or two,
    labeled then unlabeled, concatenated (statistics kept apart, as the supervised baseline sees labeled images
    only). Outputs that are tuples (``return_features=True``) are concatenated element-wise."""
    if joint:
        return net(x, **kw)
    a, b = net(x[:n], **kw), net(x[n:], **kw)
    return tuple(torch.cat(p) for p in zip(a, b)) if isinstance(a, tuple) else torch.cat([a, b])


def sigmoid_rampup(step, length: int):
    """exp(-5 (1 - t)^2), t = step / length clipped to [0, 1] (Laine & Aila 2017). A float for an int
    ``step``, a 0-dim tensor for a tensor ``step``."""
    if length <= 0:
        return 1.0
    if torch.is_tensor(step):
        t = torch.clamp(step.float() / length, 0.0, 1.0)
        return torch.exp(-5.0 * (1 - t) ** 2)
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1 - t) ** 2)
