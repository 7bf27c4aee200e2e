"""Classic semi-supervised baselines as loss compositions in the one trainer.

* Mean Teacher - Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017.
* Cross Pseudo Supervision - Chen et al., "Semi-supervised semantic segmentation with cross
  pseudo supervision", CVPR 2021.
* BCP - Bai et al., "Bidirectional copy-paste for semi-supervised medical image segmentation",
  CVPR 2023 (with its labeled copy-paste pre-training stage).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..losses import bce_dice, dice_loss
from ..optim import paper_or_shared
from .base import Method, Supervised, distinct_decoder, ema_update, forward_joint, sigmoid_rampup


# The published optimisers (``optimizer="paper"``); ``"shared"`` trains with the profile's Adam instead.
SSL4MIS_SGD = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "poly", "power": 0.9}
BCP_SGD = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "constant"}


class MeanTeacher(Method):
    """Mean Teacher (Tarvainen & Valpola 2017), in the form of the medical re-implementation its segmentation
    results are usually quoted from (SSL4MIS, ``train_mean_teacher_2D``):

    L = L_s + w(t) * MSE(sigmoid(student(x_u)), sigmoid(teacher(x_u + n))), n = clip(N(0, noise^2), -2 noise,
    2 noise) (noise 0.1): the student sees the unlabeled images clean and only the teacher's input is perturbed, as
    SSL4MIS does (``student_noise=True``: the student's input gets its own draw n' too, the original paper's form and
    this class's default until the 2026-11-24 session; variant ``mean_teacher-student_noise``); teacher = EMA of the
    student, decay a = min(ema_decay, (t + 1) / (t + 10)) (``ema_warmup="count"``, as every EMA teacher here;
    ``"mean"``, variant ``mean_teacher-ema_mean``: a = min(ema_decay, 1 - 1 / (t + 1)), the form of SSL4MIS and of
    the paper's code, :func:`busnb.methods.base.ema_update`), ema_decay 0.99; w(t) = lambda_u * exp(-5 (1 - t / T)^2)
    (the paper's sigmoid ramp-up), lambda_u = 0.1, T = ``rampup_steps`` or, when None, the whole run (SSL4MIS:
    200 x 150 of its 30,000 iterations). SSL4MIS's supervised loss is 0.5 (CE + Dice), this repo's BCE + Dice, so
    its 0.1 weighs the consistency at least twice as much against L_s; ``lambda_u=0.2`` was measured (BUSI, 64 px,
    45 epochs, ``augment=weak``, 12 runs: ``results/cpu-2026-11-24/d64e45*-weak/mean_teacher-lambda0.2*``) and
    validation did not choose it (best validation Dice lower in 7 of 12 runs, 5 of 6 at 10 %).
    ``joint_bn``: False (default) passes the labeled and the unlabeled images through the student separately
    (batch-norm statistics apart, as for ``cps``, whose joint batch over-segments BUSI); True (variant
    ``mean_teacher-joint_bn``) passes them as one batch, as SSL4MIS does. Measured from scratch (BUSI, 64 px,
    45 epochs, ``augment=weak``, split seeds 0-2, 2.5 % and 10 %: ``results/cpu-2026-11-24/d64e45*-weak/
    mean_teacher-joint_bn``): best validation Dice lower in 5 of 6 runs, so the default stays separate passes.
    ``optimizer``: "shared" (default) = the profile's Adam, as every method in the comparison; "paper" = SGD
    lr 0.01, momentum 0.9, weight decay 1e-4, poly(0.9) per iteration. Weak augmentation (flip, rotation) is
    the profile's ``augment="weak"``, applied by the trainer to every method alike.
    ``evaluate``: the network that is validated, selected and tested: "student" (default; SSL4MIS validates its
    student) or "teacher", the EMA network (variant ``mean_teacher-teacher``): the original paper's training
    curves (Tarvainen & Valpola 2017, Sec. 3.3, Fig. 3) show the EMA-weighted model more accurate than the bare
    student.
    ``batch_norm``: "shared" (default) runs the teacher in eval mode on the running statistics it copies from the
    student, as every EMA teacher in this repo; "release" (variant ``mean_teacher-release_bn``) keeps it in
    training mode, so it normalises each noisy unlabeled batch by that batch's own statistics, as SSL4MIS's
    ``ema_model`` does (it is never switched to eval mode; ``bcp``'s default, from its release, does the same).
    Measured (BUSI, 64 px, 45 epochs, ``augment=weak``, split seeds 0-2, 2.5 % and 10 %, from scratch and from
    SimCLR + restore: 12 runs, ``results/cpu-2026-11-24/d64e45*-weak/mean_teacher-release_bn*``): best validation
    Dice higher in 4 runs, lower in 6, level in 2 (mean difference -0.0002), so validation does not choose it and
    the default stays "shared". (Test, reported only: +1.30 and +1.46 at 10 %, -0.56 and -0.87 at 2.5 %.)
    ``consistency``: the images the MSE term runs over: "unlabeled" (default; SSL4MIS) or "all" (variant
    ``mean_teacher-all_consistency``): the labeled images too, as the original paper applies its consistency cost
    to every example of the minibatch (Tarvainen & Valpola 2017, Sec. 2); the teacher sees each labeled image
    with its own noise draw, and the mean runs over all pixels of both batches. Measured from scratch (BUSI, 64 px,
    45 epochs, ``augment=weak``, split seeds 0-2, 2.5 % and 10 %: ``results/cpu-2026-11-24/d64e45*-weak/
    mean_teacher-all_consistency``): best validation Dice higher in 2 of 6 runs, so the default stays "unlabeled".
    ``ema_warmup="mean"`` measured the same way (folders ``mean_teacher-ema_mean``): higher in 3 of 6 (all three at
    10 %), short of the 4 of 6 fixed beforehand, so the default stays "count"."""

    name = "mean_teacher"
    needs_unlabeled = True

    def __init__(self, make_net, lambda_u: float = 0.1, ema_decay: float = 0.99, noise: float = 0.1,
                 rampup_steps: int | None = None, optimizer: str = "shared", student_noise: bool = False,
                 evaluate: str = "student", batch_norm: str = "shared", joint_bn: bool = False,
                 consistency: str = "unlabeled", ema_warmup: str = "count"):
        super().__init__(make_net)
        paper_or_shared(optimizer, SSL4MIS_SGD, "mean_teacher")
        if consistency not in ("unlabeled", "all"):
            raise ValueError(f"mean_teacher: consistency={consistency!r}; choose 'unlabeled' (SSL4MIS) or 'all' "
                             "(the original paper: labeled images too)")
        if evaluate not in ("student", "teacher"):
            raise ValueError(f"mean_teacher: evaluate must be 'student' or 'teacher', not {evaluate!r}")
        if ema_warmup not in ("count", "mean"):
            raise ValueError(f"mean_teacher: ema_warmup={ema_warmup!r}; choose 'count' ((t+1)/(t+10)) or 'mean' "
                             "(1 - 1/(t+1), SSL4MIS)")
        if batch_norm not in ("shared", "release"):
            raise ValueError(f"mean_teacher: batch_norm={batch_norm!r}; choose 'shared' (teacher in eval mode) or "
                             "'release' (teacher on its batch's statistics, as SSL4MIS)")
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.opts = dict(lambda_u=lambda_u, ema_decay=ema_decay, noise=noise, rampup_steps=rampup_steps,
                         optimizer=optimizer, student_noise=bool(student_noise), evaluate=evaluate,
                         batch_norm=batch_norm, joint_bn=bool(joint_bn), consistency=consistency,
                         ema_warmup=ema_warmup)

    def eval_net(self):
        return self.teacher if self.opts["evaluate"] == "teacher" else self.student

    def optimizer_recipe(self):
        return paper_or_shared(self.opts["optimizer"], SSL4MIS_SGD, "mean_teacher")

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.train(mode and self.opts["batch_norm"] == "release")  # release: batch statistics
        return self

    def loss(self, batch_l, batch_u, step):
        o = self.opts
        x_u = batch_u["image"]
        x_s = x_u + input_noise(x_u, o["noise"]) if o["student_noise"] else x_u
        n = len(batch_l["image"])  # joint_bn: one student pass over labeled + unlabeled (SSL4MIS), else two
        out = forward_joint(self.student, torch.cat([batch_l["image"], x_s]), n, o["joint_bn"])
        ls = bce_dice(out[:n], batch_l["mask"])
        x_c = torch.cat([batch_l["image"], x_u]) if o["consistency"] == "all" else x_u  # images the MSE runs over
        p_s = torch.sigmoid(out[len(out) - len(x_c):].float())
        with torch.no_grad():
            p_t = torch.sigmoid(self.teacher(x_c + input_noise(x_c, o["noise"])).float())
        lu = F.mse_loss(p_s, p_t)
        w = o["lambda_u"] * sigmoid_rampup(step, self.horizon(o["rampup_steps"]))
        return ls + w * lu, {"Ls": ls.detach(), "Lu": lu.detach(), "w": torch.as_tensor(w, device=ls.device)}

    def after_step(self, step):
        ema_update(self.teacher, self.student, self.opts["ema_decay"], step, self.opts["ema_warmup"])


def input_noise(x: torch.Tensor, sd: float) -> torch.Tensor:
    """Mean Teacher's input perturbation: N(0, sd^2) clipped to [-2 sd, 2 sd] (SSL4MIS: sd 0.1, clip 0.2)."""
    return torch.clamp(torch.randn_like(x) * sd, -2 * sd, 2 * sd)


def cross_pseudo_loss(logits_1, logits_2, weight_1=None, weight_2=None, dice: bool = False):
    """CPS (Chen et al. 2021, Eq. 3): each network learns the other's hard pseudo-label y_k = [p_k > 0.5].

    L = l(logits_1, y_2; weight_2) + l(logits_2, y_1; weight_1), where weight_k (optional, per pixel) is
    attached to the pseudo-label of network k, and l = pixel-mean weighted BCE, as published, plus a
    weighted Dice term when ``dice`` (the form of the paper's L_u = BCE + Dice; it counts a small lesion as
    much as the background; SSL4MIS's CPS uses cross-entropy alone)."""
    y1 = (logits_1.detach() > 0).float()
    y2 = (logits_2.detach() > 0).float()
    l12 = _wbce(logits_1, y2, weight_2)
    l21 = _wbce(logits_2, y1, weight_1)
    if dice:
        l12 = l12 + dice_loss(logits_1, y2, weight_2)
        l21 = l21 + dice_loss(logits_2, y1, weight_1)
    return l12 + l21


def check_pseudo_loss(pseudo_loss: str) -> None:
    if pseudo_loss not in ("bce", "bce_dice"):
        raise ValueError(f"pseudo_loss must be 'bce' or 'bce_dice', not {pseudo_loss!r}")


def _wbce(logits, target, weight=None):
    """BCE summed with pixel weights over *all* pixels' count (a weight-0 pixel lowers the loss, it does not
    re-normalise the others)."""
    l = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    if weight is None:
        return l.mean()
    return (weight * l).sum() / weight.numel()


class CrossPseudoSupervision(Method):
    """Cross pseudo supervision (Chen et al., CVPR 2021, Eq. 1-4): two networks of one architecture, each
    initialised independently (different random draws; from pretrained weights, the two share the pretrained
    encoder and their decoders differ, as the paper's backbones share ImageNet weights and its heads are drawn
    at random: :func:`busnb.methods.base.distinct_decoder`); each learns the other's hard pseudo-label (the argmax,
    here y_k = [p_k > 0.5] for one sigmoid output) with cross-entropy (``cross_pseudo_loss``):

    L = L_s(1) + L_s(2) + w(t) * [CE(f_1(x_u), y_2) + CE(f_2(x_u), y_1)],   w(t) = lambda_u exp(-5 (1 - t/T)^2).

    The trade-off weight follows CPS's medical re-implementation (SSL4MIS ``train_cross_pseudo_supervision_2D``,
    the CPS row of the BCP and dual-network tables): lambda_u = 0.1 with a sigmoid ramp-up from 0 over the whole
    run (``rampup_steps`` None; SSL4MIS: 200 x 150 of 30,000 iterations). (The paper's own lambda = 1.5 / 6 is
    for ImageNet-pretrained backbones on VOC / Cityscapes. This class's former lambda = 1 reached over 1,000
    steps let the two from-scratch networks, once they had memorised the 13 labeled BUSI images, agree on a
    wrong answer for the unlabeled ones - 45 % foreground against ~9 % true - and later on empty masks; see
    ``results/RECORD.md``, *Baselines in the same trainer*.) ``optimizer``: "shared" (default, the profile's
    Adam as for every method of the comparison) or "paper" = SGD lr 0.01, momentum 0.9, weight decay 1e-4, poly(0.9) per
    iteration (both papers' schedule). Weak augmentation is the profile's ``augment="weak"`` (trainer, every
    method alike). ``pseudo_loss``: "bce" (as published) or "bce_dice".

    ``joint_bn``: False (default, as the CPS authors' release does: TorchSemiSeg's ``train.py`` calls each
    network on the labeled batch and on the unlabeled batch separately) runs two forward passes, so batch-norm
    statistics of labeled and unlabeled images stay apart, as the supervised baseline sees labeled images only.
    True passes both through each network as one batch (SSL4MIS's re-implementation; variant ``cps-joint_bn``).
    On BUSI the joint batch is what made CPS over-segment (``results/RECORD.md``, *Baselines in the same trainer*:
    test Dice 30.27 +- 0.98 joint vs 46.56 +- 5.20 separate, supervised 42.42 +- 4.13; 64-px diagnosis runs, split
    seeds 0-2, ``results/cpu-2026-11-23/d64``)."""

    name = "cps"
    needs_unlabeled = True

    def __init__(self, make_net, lambda_u: float = 0.1, rampup_steps: int | None = None, pseudo_loss: str = "bce",
                 optimizer: str = "shared", joint_bn: bool = False):
        super().__init__(make_net)
        check_pseudo_loss(pseudo_loss)
        paper_or_shared(optimizer, SSL4MIS_SGD, "cps")
        self.second = make_net()  # independent random initialisation
        self.second_decoder_redrawn = distinct_decoder(self.second, self.student)  # one pretrained unet.pt in both
        self.opts = dict(lambda_u=lambda_u, rampup_steps=rampup_steps, pseudo_loss=pseudo_loss, optimizer=optimizer,
                         joint_bn=bool(joint_bn))

    def optimizer_recipe(self):
        return paper_or_shared(self.opts["optimizer"], SSL4MIS_SGD, "cps")

    def trainable(self):
        return list(self.student.parameters()) + list(self.second.parameters())

    def loss(self, batch_l, batch_u, step):
        x = torch.cat([batch_l["image"], batch_u["image"]])
        n = len(batch_l["image"])
        o1, o2 = (forward_joint(net, x, n, self.opts["joint_bn"]) for net in (self.student, self.second))
        ls = bce_dice(o1[:n], batch_l["mask"]) + bce_dice(o2[:n], batch_l["mask"])
        lu = cross_pseudo_loss(o1[n:], o2[n:], dice=self.opts["pseudo_loss"] == "bce_dice")
        w = self.opts["lambda_u"] * sigmoid_rampup(step, self.horizon(self.opts["rampup_steps"]))
        with torch.no_grad():  # diagnostics: foreground fraction of each pseudo-label, agreement of the two
            y1, y2 = (o1[n:] > 0).float(), (o2[n:] > 0).float()
        return ls + w * lu, {"Ls": ls.detach(), "Lu": lu.detach(), "w": torch.as_tensor(w, device=ls.device),
                             "fg1": y1.mean(), "fg2": y2.mean(), "agree": (y1 == y2).float().mean()}

    def report(self, unlabeled) -> dict:
        """Whether the second network's decoder was drawn again at the start (:func:`distinct_decoder`)."""
        return {"second_decoder_redrawn": self.second_decoder_redrawn}


def copy_paste_mask(shape, ratio: float = 2 / 3, generator=None, device=None) -> torch.Tensor:
    """BCP's zero-centred mask M: (B, 1, H, W) with a random ``ratio``-sized rectangle set to 1 per image.
    Drawn on ``device`` without a Python loop or host synchronisation (capturable)."""
    b, _, h, w = shape
    mh, mw = int(h * ratio), int(w * ratio)
    ys = torch.randint(0, h - mh + 1, (b, 1, 1, 1), generator=generator, device=device)
    xs = torch.randint(0, w - mw + 1, (b, 1, 1, 1), generator=generator, device=device)
    yy = torch.arange(h, device=device).view(1, 1, h, 1)
    xx = torch.arange(w, device=device).view(1, 1, 1, w)
    return ((yy >= ys) & (yy < ys + mh) & (xx >= xs) & (xx < xs + mw)).float()


def components(mask: torch.Tensor):
    """Connected foreground components of a binary ``mask`` (B, 1, *spatial), per image: yields (i, labels, n)
    with ``labels`` the image's integer label array (numpy, 0 = background) and ``n`` its number of components.
    Full connectivity (8 in 2D, 26 in 3D); on the host (``scipy.ndimage.label``)."""
    import numpy as np
    from scipy import ndimage

    m = mask.detach().to("cpu", torch.bool).numpy()
    structure = np.ones((3,) * (m.ndim - 2), bool)
    for i in range(m.shape[0]):
        lab, n = ndimage.label(m[i, 0], structure)
        yield i, lab, n


def largest_component(mask: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, only the largest connected foreground component of a binary ``mask`` (B, 1, *spatial): BCP's
    pseudo-label post-processing (the release's ``get_ACDC_masks(..., nms=1)``, per class per image; here one
    class). "Largest" is by area, or, given ``weight`` (same shape as ``mask``), by the sum of ``weight`` over the
    component (``dusss``'s text-guided selection). Full connectivity (8 in 2D, 26 in 3D); an image without
    foreground stays empty; ties keep the component found first. Computed on the host (:func:`components`): a
    method that uses it is not capturable."""
    import numpy as np

    wt = None if weight is None else weight.detach().to("cpu", torch.float64).numpy()
    out = np.zeros(tuple(mask.shape), bool)
    for i, lab, n in components(mask):
        if n:
            mass = np.bincount(lab.ravel(), weights=None if wt is None else wt[i, 0].ravel(), minlength=n + 1)
            out[i, 0] = lab == int(np.argmax(mass[1:])) + 1
    return torch.from_numpy(out).to(device=mask.device, dtype=mask.dtype)


class BCPPretrain(Method):
    """BCP stage 1: supervised with copy-paste between labeled images: x = x_a M + x_b (1-M), y likewise.
    ``copy_paste=False``: plain supervised training on the labeled images instead (a diagnostic, variant
    ``bcp-plain_pretrain``: not BCP's recipe). ``optimizer`` as :class:`BCP` ("paper": SGD lr 0.01, momentum 0.9,
    weight decay 1e-4, constant)."""

    name = "bcp_pretrain"

    def __init__(self, make_net, optimizer: str = "shared", copy_paste: bool = True):
        super().__init__(make_net)
        paper_or_shared(optimizer, BCP_SGD, "bcp_pretrain")
        self.opts = dict(optimizer=optimizer, copy_paste=bool(copy_paste))

    def optimizer_recipe(self):
        return paper_or_shared(self.opts["optimizer"], BCP_SGD, "bcp_pretrain")

    def loss(self, batch_l, batch_u, step):
        x, y = batch_l["image"], batch_l["mask"]
        if not self.opts["copy_paste"]:
            ls = self.supervised(batch_l)
            return ls, {"Ls": ls.detach()}
        m = copy_paste_mask(x.shape, device=x.device)
        xr, yr = torch.roll(x, 1, 0), torch.roll(y, 1, 0)  # each image pasted with its neighbour in the batch
        xm, ym = x * m + xr * (1 - m), y * m + yr * (1 - m)
        ls = bce_dice(self.student(xm), ym)
        return ls, {"Ls": ls.detach()}


class BCP(Method):
    """BCP stage 2 (Eq. 5-8 of Bai et al.): teacher = EMA of the student (decay 0.99), both initialised from the
    pre-trained net; X_in = x_l M + x_u (1-M), X_out = x_u M + x_l (1-M) with M a zero-centred 2/3-sized
    rectangle; targets mix ground truth and the teacher's hard pseudo-labels the same way; the unlabeled part
    of each loss is weighted by ``alpha`` (0.5). Each hard pseudo-label keeps only its largest connected
    component (``largest_cc``, on by default: the release's 2D and 3D code apply it to every teacher label,
    :func:`largest_component`; off: the thresholded teacher output as it is). No ramp-up: the released 2D code
    computes one but does not use it (copy-paste keeps a labeled region in every input from the first step).
    ``optimizer``: "shared" (default, the profile's Adam) or "paper" = the release's SGD lr 0.01, momentum 0.9,
    weight decay 1e-4, constant, for the pre-training stage too. Weak augmentation: the profile's
    ``augment="weak"``. ``batch_norm``: "release" (default, the release's handling) keeps the EMA teacher in
    training mode, so it normalises each unlabeled batch by that batch's own statistics, and passes the two mixed
    batches through the student separately; "shared" (variant ``bcp-shared_bn``, the former default: every
    ``bcp`` run in ``results/`` before these 45-epoch ones) runs the teacher in eval mode on its running
    statistics, as every other teacher in this repo, and both mixed batches through the student in one pass.
    Chosen on validation (BUSI, 64 px, 45 epochs, split seeds 0-2 at 2.5 % and 10 %,
    ``results/cpu-2026-11-24/d64e45*``): best validation Dice higher in 5 of the 6 runs (mean 0.422 vs 0.397 at
    2.5 %, 0.576 vs 0.551 at 10 %), and the 2.5 % seed-1 run no longer collapses (largest share of empty
    validation predictions 0.26 vs 0.62). ``pretrain_copy_paste=False`` (variant
    ``bcp-plain_pretrain``, a diagnostic, not BCP's recipe, with ``batch_norm="shared"`` as when it was measured):
    stage 1 is plain supervised training. Measured on BUSI 10 %, 64 px, 45 epochs, split seeds 0-2
    (``results/cpu-2026-11-24/d64e45-r10``): 55.58 +- 2.83 test Dice against 50.24 +- 1.35 for ``bcp-shared_bn``
    (supervised 55.31 +- 4.56): stage 2 stays near where stage 1 leaves it."""

    name = "bcp"
    needs_unlabeled = True

    def __init__(self, make_net, alpha: float = 0.5, ema_decay: float = 0.99, optimizer: str = "shared",
                 largest_cc: bool = True, pretrain_copy_paste: bool = True, batch_norm: str = "release"):
        super().__init__(make_net)
        paper_or_shared(optimizer, BCP_SGD, "bcp")
        if batch_norm not in ("shared", "release"):
            raise ValueError(f"bcp: batch_norm={batch_norm!r}; choose 'shared' (teacher in eval mode, one student "
                             "pass) or 'release' (teacher on batch statistics, two student passes)")
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.opts = dict(alpha=alpha, ema_decay=ema_decay, optimizer=optimizer, largest_cc=largest_cc,
                         pretrain_copy_paste=bool(pretrain_copy_paste), batch_norm=batch_norm)
        self.capturable = not largest_cc  # the component search runs on the host

    def optimizer_recipe(self):
        return paper_or_shared(self.opts["optimizer"], BCP_SGD, "bcp")

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.train(mode and self.opts["batch_norm"] == "release")  # release: batch statistics
        return self

    def stages(self):
        """BCP's pre-training on the labeled images (copy-paste among them): the ``bcp_pretrain`` stage."""
        from ..stages import StageSpec

        params = {} if self.opts["optimizer"] == "shared" else {"optimizer": self.opts["optimizer"]}
        if not self.opts["pretrain_copy_paste"]:
            params["copy_paste"] = False  # the default keeps its cached stage key
        return [StageSpec("bcp_pretrain", params)]

    def attach(self, kind, state):
        """Student and teacher both start from the pre-trained network."""
        if kind != "bcp_pretrain":
            return super().attach(kind, state)
        self.student.load_state_dict(state)
        self.teacher.load_state_dict(state)

    def loss(self, batch_l, batch_u, step):
        a = self.opts["alpha"]
        x_l, y_l, x_u = batch_l["image"], batch_l["mask"], batch_u["image"]
        with torch.no_grad():
            y_u = (self.teacher(x_u).float() > 0).float()
            if self.opts["largest_cc"]:
                y_u = largest_component(y_u)
        m = copy_paste_mask(x_l.shape, device=x_l.device)
        x_in, y_in = x_l * m + x_u * (1 - m), y_l * m + y_u * (1 - m)
        x_out, y_out = x_u * m + x_l * (1 - m), y_u * m + y_l * (1 - m)
        w_in = m + a * (1 - m)      # labeled region weight 1, unlabeled region alpha
        w_out = a * m + (1 - m)
        n = len(x_l)
        o = forward_joint(self.student, torch.cat([x_in, x_out]), n, self.opts["batch_norm"] == "shared")
        l_in, l_out = bce_dice(o[:n], y_in, w_in), bce_dice(o[n:], y_out, w_out)
        return l_in + l_out, {"L_in": l_in.detach(), "L_out": l_out.detach()}

    def after_step(self, step):
        ema_update(self.teacher, self.student, self.opts["ema_decay"], step)


__all__ = ["MeanTeacher", "CrossPseudoSupervision", "BCP", "BCPPretrain", "Supervised", "copy_paste_mask",
           "largest_component", "components", "cross_pseudo_loss", "input_noise", "SSL4MIS_SGD", "BCP_SGD"]
