"""Optimiser recipes a method may ask for instead of the profile's shared Adam (``Method.optimizer_recipe``).

A recipe is a dict::

    {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
     "schedule": "poly" | "step" | "constant", "power": 0.9, "step_every": 2500, "gamma": 0.1}

:func:`build_optimizer` turns it into a ``torch.optim.SGD`` and an :class:`IterSchedule`, which the trainer
steps once per optimiser step (not per epoch). The learning rate of optimiser step ``k`` (0-based, counted over
the whole run, ``total`` steps) is

* ``poly``:     lr * (1 - k / total) ** power   (Chen et al. 2021, CPS; SSL4MIS: lr 0.01, power 0.9),
* ``step``:     lr * gamma ** (k // step_every)  (x0.1 every 2,500 iterations in the dual-network release),
* ``constant``: lr                               (BCP's released 2D code).

The schedule's only state is ``k`` (``state_dict`` / ``load_state_dict``), stored in ``last.pt`` with the
optimiser, so a resumed run continues with the same learning rates.
"""
from __future__ import annotations

import torch

SCHEDULES = ("poly", "step", "constant")
_DEFAULTS = {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False, "schedule": "poly",
             "power": 0.9, "step_every": 2500, "gamma": 0.1}


def check_recipe(recipe: dict, where: str = "optimizer_recipe") -> dict:
    """The recipe with defaults filled in; a clear ValueError for an unknown key or a bad value."""
    unknown = set(recipe) - set(_DEFAULTS) - {"lr"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted({*_DEFAULTS, 'lr'})}")
    r = {**_DEFAULTS, **recipe}
    if r["name"] != "sgd":
        raise ValueError(f"{where}: name={r['name']!r}; only 'sgd' recipes are built here (None = the shared Adam)")
    if "lr" not in recipe or not float(r["lr"]) > 0:
        raise ValueError(f"{where}: needs a positive 'lr', got {recipe.get('lr')!r}")
    if not 0 <= float(r["momentum"]) < 1:
        raise ValueError(f"{where}: momentum must be in [0, 1), got {r['momentum']!r}")
    if float(r["weight_decay"]) < 0:
        raise ValueError(f"{where}: weight_decay must be >= 0, got {r['weight_decay']!r}")
    if r["schedule"] not in SCHEDULES:
        raise ValueError(f"{where}: schedule={r['schedule']!r}; choose one of {', '.join(SCHEDULES)}")
    if not float(r["power"]) > 0 or int(r["step_every"]) < 1 or not 0 < float(r["gamma"]) <= 1:
        raise ValueError(f"{where}: needs power > 0, step_every >= 1 and 0 < gamma <= 1, got {r}")
    return r


class IterSchedule:
    """Per-iteration learning rate of a recipe (see the module docstring); ``step()`` after each optimiser step."""

    def __init__(self, opt: torch.optim.Optimizer, recipe: dict, total: int):
        self.opt, self.r, self.total = opt, check_recipe(recipe), max(1, int(total))
        self.k = 0
        self._apply()

    def lr_at(self, k: int) -> float:
        r, base = self.r, float(self.r["lr"])
        if r["schedule"] == "poly":
            return base * max(0.0, 1.0 - k / self.total) ** float(r["power"])
        if r["schedule"] == "step":
            return base * float(r["gamma"]) ** (k // int(r["step_every"]))
        return base

    def _apply(self) -> None:
        lr = self.lr_at(self.k)
        for g in self.opt.param_groups:
            if torch.is_tensor(g["lr"]):
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr

    def step(self) -> None:
        self.k += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"k": self.k, "total": self.total, "recipe": dict(self.r)}

    def load_state_dict(self, st: dict) -> None:
        if "k" not in st:
            raise ValueError("last.pt: the scheduler state is not a per-iteration recipe schedule (was the run "
                             "started with the shared Adam? resume it with the same optimizer setting, or --force)")
        self.k = int(st["k"])
        self._apply()


def build_optimizer(recipe: dict, params, total_steps: int) -> tuple[torch.optim.Optimizer, IterSchedule]:
    """(SGD, its per-iteration schedule) for ``recipe`` over a run of ``total_steps`` optimiser steps."""
    r = check_recipe(recipe)
    opt = torch.optim.SGD(list(params), lr=float(r["lr"]), momentum=float(r["momentum"]),
                          weight_decay=float(r["weight_decay"]), nesterov=bool(r["nesterov"]))
    return opt, IterSchedule(opt, r, total_steps)


def paper_or_shared(optimizer: str, recipe: dict, who: str) -> dict | None:
    """``recipe`` for ``optimizer="paper"``, None (the shared Adam) for ``"shared"``; anything else is an error."""
    if optimizer == "paper":
        return check_recipe(recipe, f"{who} optimizer recipe")
    if optimizer == "shared":
        return None
    raise ValueError(f"{who}: optimizer={optimizer!r}; choose 'paper' (the method's published SGD schedule) or "
                     "'shared' (the profile's Adam + ReduceLROnPlateau, as every method in the comparison table)")
