"""DuSSS step 2: text-guided semi-supervised segmentation in the one trainer.

Pan, Qiao, Lou, Ji, Li, "Dual Semantic Similarity-Supervised Vision-Language Model for Semi-Supervised Medical
Image Segmentation". A student and its EMA teacher (mean-teacher style); the teacher's pseudo-label of each
unlabeled image is refined by the frozen, pretrained VLM's text-conditioned activation map (the ``vlm_pretrain``
stage, :mod:`busnb.vlm`), and the student learns the refined label:

    L = L_s(student(x_l), y_l) + lambda_u w(t) L_u(student(x_u + n), y_r),   L_s, L_u = BCE + Dice
    y_r = sigmoid( logit p_T + beta (logit m - logit pi) )                      (:func:`fuse_log_odds`)

p_T = teacher probability (EMA of the student, decay 0.99), m = the VLM's calibrated text-map probability
(mean cosine of the lesion phrases ``busnb.vlm.texts.LESION_PHRASES`` to every patch, standardised per image,
Platt-scaled on the labeled train masks), pi = the labeled foreground base rate, beta = ``refine_weight``.

**Fusion.** The release forms sigmoid(p_T + map) with p_T and map in [0, 1], which confines every target to
[0.5, 0.88] (background can never be learned as background). Here the two are combined as independent
evidence in log-odds (a naive-Bayes product of experts): the map adds its evidence logit m - logit pi to the
teacher's logit. Targets span (0, 1); a map that says nothing (m = pi, its base rate) leaves the teacher's
label unchanged; where the teacher is unsure (p_T ~ 0.5) the map decides; a confident teacher is moved only
by a confident map.

Switches: ``dcl`` / ``sss`` (the pretraining's Dual Contrastive Learning and Semantic Similarity Supervision,
passed to the stage), ``grounding`` (the pretraining's dense phrase grounding on the labeled train masks,
:func:`busnb.vlm.losses.grounding_loss`: an addition to DuSSS, see there) and ``text_refine`` (off: y_r = p_T,
no VLM and no stage: a mean teacher with a BCE + Dice consistency). Ablation rows ``dusss-no_dcl``,
``dusss-no_sss``, ``dusss-no_grounding``, ``dusss-no_text_refine``.

After training, ``metrics.json`` holds ``pseudo_label_dice``: the final teacher's pseudo-labels on the unlabeled
pool scored against that pool's masks, unrefined and refined (:func:`pseudo_label_dice`; reporting only).
"""
from __future__ import annotations

import copy

import torch

from ..losses import bce_dice
from .base import Method, ema_update, sigmoid_rampup


def fuse_log_odds(p_teacher: torch.Tensor, m: torch.Tensor, pi, beta: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Refined pseudo-label sigmoid(logit p_T + beta (logit m - logit pi)) (see the module docstring)."""
    lg = lambda p: torch.logit(torch.as_tensor(p, dtype=p_teacher.dtype, device=p_teacher.device).clamp(eps, 1 - eps))  # noqa: E731
    return torch.sigmoid(lg(p_teacher) + beta * (lg(m) - lg(pi)))


class DuSSS(Method):
    """Mean teacher whose pseudo-labels are refined by the frozen text-conditioned VLM map (module docstring)."""

    name = "dusss"
    needs_unlabeled = True
    frozen = ("vlm",)

    def __init__(self, make_net, dcl: bool = True, sss: bool = True, text_refine: bool = True, grounding: bool = True,
                 lambda_u: float = 1.0, ema_decay: float = 0.99, rampup_steps: int = 1000, noise: float = 0.05,
                 refine_weight: float = 1.0, text: str = "scratch", vlm_epochs: int | None = None,
                 phrases: tuple | list | None = None):
        super().__init__(make_net)
        from ..vlm.texts import LESION_PHRASES

        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.opts = dict(dcl=dcl, sss=sss, text_refine=text_refine, lambda_u=lambda_u, ema_decay=ema_decay,
                         rampup_steps=rampup_steps, noise=noise, refine_weight=refine_weight, text=text,
                         vlm_epochs=vlm_epochs, phrases=list(phrases or LESION_PHRASES), grounding=grounding)
        self.vlm = None
        if text_refine:
            from ..vlm.model import VLM

            self.vlm = VLM.from_params(self.stage_params()).requires_grad_(False)
            self.register_buffer("phrase_g", torch.zeros(len(self.opts["phrases"]), self.vlm.params["dim"]))

    def stage_params(self) -> dict:
        from ..vlm.pretrain import stage_params

        o = self.opts
        return stage_params(dcl=o["dcl"], sss=o["sss"], text=o["text"], epochs=o["vlm_epochs"],
                            grounding=o["grounding"])

    def stages(self):
        if not self.opts["text_refine"]:
            return []
        from ..stages import StageSpec

        return [StageSpec("vlm_pretrain", self.stage_params())]

    def attach(self, kind, state):
        """The pretrained VLM (frozen) and the embeddings of the lesion phrases."""
        if kind != "vlm_pretrain" or self.vlm is None:
            return super().attach(kind, state)
        from ..vlm.pretrain import phrase_embeddings

        self.vlm.load_state_dict(state)
        self.vlm.eval()
        dev = self.phrase_g.device
        self.phrase_g.copy_(phrase_embeddings(self.vlm.to(dev), self.opts["phrases"]))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        if self.vlm is not None:
            self.vlm.eval()
        return self

    @torch.no_grad()
    def pseudo_labels(self, x_u: torch.Tensor, refine: bool | None = None) -> dict:
        """{"teacher": p_T, "map": m (None without refinement), "refined": y_r} for images ``x_u``."""
        p_t = torch.sigmoid(self.teacher(x_u).float())
        refine = self.opts["text_refine"] if refine is None else refine
        if not refine or self.vlm is None:
            return {"teacher": p_t, "map": None, "refined": p_t}
        m = self.vlm.map_prob(x_u, self.phrase_g).float()
        return {"teacher": p_t, "map": m,
                "refined": fuse_log_odds(p_t, m, self.vlm.calib[2], self.opts["refine_weight"])}

    def loss(self, batch_l, batch_u, step):
        o = self.opts
        x_u = batch_u["image"]
        ls = self.supervised(batch_l)
        y = self.pseudo_labels(x_u)["refined"]
        lu = bce_dice(self.student(x_u + o["noise"] * torch.randn_like(x_u)), y)
        w = o["lambda_u"] * sigmoid_rampup(step, o["rampup_steps"])
        return ls + w * lu, {"Ls": ls.detach(), "Lu": lu.detach(), "fg": (y > 0.5).float().mean()}

    def after_step(self, step):
        ema_update(self.teacher, self.student, self.opts["ema_decay"], step)

    def report(self, unlabeled) -> dict:
        """Dice of the final teacher's pseudo-labels on the unlabeled pool, unrefined and text-refined
        (:func:`pseudo_label_dice`; with ``text_refine`` off only the teacher's)."""
        d = pseudo_label_dice(self, unlabeled)
        if self.vlm is None:  # nothing refines the labels: "refined" would repeat "teacher"
            d.pop("refined")
        return {"pseudo_label_dice": d}


ABLATION_DUSSS = {
    "dusss-no_dcl": ("dusss", {"dcl": False}),
    "dusss-no_sss": ("dusss", {"sss": False}),
    "dusss-no_grounding": ("dusss", {"grounding": False}),
    "dusss-no_text_refine": ("dusss", {"text_refine": False}),
}


@torch.no_grad()
def pseudo_label_dice(method: DuSSS, arrays, batch: int = 16, threshold: float = 0.5) -> dict:
    """Mean per-image Dice of the teacher's pseudo-labels, unrefined and text-refined, against ``arrays``'
    masks. **Reporting only** (e.g. on the unlabeled pool after training): nothing is fitted or selected on it."""
    from ..metrics import soft_dice_batch

    dev = next(method.teacher.parameters()).device
    was = method.training
    method.eval()
    d_t, d_r = [], []
    for i in range(0, len(arrays), batch):
        b = arrays.batch(torch.arange(i, min(i + batch, len(arrays))))
        x, y = b["image"].to(dev), b["mask"].to(dev)
        pl = method.pseudo_labels(x, refine=True)
        d_t.append(soft_dice_batch((pl["teacher"] > threshold).float(), y))
        d_r.append(soft_dice_batch((pl["refined"] > threshold).float(), y))
    method.train(was)
    return {"teacher": float(torch.cat(d_t).mean()), "refined": float(torch.cat(d_r).mean()), "n": len(arrays)}
