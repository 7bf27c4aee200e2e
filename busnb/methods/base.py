"""A method is a set of networks plus a loss made of named terms; the trainer does the rest.

Subclasses implement :meth:`Method.loss` returning the total loss and a dict of its
terms (for logging). Networks not meant to be optimised (EMA or frozen teachers) are
registered as modules but left out of :meth:`trainable`, so the optimiser never updates
them; :meth:`after_step` updates them (e.g. EMA).
"""
from __future__ import annotations

import torch
from torch import nn

from ..losses import bce_dice


class Method(nn.Module):
    name = "base"
    needs_unlabeled = False

    def __init__(self, make_net):
        super().__init__()
        self.student = make_net()

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


class Supervised(Method):
    """Labeled-only U-Net: L = L_s (BCE + Dice). Lower bound at r < 100 %, upper bound at 100 %."""

    name = "supervised"

    def loss(self, batch_l, batch_u, step):
        ls = self.supervised(batch_l)
        return ls, {"Ls": ls.detach()}


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> None:
    """theta_T <- a theta_T + (1 - a) theta_S with a = min(decay, (step + 1) / (step + 10)) (Tarvainen &
    Valpola 2017: a short warm-up), buffers (BN statistics) copied from the student."""
    a = min(decay, (step + 1) / (step + 10))
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.mul_(a).add_(ps.detach(), alpha=1 - a)
    for bt, bs in zip(teacher.buffers(), student.buffers()):
        bt.copy_(bs)


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(-5 (1 - t)^2), t = step / length clipped to [0, 1] (Laine & Aila 2017)."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return float(torch.exp(torch.tensor(-5.0 * (1 - t) ** 2)))
