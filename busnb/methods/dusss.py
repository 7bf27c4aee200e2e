"""DuSSS step 2: text-guided semi-supervised segmentation in the one trainer.

Pan, Qiao, Lou, Ji, Li, "Dual Semantic Similarity-Supervised Vision-Language Model for Semi-Supervised Medical
Image Segmentation". A student and its EMA teacher (mean-teacher style); the teacher's pseudo-label of each
unlabeled image is refined by the frozen, pretrained VLM's text-conditioned activation map (the ``vlm_pretrain``
stage, :mod:`busnb.vlm`), and the student learns the refined label:

    L = L_s(student(x_l), y_l) + lambda_u w(t) L_u(student(x_u), y_r),   L_s, L_u = BCE + Dice
    y_r = p_A on the component C* of {p_A > 0.5} with the largest sum of m p_A, 0 on its other components
                                                                               (:func:`select_by_text`)
    p_A = sigmoid( logit p_T + b )                                             (:func:`align_base_rate`)

p_T = teacher probability (EMA of the student, decay 0.99), m = the VLM's calibrated text-map probability
(mean cosine of the lesion phrases ``busnb.vlm.texts.LESION_PHRASES`` to every patch, standardised per image,
Platt-scaled on the labeled train masks), pi = the labeled foreground base rate, w(t) = sigmoid ramp-up over
``rampup_steps`` (None, the default: the whole run), lambda_u = 0.1.

**Weight of the unlabeled term** (since the 2026-11-25 session): lambda_u = 0.1 ramped over the whole run, the
weight and ramp-up of the mean teacher this step builds on (SSL4MIS, as :class:`busnb.methods.classic.MeanTeacher`).
The former lambda_u = 1 (ramp-up 100 steps in the runs) made the student copy the teacher's shrinking pseudo-labels.
Measured at BUSI 10 % from the SimCLR + restore start (64 px, 45 epochs, split seeds 0, 1, 2;
``results/cpu-2026-11-24/d64e45-r10-weak``, rows ``dusss-simclr+restore`` and ``dusss-select-simclr+restore``):
best validation Dice 0.606 / 0.572 / 0.563 before, 0.628 / 0.621 / 0.674 now (higher at every seed); the final
teacher's pseudo-labels on the unlabeled pool 0.58 / 0.56 / 0.53 before, 0.67 / 0.66 / 0.64 now.

**The student sees the unlabeled batch clean** (``noise=0``, the default since the 2026-11-24 session), as this
repo's Mean Teacher does in its SSL4MIS form. ``noise`` > 0 adds N(0, noise^2) to the student's unlabeled input
(the former default 0.05, variant ``dusss-student_noise``). Measured at BUSI 10 %, 64-px 15-epoch schedule,
split seeds 0, 1, 2 (``results/cpu-2026-11-24/d64-r10-dusss``): best validation Dice 0.568 / 0.553 / 0.559 clean
against 0.557 / 0.511 / 0.547 with the noise, higher at every seed (the switch is chosen on validation; test Dice
53.43 +- 4.86 against 51.38 +- 5.84).

**pi, once.** pi is the share of lesion pixels in the labeled train masks at the training size, computed once
before the main loop by the ``label_rate`` stage (:func:`busnb.stages.label_rate`, with
:func:`busnb.data.tensors.foreground_rate`) and attached to the method; the fusion's prior and the alignment's
target both read it (:meth:`DuSSS.base_rate`). The VLM's Platt calibration stores the same number (``vlm.calib[2]``,
same function, same masks); attaching a VLM calibrated on other masks is refused. (Earlier versions had two
estimates of this one number: the alignment tracked a running mean over the labeled batches, the fusion read
``calib[2]``.)

**Base-rate alignment** (``align``; **off by default**, an addition to DuSSS, variant ``dusss-align``): b is moved
every step by an integral controller (:func:`align_update`, gain ``align_gain``) until the foreground rate of the
targets y_r equals the labeled masks' rate pi (b = 0 with ``align`` off). Only labeled train masks enter pi. Why:
the mean teacher's pseudo-labels on BUSI shrink (about 13 % foreground labeled, 3 % in the pseudo-labels after a
few epochs) and the student follows. Measured (``results/cpu-2026-11-23``, BUSI 2.5 %, split seeds 0, 1, 2):

* without the text map (``dusss-no_text_refine``, 64-px, 15-epoch diagnosis schedule, ramp-up 100 steps), where
  y_r = p_A: test Dice 45.82 +- 3.79 with the controller (gain 0.02) against 41.43 +- 3.93 without (better at
  every seed; supervised 42.42 +- 4.13), the final teacher's pseudo-labels 47.1 against 34.8 Dice on the
  unlabeled pool; gain 0.005 was too slow there (42.48 +- 5.30);
* with the text map at the cpu profile (seed 0, runs stopped after 15 and 16 of 40 epochs) a first version that
  held p_A, not y_r, at pi wound up (b = 5 at gain 0.02, 3.4 at 0.005) and then the refined targets overshot to
  27-35 % foreground: the map adds foreground wherever p_A nears 0.5;
* this version, which holds y_r itself, with the text map (64 px, 3 seeds, ``d64-dusss``): 42.09 +- 5.26 against
  43.17 +- 4.62 without, its refined pseudo-labels 35.96 against 39.94 Dice. Hence off by default.

``target``: "soft" (default) learns y_r itself, "hard" its 0.5 threshold.

**Fusion** (``fusion``). The release forms sigmoid(p_T + map) with p_T and map in [0, 1], which confines every
target to [0.5, 0.88] (background can never be learned as background). Two sound fusions are here, and a
third for a binary map (``"overlap"``, see *The APPG masks as the map* below):

* ``"select"`` (default since the 2026-11-25 session): **text-guided lesion selection**. The map decides *which*
  of the teacher's lesion candidates is the lesion, not where its border runs: of the connected components of
  {p_A > 0.5}, the one with the largest text-weighted mass sum(m p_A) is kept as the teacher labels it, the others
  become background (:func:`select_by_text`). A map that ranks pixels worse than the teacher (pixel AUC 0.78-0.84
  against the teacher's 0.91 at BUSI 10 %) can still tell a lesion from a shadow or a duct; at the border it would
  only add noise. Targets are never made larger than the teacher's.
* ``"log_odds"`` (the default until then, variant ``dusss-log_odds``): the two as independent evidence in
  log-odds, y_r = sigmoid(logit p_A + beta (logit m - logit pi)) (:func:`fuse_log_odds`, beta = ``refine_weight``;
  a naive-Bayes product of experts): a map that says nothing (m = pi) leaves the label unchanged, where the teacher
  is unsure the map decides. The two experts are not independent, and the map is the weaker one: on the final
  teachers of the three 10 % runs with the SimCLR + restore start it *lowered* the pseudo-labels' Dice on the
  unlabeled pool (0.582 / 0.558 / 0.534 to 0.560 / 0.540 / 0.506), whereas the selection raised it (to 0.589 /
  0.563 / 0.545; keeping the largest component without the map: 0.580 / 0.559 / 0.536). Those pool masks chose the
  rule among four (also: the component of highest mean map; dropping components whose mean map is below pi); no
  validation or test mask was read. With lambda_u = 0.1 the teachers are better and both fusions nearly neutral
  (same start, ``d64e45-r10-weak``): selection 0.672 / 0.656 / 0.642 to 0.666 / 0.658 / 0.652, the flips it makes
  at the threshold right 65 / 75 / 80 % of the time; log-odds (``dusss-log_odds-simclr+restore``) 0.662 / 0.617 /
  0.634 to 0.657 / 0.623 / 0.625, its flips right 48 / 51 / 42 % (a coin toss). Best validation Dice is slightly
  higher with log-odds (0.637 / 0.625 / 0.682 against 0.628 / 0.621 / 0.674); the selection stays the default for
  its flips, which the map gets right.

**The APPG masks as the map** (``refine_map="appg"``, variant ``dusss-appg`` with ``fusion="overlap"``; an addition
to DuSSS). m is the APPG pseudo-label of each unlabeled image (the paper's three phrases through the weight-free
``appearance`` backend, area filter as the static teacher's; the ``appg_masks`` stage, :func:`busnb.stages.appg_masks`,
in the pool's order, looked up by the batch's ``index``): a phrase-conditioned map that comes from the image alone, not
from the labeled masks the student also learns from, which is what limits the VLM's map (``results/RECORD.md``, *DuSSS*).
``fusion="overlap"`` (:func:`keep_overlapping`) keeps every candidate of {p_A > 0.5} that the map touches and drops the
others, or keeps all when the map touches none. Why: on the final teachers of three BUSI 10 % Mean Teacher runs
(``mean_teacher-joint_bn``, 64 px, split seeds 0-2) this rule raised the pool pseudo-labels' Dice by 0.8 / 0.9 / 2.5
points (0.576 / 0.603 / 0.617 to 0.584 / 0.611 / 0.642), keeping the single most-overlapped candidate by -0.4 / +0.5
/ +1.5, the largest candidate by -1.5 / -1.2 / -0.4 (an offline check with the pool masks, reporting only; the rule
was then fixed before any ``dusss-appg`` run). Measured (from scratch, 64 px, 45 epochs, ``augment=weak``, split
seeds 0-2; ``results/cpu-2026-11-24/d64e45*-weak/dusss-appg``): the refinement raises the final teacher's pool
pseudo-labels in 6 of 6 runs (+0.34 +- 0.22 points at 10 %, +0.77 +- 0.94 at 2.5 %; the VLM map: 3 of 6), test Dice
level with the VLM map's (58.43 and 45.04 against 58.23 and 45.19). Off by default: the VLM is what DuSSS is.

**The VLM grounded on the APPG pseudo-labels too** (``appg_grounding``; **on by default since the fourteenth
session** wherever the map is the VLM's, an addition to DuSSS; the former default is the variant
``dusss-labeled_grounding``): the ``vlm_pretrain`` stage grounds the lesion phrases on the unlabeled pool's APPG
pseudo-labels (the paper's three phrases through the weight-free ``appearance`` backend, masks the area filter
keeps) as well as on the labeled masks (``pool_grounding="appg"``, :mod:`busnb.vlm.pretrain`), so the VLM's own
text map m learns where the appearance phrases put the lesion on every pool image, not only on the labeled images
the student also learns from. Fusion, Platt calibration and pi are unchanged (labeled masks only). Chosen on
validation by a rule fixed before the runs (adopt if best validation Dice is at least the former default's in 4
of 6 runs): BUSI, from scratch, 64 px, 45 epochs, ``augment=weak``, split seeds 0-2
(``results/cpu-2026-11-24/d64e45*-weak/dusss-appg_grounding`` against ``dusss-select``): best validation Dice
0.622 / 0.620 / 0.663 against 0.609 / 0.634 / 0.653 at 10 %, 0.498 / 0.410 / 0.533 against 0.499 / 0.394 /
0.510 at 2.5 %, higher in 4 of 6. Reported only: test Dice 59.38 +- 2.30 at 10 % and 47.02 +- 4.39 at 2.5 %
(former default 58.23 and 45.19, supervised 58.07 and 43.37); the map's pixel AUC on the pool 0.832 against
0.808 at 10 %; its refinement of the final teacher's pool pseudo-labels +0.20 / -0.70 / +0.64 points at 10 % and
+0.50 / -0.69 / +1.43 at 2.5 % (positive in 4 of 6 runs).

**Per-image confidence weights** (``conf_weight``; off by default, an addition to DuSSS, variant
``dusss-conf_weight``): L_u = sum_i c_i l_i / sum_i c_i over the unlabeled batch (:func:`confidence_weighted`),
l_i the BCE + Dice of image i, c_i = the teacher's mean probability over the foreground of the label y_r it learns,
0 for an empty label (:func:`label_confidence`). Why: on the final teachers of 15 BUSI runs this confidence ranks
the pseudo-labels' Dice at Spearman 0.62-0.84, the text map's mean over the label at 0.14-0.52 (``results/RECORD.md``, *DuSSS*;
``pool_report``'s ``confidence``). An empty label gets no weight: every image of a lesion dataset holds a lesion
(BUSI's normal class is not loaded), so "nothing here" from the teacher is a miss, not a label.

Switches: ``fusion`` (above), ``refine_map`` (above), ``dcl`` / ``sss`` (the pretraining's Dual Contrastive Learning and Semantic Similarity
Supervision, passed to the stage), ``grounding`` (the pretraining's dense phrase grounding on the labeled train
masks, :func:`busnb.vlm.losses.grounding_loss`: an addition to DuSSS, see there), ``appg_grounding`` (the same
term on the unlabeled pool's APPG pseudo-labels, above; None: on wherever the map is the VLM's) and ``text_refine`` (off: y_r =
p_T, no VLM and no stage: a mean teacher with a BCE + Dice consistency). ``vlm_depth``: the stages of the VLM's
ResNet image encoder (None: the student U-Net's, i.e. the profile's ``encoder_depth``: 5 at the cpu and gpu
profiles, 3 at smoke and demo). Ablation rows ``dusss-no_dcl``, ``dusss-no_sss``, ``dusss-log_odds``,
``dusss-no_grounding`` (no grounding term at all), ``dusss-no_text_refine``; ``dusss-align`` turns the alignment on; ``dusss-student_noise``
perturbs the student's unlabeled input (the former default); ``dusss-conf_weight`` weights each unlabeled image by
the teacher's confidence in its label; ``dusss-appg`` refines with the APPG masks instead of the VLM's map;
``dusss-appg_grounding`` names today's default explicitly (the folder of its runs);
``dusss-labeled_grounding`` grounds the VLM on the labeled masks only (the default before the fourteenth session).

After training, ``metrics.json`` holds ``pseudo_label_dice``: the final teacher's pseudo-labels on the unlabeled
pool scored against that pool's masks, unrefined and refined (:func:`pseudo_label_dice`; reporting only).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..losses import bce_dice, bce_dice_per_image
from .base import Method, ema_update, sigmoid_rampup
from .classic import components, largest_component


def _logit(v, like: torch.Tensor, eps: float) -> torch.Tensor:
    """logit of a probability (tensor or number) clamped to [eps, 1 - eps], on ``like``'s dtype and device."""
    return torch.logit(torch.as_tensor(v, dtype=like.dtype, device=like.device).clamp(eps, 1 - eps))


def fuse_log_odds(p_teacher: torch.Tensor, m: torch.Tensor, pi, beta: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Refined pseudo-label sigmoid(logit p_T + beta (logit m - logit pi)) (see the module docstring)."""
    lg = lambda v: _logit(v, p_teacher, eps)  # noqa: E731
    return torch.sigmoid(lg(p_teacher) + beta * (lg(m) - lg(pi)))


def select_by_text(p_teacher: torch.Tensor, m: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Text-guided lesion selection (module docstring, ``fusion="select"``): per image, of the connected
    components of {p_teacher > threshold}, the one with the largest sum of m p_teacher keeps the teacher's
    probabilities; the others are set to 0. Everything at or below the threshold is left as the teacher has it.
    On the host (:func:`busnb.methods.classic.largest_component`)."""
    fg = p_teacher > threshold
    keep = largest_component(fg, m * p_teacher).bool()
    return p_teacher.masked_fill(fg & ~keep, 0.0)


def keep_overlapping(p_teacher: torch.Tensor, m: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Overlap selection (``fusion="overlap"``): per image, the connected components of {p_teacher > threshold}
    that share a pixel with {m > threshold} keep the teacher's probabilities, the others are set to 0; an image
    where no component touches the map keeps them all (the map missed, not the teacher). Nothing is added, so
    targets are never larger than the teacher's. On the host (:func:`busnb.methods.classic.components`)."""
    fg = p_teacher > threshold
    guide = (m > threshold).detach().to("cpu").numpy()
    drop = np.zeros(tuple(fg.shape), bool)
    for i, lab, n in components(fg):
        if n > 1:
            touched = np.unique(lab[guide[i, 0] & (lab > 0)])
            if touched.size:
                drop[i, 0] = (lab > 0) & ~np.isin(lab, touched)
    return p_teacher.masked_fill(torch.from_numpy(drop).to(p_teacher.device), 0.0)


def label_confidence(p_teacher: torch.Tensor, y: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """c_i (shape (B,)): the mean of the teacher's probability over the foreground (y > threshold) of each image's
    label, 0 for an empty label (module docstring, ``conf_weight``)."""
    fg = (y > threshold).float().flatten(1)
    return (p_teacher.float().flatten(1) * fg).sum(1) / fg.sum(1).clamp_min(1.0)


def confidence_weighted(losses: torch.Tensor, c: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """sum_i c_i l_i / sum_i c_i: per-image losses (B,) averaged with weights c (B,); 0 when every weight is 0."""
    return (c * losses).sum() / c.sum().clamp_min(eps)


def align_base_rate(p: torch.Tensor, bias, eps: float = 1e-4) -> torch.Tensor:
    """The teacher's probability shifted in log-odds: p_A = sigmoid(logit p + b) (see :meth:`DuSSS.align_step`)."""
    return torch.sigmoid(_logit(p, p, eps) + bias)


def align_update(bias: torch.Tensor, pi, frac, gain: float, eps: float = 5e-3, limit: float = 5.0) -> torch.Tensor:
    """One step of the base-rate controller: b <- clip(b + gain (logit pi - logit f), -limit, limit), f = the
    foreground fraction of the aligned pseudo-labels of the batch, pi = the labeled foreground rate. An integral
    controller: at its fixed point the pseudo-labels' foreground rate equals the labeled one, on average over
    batches. Distribution alignment in the sense of ReMixMatch (Berthelot et al., ICLR 2020: pseudo-label class
    frequencies pulled to the labeled ones), applied to the thresholded rate: the teacher's probabilities are
    nearly binary, so rescaling its mean probability (ReMixMatch's form) barely moves its masks."""
    return (bias + gain * (_logit(pi, bias, eps) - _logit(frac, bias, eps))).clamp(-limit, limit)


class DuSSS(Method):
    """Mean teacher whose pseudo-labels are refined by the frozen text-conditioned VLM map (module docstring)."""

    name = "dusss"
    needs_unlabeled = True
    frozen = ("vlm",)

    def __init__(self, make_net, dcl: bool = True, sss: bool = True, text_refine: bool = True, grounding: bool = True,
                 lambda_u: float = 0.1, ema_decay: float = 0.99, rampup_steps: int | None = None, noise: float = 0.0,
                 refine_weight: float = 1.0, fusion: str = "select", text: str = "scratch",
                 vlm_epochs: int | None = None,
                 phrases: tuple | list | None = None, target: str = "soft", align: bool = False,
                 align_gain: float = 0.02, vlm_depth: int | None = None, conf_weight: bool = False,
                 refine_map: str = "vlm", appg_grounding: bool | None = None):
        super().__init__(make_net)
        if target not in ("soft", "hard"):
            raise ValueError(f"dusss: target must be 'soft' or 'hard', got {target!r}")
        if fusion not in ("select", "log_odds", "overlap"):
            raise ValueError(f"dusss: fusion must be 'select', 'log_odds' or 'overlap', got {fusion!r}")
        if refine_map not in ("vlm", "appg"):
            raise ValueError(f"dusss: refine_map must be 'vlm' (the pretrained VLM's text map) or 'appg' (the APPG "
                             f"pseudo-labels of the phrases), got {refine_map!r}")
        has_vlm = text_refine and refine_map == "vlm"
        if appg_grounding and not has_vlm:
            raise ValueError("dusss: appg_grounding trains the VLM's map; it needs text_refine and refine_map='vlm'")
        appg_grounding = has_vlm if appg_grounding is None else bool(appg_grounding)
        if refine_map == "appg" and fusion == "log_odds":
            raise ValueError("dusss: refine_map='appg' is a binary mask; use fusion 'overlap' or 'select'")
        from ..vlm.texts import LESION_PHRASES

        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.opts = dict(dcl=dcl, sss=sss, text_refine=text_refine, lambda_u=lambda_u, ema_decay=ema_decay,
                         rampup_steps=rampup_steps, noise=noise, refine_weight=refine_weight, fusion=fusion, text=text,
                         vlm_epochs=vlm_epochs, phrases=list(phrases or LESION_PHRASES), grounding=grounding,
                         target=target, align=align, align_gain=align_gain, conf_weight=bool(conf_weight),
                         vlm_depth=vlm_depth or getattr(self.student, "depth", 5), refine_map=refine_map,
                         appg_grounding=appg_grounding)
        # pi (the label_rate stage; NaN until attached) and the alignment's log-odds shift b: buffers, so they
        # move with the method's device and resume with the checkpoint (capturable: no host sync, no branches)
        self.register_buffer("pi", torch.full((), float("nan")))
        self.register_buffer("align_bias", torch.zeros(()))
        self._pi_attached = False
        self.vlm = None
        self._appg = None  # (masks uint8 (N,1,S,S), ids) of the unlabeled pool, from the appg_masks stage
        if text_refine and fusion in ("select", "overlap"):
            self.capturable = False  # connected components on the host
        if text_refine and refine_map == "vlm":
            from ..vlm.model import VLM

            self.vlm = VLM.from_params(self.stage_params()).requires_grad_(False)
            self.register_buffer("phrase_g", torch.zeros(len(self.opts["phrases"]), self.vlm.params["dim"]))

    def stage_params(self) -> dict:
        from ..vlm.pretrain import stage_params

        o = self.opts
        return stage_params(dcl=o["dcl"], sss=o["sss"], text=o["text"], epochs=o["vlm_epochs"],
                            grounding=o["grounding"], depth=o["vlm_depth"],
                            pool_grounding="appg" if o["appg_grounding"] else "none")

    def stages(self):
        """``label_rate`` (pi) always; ``vlm_pretrain`` with the text refinement."""
        from ..stages import StageSpec

        specs = [StageSpec("label_rate")]
        if self.opts["text_refine"]:
            specs.append(StageSpec("vlm_pretrain", self.stage_params()) if self.vlm is not None
                         else StageSpec("appg_masks"))
        return specs

    @property
    def has_map(self) -> bool:
        """Whether pseudo-labels are refined by a map: the VLM's text map or the APPG masks."""
        return self.opts["text_refine"]

    def attach(self, kind, state):
        """pi from the ``label_rate`` stage; the pretrained VLM (frozen) and the embeddings of the lesion phrases
        from ``vlm_pretrain``. A VLM whose calibration saw another labeled foreground rate than the attached pi
        (a stage of another split) is refused."""
        if kind == "label_rate":
            self.pi.fill_(float(state["pi"]))
            self._pi_attached = True
            return None
        if kind == "appg_masks" and self.opts["refine_map"] == "appg":
            self._appg = (state["masks"], list(state["ids"]))
            return None
        if kind != "vlm_pretrain" or self.vlm is None:
            return super().attach(kind, state)
        from ..vlm.pretrain import phrase_embeddings

        cal_pi = float(state["calib"][2])
        if self._pi_attached and abs(cal_pi - float(self.pi)) > 1e-6:
            raise ValueError(f"dusss: the VLM was calibrated on labeled masks with foreground rate {cal_pi:.6f}, but "
                             f"this run's labeled masks have {float(self.pi):.6f}: the vlm_pretrain stage belongs to "
                             "another split or ratio. Fix: let the experiment run the stage for this split "
                             "(busnb train ...), or pass the matching stage.")
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

    def base_rate(self) -> torch.Tensor:
        """pi: the labeled train masks' foreground rate from the ``label_rate`` stage (module docstring)."""
        if not self._pi_attached:
            raise RuntimeError("dusss: pi (the labeled foreground rate) comes from its label_rate stage, which was "
                               "not attached. Fix: train through `busnb train` / run_experiment (they run the stage), "
                               "or call method.attach('label_rate', {'pi': rate}) first.")
        return self.pi

    @torch.no_grad()
    def align_step(self, y_target: torch.Tensor) -> None:
        """Move b by :func:`align_update` towards targets (the refined pseudo-labels the student learns) whose
        foreground rate is pi (module docstring); nothing with ``align`` off."""
        if self.opts["align"]:
            frac = (y_target > 0.5).float().mean()
            self.align_bias.copy_(align_update(self.align_bias, self.base_rate(), frac, self.opts["align_gain"]))

    def appg_map(self, index: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """The APPG masks (float, on ``like``'s device) of the unlabeled-pool images at positions ``index``. The
        pool's masks move to that device once, so a step indexes them there (no per-step copy or sync)."""
        if self._appg is None:
            raise RuntimeError("dusss: refine_map='appg' needs its appg_masks stage, which was not attached. Fix: "
                               "train through `busnb train` / run_experiment (they run the stage).")
        if index is None:
            raise ValueError("dusss: refine_map='appg' looks the masks up by pool index: pass the batch's 'index'")
        masks, ids = self._appg
        if masks.device != like.device:
            masks = masks.to(like.device)
            self._appg = (masks, ids)
        return masks[torch.as_tensor(index, device=like.device)].float()

    @torch.no_grad()
    def pseudo_labels(self, x_u: torch.Tensor, refine: bool | None = None, index: torch.Tensor | None = None) -> dict:
        """{"teacher": p_T, "aligned": p_A, "map": m (None without refinement), "refined": y_r} for images
        ``x_u`` (``index``: their positions in the unlabeled pool, for ``refine_map="appg"``); p_A =
        :func:`align_base_rate` of p_T (p_T itself with ``align`` off)."""
        p_t = torch.sigmoid(self.teacher(x_u).float())
        p_a = align_base_rate(p_t, self.align_bias) if self.opts["align"] else p_t
        refine = self.opts["text_refine"] if refine is None else refine
        if not refine or not self.has_map:
            return {"teacher": p_t, "aligned": p_a, "map": None, "refined": p_a}
        m = (self.appg_map(index, x_u) if self.opts["refine_map"] == "appg"
             else self.vlm.map_prob(x_u, self.phrase_g).float())
        if self.opts["fusion"] == "select":
            y = select_by_text(p_a, m)
        elif self.opts["fusion"] == "overlap":
            y = keep_overlapping(p_a, m)
        else:
            y = fuse_log_odds(p_a, m, self.base_rate(), self.opts["refine_weight"])
        return {"teacher": p_t, "aligned": p_a, "map": m, "refined": y}

    def loss(self, batch_l, batch_u, step):
        o = self.opts
        x_u = batch_u["image"]
        ls = self.supervised(batch_l)
        pl = self.pseudo_labels(x_u, index=batch_u.get("index"))
        self.align_step(pl["refined"])
        y = pl["refined"]
        if o["target"] == "hard":
            y = (y > 0.5).float()
        x_s = x_u + o["noise"] * torch.randn_like(x_u) if o["noise"] > 0 else x_u
        logs = {}
        if o["conf_weight"]:
            c = label_confidence(pl["aligned"], y)
            lu = confidence_weighted(bce_dice_per_image(self.student(x_s), y), c)
            logs["conf"] = c.mean()
        else:
            lu = bce_dice(self.student(x_s), y)
        w = o["lambda_u"] * sigmoid_rampup(step, self.horizon(o["rampup_steps"]))
        return ls + w * lu, {"Ls": ls.detach(), "Lu": lu.detach(), "fg": (y > 0.5).float().mean(),
                             "fg_teacher": (pl["teacher"] > 0.5).float().mean(), "pi": self.base_rate(),
                             "align_bias": self.align_bias.clone(), **logs}

    def after_step(self, step):
        ema_update(self.teacher, self.student, self.opts["ema_decay"], step)

    def report(self, unlabeled) -> dict:
        """Dice of the final teacher's pseudo-labels on the unlabeled pool: raw, aligned and text-refined
        (with ``text_refine`` off there is no "refined"); with the text map, also how informative the map is next
        to the teacher: :func:`pool_report`, one pass over the pool."""
        return pool_report(self, unlabeled)


ABLATION_DUSSS = {
    "dusss-no_dcl": ("dusss", {"dcl": False}),
    "dusss-no_sss": ("dusss", {"sss": False}),
    "dusss-no_grounding": ("dusss", {"grounding": False, "appg_grounding": False}),
    "dusss-no_text_refine": ("dusss", {"text_refine": False}),
    "dusss-log_odds": ("dusss", {"fusion": "log_odds"}),
    "dusss-align": ("dusss", {"align": True}),
    "dusss-student_noise": ("dusss", {"noise": 0.05}),
    "dusss-conf_weight": ("dusss", {"conf_weight": True}),
    "dusss-appg": ("dusss", {"refine_map": "appg", "fusion": "overlap"}),
    "dusss-appg_grounding": ("dusss", {"appg_grounding": True}),
    "dusss-labeled_grounding": ("dusss", {"appg_grounding": False}),
}


@torch.no_grad()
def pool_batches(method: DuSSS, arrays, batch: int = 16):
    """(batch, pseudo-labels with the text refinement) for consecutive batches of ``arrays``, the method in eval
    mode on its teacher's device (its mode restored afterwards): the one pass over a pool that
    :func:`pool_report` and :func:`refined_images` share."""
    dev = next(method.teacher.parameters()).device
    was = method.training
    method.eval()
    try:
        if method.opts["refine_map"] == "appg" and method._appg is not None:
            ids = [s.id for s in arrays.samples]
            if ids != method._appg[1]:
                raise ValueError("dusss: these arrays are not the unlabeled pool whose APPG masks the method holds "
                                 "(refine_map='appg' looks masks up by position). Fix: pass the run's unlabeled pool.")
        for i in range(0, len(arrays), batch):
            b = arrays.batch(torch.arange(i, min(i + batch, len(arrays))))
            yield b, method.pseudo_labels(b["image"].to(dev), refine=True, index=b["index"])
    finally:
        method.train(was)


@torch.no_grad()
def pool_report(method: DuSSS, arrays, batch: int = 16, threshold: float = 0.5, auc: bool = True,
                max_pixels: int = 2_000_000) -> dict:
    """One pass of the final teacher over ``arrays`` (e.g. the unlabeled pool after training), scored against their
    masks. **Reporting only**: nothing is fitted or selected on it.

    * ``pseudo_label_dice``: mean per-image Dice (threshold ``threshold``) of the pseudo-labels - raw (``teacher``),
      base-rate aligned (``aligned``, only with ``align`` on) and text-refined (``refined``, only with a VLM); a
      label that would repeat another is not scored;
    * ``map_auc`` (with a VLM and ``auc``): pixel ROC AUC (:func:`busnb.metrics.pixel_auc`) of the teacher's
      probability p_T, the text map m and the refined label y_r - how well each ranks lesion above background
      pixels, whatever its calibration (0.5 = no information; a map far below the teacher can only add noise to
      its labels). Every k-th pixel is scored, k chosen so at most ``max_pixels`` are (deterministic).
    * ``flips`` (with a VLM): what the refinement changes at the threshold - the share of pool pixels whose label
      it flips (``changed``), the share of those flips that agree with the mask (``right``; 0.5 or less: the
      flips add as many errors as they remove), and the Dice of the refined map thresholded per image at the
      teacher's own foreground area (``dice_at_teacher_area``: its top pixels, as many as the teacher labels
      lesion) - the refinement's ranking without its change of area.
    * ``selection`` (with a VLM): the ceiling of the text-guided selection - the Dice of the labels that keep,
      per image, the one candidate (connected component of the teacher's label) that best matches the mask
      (``oracle``, :func:`best_component`: a perfect map's choice), and the share of images with more than one
      candidate (``multi``), the only images the selection can change. (refined - teacher) / (oracle - teacher)
      is the share of the possible gain the map realises.
    * ``confidence`` (with a VLM): Spearman rank correlation, over the images with a non-empty label, between
      the label's Dice and a per-image confidence computed without masks - the text map's mean over the label
      (``map``) and the teacher's own mean probability over it (``teacher``): which of the two tells good
      pseudo-labels from bad ones."""
    import math

    from ..metrics import pixel_auc, soft_dice_batch

    d = {"teacher": [], **({"aligned": []} if method.opts["align"] else {}),
         **({"refined": []} if method.has_map else {})}
    auc = auc and method.has_map
    stride = max(1, math.ceil(len(arrays) * int(np.prod(arrays.masks.shape[1:])) / max_pixels))
    px = {"teacher": [], "map": [], "refined": [], "mask": []}
    flips = {"changed": 0, "right": 0, "pixels": 0, "dice": []}  # counts stay on the device until the end
    sel = {"oracle": [], "n": [], "map": [], "teacher": []}  # the selection's ceiling, per-image confidences
    for b, pl in pool_batches(method, arrays, batch):
        y = b["mask"].to(pl["teacher"].device)
        for k in d:
            d[k].append(soft_dice_batch((pl[k] > threshold).float(), y))
        if auc:
            for k in px:
                px[k].append((y if k == "mask" else pl[k]).float().flatten()[::stride].cpu())
        if "refined" in pl:
            t, r = pl["teacher"] > threshold, pl["refined"] > threshold
            changed = t != r
            flips["changed"] += changed.sum()
            flips["right"] += (changed & (r == (y > 0.5))).sum()
            flips["pixels"] += changed.numel()
            flips["dice"].append(soft_dice_batch(top_area(pl["refined"], t.flatten(1).sum(1)), y))
            cand = pl["aligned"]  # the label the selection chooses from (the teacher's, with align off)
            fg = (cand > threshold).float()
            best, n = best_component(fg, y)
            sel["oracle"].append(soft_dice_batch(best, y))
            sel["n"].append(n)
            sel["map"].append(label_confidence(pl["map"], fg, threshold))
            sel["teacher"].append(label_confidence(cand, fg, threshold))
    out = {"pseudo_label_dice": {**{k: float(torch.cat(v).mean()) for k, v in d.items()}, "n": len(arrays)}}
    if flips["dice"]:
        changed, right = int(flips["changed"]), int(flips["right"])
        out["flips"] = {"changed": changed / max(flips["pixels"], 1),
                        "right": right / changed if changed else float("nan"),
                        "dice_at_teacher_area": float(torch.cat(flips["dice"]).mean()), "n": len(arrays)}
    if sel["n"]:
        from scipy.stats import spearmanr

        n = np.concatenate(sel["n"])
        out["selection"] = {"oracle": float(torch.cat(sel["oracle"]).mean()), "multi": float((n > 1).mean()),
                            "n": len(arrays)}
        has = n > 0
        dice = torch.cat(d.get("aligned", d["teacher"])).cpu().numpy()[has]  # the candidates' label's Dice
        rho = {k: float(spearmanr(torch.cat(sel[k]).cpu().numpy()[has], dice)[0]) if len(dice) > 2
               else float("nan") for k in ("map", "teacher")}
        out["confidence"] = {**rho, "n": int(has.sum())}
    if auc:
        y = torch.cat(px.pop("mask")).numpy()
        out["map_auc"] = {**{k: pixel_auc(torch.cat(v).numpy(), y) for k, v in px.items()}, "n": len(arrays),
                          "stride": stride}
    return out


def describe_pool(rep: dict) -> list[str]:
    """:func:`pool_report`'s numbers (as in a run's ``metrics.json`` or ``pool_report.json``) as sentences, for
    ``busnb pool-report`` and ``07_vision_language``; parts a report lacks (older runs, no map) are left out."""
    q = rep["pseudo_label_dice"]
    aligned = f", base-rate aligned {q['aligned']:.3f}" if "aligned" in q else ""
    refined = f", refined {q['refined']:.3f}" if "refined" in q else ""
    out = [f"pseudo-label Dice on the {q['n']} unlabeled images: teacher {q['teacher']:.3f}{aligned}{refined}"]
    auc, sel, conf = rep.get("map_auc"), rep.get("selection"), rep.get("confidence")
    if auc:
        out.append(f"pixel ROC AUC on the same images: teacher {auc['teacher']:.3f}, map {auc['map']:.3f}, "
                   f"refined {auc['refined']:.3f}")
    if sel:
        out.append(f"best single candidate per image (a perfect map's choice): {sel['oracle']:.3f}; "
                   f"{sel['multi']:.0%} of the images have several candidates")
    if conf:
        out.append(f"rank correlation with the labels' Dice: the map's mean over the label {conf['map']:.2f}, "
                   f"the teacher's own mean probability {conf['teacher']:.2f} ({conf['n']} non-empty labels)")
    return out


def best_component(mask: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """Per image, the connected component of the binary ``mask`` (B, 1, H, W) with the highest Dice against
    ``target`` (ties: the first found; no foreground: empty), as float masks, and the number of components per
    image. The choice :func:`select_by_text` would make with a perfect map, so the ceiling of any rule that keeps
    one of the teacher's candidates. Reads the masks: reporting only (:func:`pool_report`)."""
    y = target.detach().to("cpu", torch.bool).numpy()
    out, counts = np.zeros(tuple(mask.shape), bool), np.zeros(mask.shape[0], np.int64)
    for i, lab, n in components(mask > 0.5):
        counts[i] = n
        if n:
            flat, yi = lab.ravel(), y[i, 0].ravel()
            area = np.bincount(flat, minlength=n + 1)[1:]
            inter = np.bincount(flat, weights=yi, minlength=n + 1)[1:]
            out[i, 0] = lab == int(np.argmax(2 * inter / (area + yi.sum()))) + 1
    return torch.from_numpy(out).to(device=mask.device, dtype=torch.float32), counts


def top_area(score: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Float masks (B,1,H,W) marking, per image, the ``n[b]`` pixels of ``score`` with the highest values (ties
    broken by position, so exactly ``n[b]`` are marked): a map thresholded at a given foreground area."""
    flat = score.flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return (rank < n.to(flat.device).view(-1, 1)).float().view_as(score)


@torch.no_grad()
def refined_images(method: DuSSS, arrays, batch: int = 16, threshold: float = 0.5) -> list[int]:
    """Indices of the images of ``arrays`` whose thresholded pseudo-label the text refinement changes (the
    images worth looking at in ``07_vision_language``); no masks are read."""
    if not method.has_map:
        raise ValueError("refined_images: this dusss has no map (text_refine=False)")
    diff = [((pl["aligned"] > threshold) != (pl["refined"] > threshold)).flatten(1).any(1)
            for _, pl in pool_batches(method, arrays, batch)]
    return torch.nonzero(torch.cat(diff)).flatten().tolist() if diff else []


def pseudo_label_dice(method: DuSSS, arrays, batch: int = 16, threshold: float = 0.5) -> dict:
    """The ``pseudo_label_dice`` part of :func:`pool_report`."""
    return pool_report(method, arrays, batch, threshold, auc=False)["pseudo_label_dice"]


def map_auc(method: DuSSS, arrays, batch: int = 16, max_pixels: int = 2_000_000) -> dict:
    """The ``map_auc`` part of :func:`pool_report` (a method with a map only)."""
    if not method.has_map:
        raise ValueError("map_auc: this dusss has no map (text_refine=False)")
    return pool_report(method, arrays, batch, max_pixels=max_pixels)["map_auc"]
