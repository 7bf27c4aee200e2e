"""The paper's method: static teacher T^A (APPG pseudo-labels) + dynamic EMA teacher T^B, UEWF, AURCL.

Loss (Eq. 10):  L = L_s + lambda_u * L_u(student(x_u), y_F) + lambda_c * L_c,
L_s and L_u = BCE + Dice, y_F the fused soft target of the two teachers (busnb.uewf), L_c the
reverse contrastive loss (busnb.aurcl). Stage 1 (the ``static_teacher`` stage of ``busnb.stages``, run and
cached by the experiment) trains T^A on the labeled images plus the cached APPG pseudo-labels of the
unlabeled ones (kept by the area filter) and selects it on validation Dice; :meth:`DualTeacher.attach`
freezes it here. Stage 2 is the trainer's loop over this method.

Switches reproduce the ablation rows from this one class (see ``ABLATION``):
``static`` (use T^A), ``ema`` (use T^B), ``fusion`` ("mean" or "uewf"), ``smoothing``
("patch" / "overlap" / "pixel"), ``aurcl``. ``keep_top`` (default 1, the paper) trains T^A on only that
share of the pseudo-labels, the most confident by APPG's per-image confidence (``busnb.stages.most_confident``).
"""
from __future__ import annotations

import copy

import torch

from .. import aurcl as A
from .. import uewf as U
from ..losses import bce_dice
from .base import Method, ema_update


class DualTeacher(Method):
    name = "dual_teacher"
    needs_unlabeled = True
    frozen = ("static_teacher",)

    def __init__(self, make_net, static: bool = True, ema: bool = True, fusion: str = "uewf",
                 smoothing: str = "patch", patch: int = 14, aurcl: bool = True, lambda_u: float = 1.0,
                 lambda_c: float = 0.5, ema_decay: float = 0.99, k_frac: float = 0.1, tau_floor: float = 0.2,
                 temperature: float = 0.1, pseudo_backend: str = "appearance", pseudo_prompt: str | None = None,
                 pseudo_kwargs: dict | None = None, min_fg: float = 0.01, keep_top: float = 1.0):
        super().__init__(make_net)
        if not (static or ema):
            raise ValueError("at least one teacher (static or ema) is needed")
        if fusion not in ("mean", "uewf") or smoothing not in U.SMOOTHING:
            raise ValueError("fusion must be 'mean' or 'uewf'; smoothing one of " + str(U.SMOOTHING))
        self.opts = dict(static=static, ema=ema, fusion=fusion, smoothing=smoothing, patch=patch, aurcl=aurcl,
                         lambda_u=lambda_u, lambda_c=lambda_c, ema_decay=ema_decay, k_frac=k_frac,
                         tau_floor=tau_floor, temperature=temperature)
        if not 0 < keep_top <= 1:
            raise ValueError(f"keep_top must be in (0, 1], not {keep_top!r}")
        self.pseudo = dict(backend=pseudo_backend, prompt=pseudo_prompt, kwargs=pseudo_kwargs or {}, min_fg=min_fg)
        if keep_top < 1:  # only when set, so stage caches of the paper's setting keep their key
            self.pseudo["keep_top"] = keep_top
        self.static_teacher = make_net() if static else None
        self.ema_teacher = copy.deepcopy(self.student) if ema else None
        for t in (self.static_teacher, self.ema_teacher):
            if t is not None:
                t.requires_grad_(False).eval()
        self.head = A.ProjectionHead(self.student.feature_channels) if aurcl else None

    def trainable(self):
        params = list(self.student.parameters())
        return params + (list(self.head.parameters()) if self.head is not None else [])

    def train(self, mode: bool = True):
        super().train(mode)
        for t in (self.static_teacher, self.ema_teacher):  # teachers always predict in eval mode
            if t is not None:
                t.eval()
        return self

    # -- stage 1 --------------------------------------------------------------
    def stages(self):
        """T^A is trained by the experiment's ``static_teacher`` stage (``busnb.stages``) on labeled +
        APPG pseudo-labels, selected on validation, then frozen here by :meth:`attach`."""
        if self.static_teacher is None:
            return []
        from ..stages import StageSpec

        return [StageSpec("static_teacher", dict(self.pseudo))]

    def attach(self, kind, state):
        if kind != "static_teacher" or self.static_teacher is None:
            return super().attach(kind, state)
        self.static_teacher.load_state_dict(state)
        self.static_teacher.requires_grad_(False).eval()

    # -- stage 2 --------------------------------------------------------------
    @torch.no_grad()
    def teacher_targets(self, x_u: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Soft target y_F for the unlabeled batch and the maps behind it."""
        o = self.opts
        ys = {}
        if self.static_teacher is not None:
            ys["a"] = torch.sigmoid(self.static_teacher(x_u).float())
        if self.ema_teacher is not None:
            ys["b"] = torch.sigmoid(self.ema_teacher(x_u).float())
        if len(ys) == 1:
            return next(iter(ys.values())), ys
        if o["fusion"] == "mean":
            return (ys["a"] + ys["b"]) / 2, ys
        y_f, maps = U.fuse(ys["a"], ys["b"], o["patch"], o["smoothing"])
        return y_f, {**ys, **maps}

    def loss(self, batch_l, batch_u, step):
        o = self.opts
        x_l, x_u = batch_l["image"], batch_u["image"]
        logits, feats = self.student(torch.cat([x_l, x_u]), return_features=True)
        n = len(x_l)
        ls = bce_dice(logits[:n], batch_l["mask"])
        y_f, _ = self.teacher_targets(x_u)
        lu = bce_dice(logits[n:], y_f)
        total = ls + o["lambda_u"] * lu
        terms = {"Ls": ls.detach(), "Lu": lu.detach()}
        if self.head is not None:
            lc, _ = A.aurcl_loss(feats[n:], logits[n:], self.head, o["patch"], o["k_frac"], o["tau_floor"],
                                 o["temperature"])
            total = total + o["lambda_c"] * lc
            terms["Lc"] = lc.detach()
        return total, terms

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """T^B <- EMA of the student (``ema_update``)."""
        if self.ema_teacher is not None:
            ema_update(self.ema_teacher, self.student, self.opts["ema_decay"], step)


# Ablation rows of the paper, all from this class: name -> (method, kwargs)
ABLATION = {
    "baseline": ("supervised", {}),
    "+static": ("dual_teacher", {"static": True, "ema": False, "aurcl": False}),
    "+dual_ema": ("dual_teacher", {"static": True, "ema": True, "fusion": "mean", "aurcl": False}),
    "+uewf": ("dual_teacher", {"fusion": "uewf", "smoothing": "pixel", "aurcl": False}),
    "+patch_smoothing": ("dual_teacher", {"fusion": "uewf", "smoothing": "patch", "aurcl": False}),
    "+aurcl": ("dual_teacher", {"fusion": "uewf", "smoothing": "patch", "aurcl": True}),
}
