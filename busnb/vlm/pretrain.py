"""DuSSS step 1: vision-language pretraining on the train pool (labeled + unlabeled images and their texts).

Run as the ``vlm_pretrain`` stage (``busnb.stages``: cached by its inputs, resumable, own RNG stream) by the
``dusss`` method, or alone with ``busnb vlm-pretrain --profile P --ratio R --seed S`` (the same stage, the
same cache). What it reads: images of the labeled and unlabeled train pool; the texts of
:mod:`busnb.vlm.texts` (class + phrase bank for every pool image, mask facts for labeled images); the
**labeled** masks for the grounding term (``grounding``: each step also grounds the lesion phrases on
``grounding_batch`` labeled images, :func:`busnb.vlm.losses.grounding_loss`) and, after training, to calibrate
the activation map (:func:`calibrate`). Validation and test images are not read, nor the unlabeled pool's
masks (there is no selection: the last epoch is the result).

``pool_grounding="appg"`` (the default since the fourteenth session, as ``dusss``'s; ``"none"``: labeled masks
only; an addition to DuSSS): each step also grounds the lesion phrases on
``grounding_batch`` unlabeled-pool images against their **APPG pseudo-labels** (the paper's three phrases through
the weight-free ``appearance`` backend, masks the area filter keeps; passed in by the ``vlm_pretrain`` stage), the
same :func:`busnb.vlm.losses.grounding_loss`. Those targets come from the image and the phrase alone, so the map
learns where the appearance phrases put a lesion on the whole pool, not only on the labeled images the student
also learns from. The calibration stays on the labeled masks.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..atomic import torch_save, write_json
from .losses import dcl_loss, grounding_loss
from .model import VLM
from .texts import BACKGROUND_PHRASE, LESION_PHRASES, pool_texts

DEFAULTS = dict(encoder="resnet18", depth=5, text="scratch", dim=64, text_hidden=64, text_layers=2, momentum=0.995,
                temperature=0.07, dcl=True, sss=True, sss_tau=0.1, sss_alpha=0.5, epochs=None, batch=16, lr=1e-3,
                grounding=True, grounding_batch=4, pool_grounding="appg")


def stage_params(**kw) -> dict:
    """The ``vlm_pretrain`` stage's parameters (its cache key): :data:`DEFAULTS` with ``kw`` replaced.
    ``epochs=None``: half the profile's epochs (at least 1)."""
    unknown = set(kw) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown vlm_pretrain setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **kw}
    if p["pool_grounding"] not in ("none", "appg"):
        raise ValueError(f"vlm_pretrain: pool_grounding must be 'none' or 'appg' (the unlabeled pool's APPG "
                         f"pseudo-labels), got {p['pool_grounding']!r}")
    return p


def load_images(samples, size: int, progress: bool = False) -> torch.Tensor:
    """uint8 (N,1,S,S) images resized like the trainer's, **without opening any mask file**."""
    from ..progress import tqdm

    from ..data.io import read_image
    from ..data.tensors import resize_pair

    out = torch.empty(len(samples), 1, size, size, dtype=torch.uint8)
    for i, s in enumerate(tqdm(samples, desc=f"images {size}px", disable=not progress)):
        out[i, 0] = torch.from_numpy(resize_pair(read_image(s.image), None, size)[0].copy())
    return out


def random_view(x: torch.Tensor) -> torch.Tensor:
    """A random view of (B,1,H,W) images in [0,1]: horizontal flip, resized crop (area 60-100 %), gamma
    0.7-1.4, Gaussian noise sd 0.02. Draws from torch's default generator."""
    b, dev = x.shape[0], x.device
    s = torch.sqrt(torch.empty(b, device=dev).uniform_(0.6, 1.0))
    cx, cy = (torch.rand(b, device=dev) * 2 - 1) * (1 - s), (torch.rand(b, device=dev) * 2 - 1) * (1 - s)
    flip = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0)
    z = torch.zeros(b, device=dev)
    theta = torch.stack([torch.stack([s * flip, z, cx], 1), torch.stack([z, s, cy], 1)], 1)
    v = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False,
                      padding_mode="border")
    g = torch.exp(torch.empty(b, 1, 1, 1, device=dev).uniform_(math.log(0.7), math.log(1.4)))
    return (v.clamp(0, 1) ** g + 0.02 * torch.randn_like(v)).clamp(0, 1)


def flip_pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random horizontal flip of each image and its mask (B,1,H,W)."""
    f = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(f.view(-1, 1, 1, 1), x.flip(-1), x), torch.where(f.view(-1, 1, 1, 1), y.flip(-1), y)


class TextTable:
    """Every candidate sentence of the pool tokenised once; per image the indices of its sentences."""

    def __init__(self, vlm: VLM, texts: dict[str, list[dict]], ids: list[str]):
        self.sentences = sorted({t["text"] for v in texts.values() for t in v})
        pos = {t: i for i, t in enumerate(self.sentences)}
        tok = vlm.text.tokenize(self.sentences)
        self.ids, self.mask = tok["input_ids"], tok["attention_mask"]
        k = max(len(texts[i]) for i in ids)
        self.cand = torch.tensor([[pos[texts[i][j % len(texts[i])]["text"]] for j in range(k)] for i in ids])
        self.n = torch.tensor([len(texts[i]) for i in ids])

    def sample_two(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two different sentences (indices into :attr:`sentences`) of each image in ``idx`` (the same one
        when an image has a single sentence)."""
        n = self.n[idx]
        r1 = (torch.rand(len(idx)) * n).long().clamp(max=n - 1)
        r2 = (r1 + 1 + (torch.rand(len(idx)) * (n - 1).clamp_min(1)).long()) % n
        c = self.cand[idx]
        return c.gather(1, r1[:, None])[:, 0], c.gather(1, r2[:, None])[:, 0]


@torch.no_grad()
def phrase_embeddings(vlm: VLM, phrases=LESION_PHRASES) -> torch.Tensor:
    """(K,D) normalised embeddings of ``phrases`` by the online text encoder (eval mode)."""
    was = vlm.training
    vlm.eval()
    dev = next(vlm.parameters()).device
    tok = vlm.text.tokenize(list(phrases))
    g = vlm.encode_text(tok["input_ids"].to(dev), tok["attention_mask"].to(dev))["g"]
    vlm.train(was)
    return g


def calibrate(vlm: VLM, images: torch.Tensor, masks: torch.Tensor, phrases=LESION_PHRASES, steps: int = 200) -> dict:
    """Platt scaling of the activation map on **labeled train** images: (a, b) of sigmoid(a z + b) fitted by
    logistic regression of the mask on the standardised map z, and the foreground base rate pi
    (:func:`busnb.data.tensors.foreground_rate`, as the ``label_rate`` stage computes it); written into
    ``vlm.calib``. Returns the fit (a, b, pi, pixel AUC-free log-loss before / after)."""
    from ..data.tensors import foreground_rate

    dev = next(vlm.parameters()).device
    vlm.eval()
    vlm.calib.copy_(torch.tensor([1.0, 0.0, 0.5]))
    with torch.no_grad():
        g = phrase_embeddings(vlm, phrases)
        zs = []
        for i in range(0, len(images), 16):
            x = images[i:i + 16].to(dev).float() / 255.0
            cos = vlm.activation(x, g)
            flat = cos.flatten(1)
            zs.append(((cos - flat.mean(1).view(-1, 1, 1, 1)) / (flat.std(1).view(-1, 1, 1, 1) + 1e-6)).cpu())
    z, y = torch.cat(zs).flatten(), masks.float().flatten()
    ab = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(ab[0] * z + ab[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    pi = foreground_rate(masks)  # the same number as the DuSSS label_rate stage's
    with torch.no_grad():
        prior_loss = float(F.binary_cross_entropy(torch.full_like(y, pi), y))
        fit_loss = float(F.binary_cross_entropy_with_logits(ab[0] * z + ab[1], y))
    a, b = float(ab[0].detach()), float(ab[1].detach())
    vlm.calib.copy_(torch.tensor([a, b, pi]))
    return {"a": a, "b": b, "pi": pi, "logloss_prior": prior_loss, "logloss_map": fit_loss, "n_images": len(images)}


def describe_calibration(cal: dict, informative: float = 0.1) -> str:
    """One line for a :func:`calibrate` result: how much better the calibrated text map explains the labeled
    masks than their base rate does (relative log-loss gain), and, below ``informative``, that the map carries
    (almost) no information: it cannot tell the teacher's lesion candidates apart, so the default selection
    (``fusion="select"``, :func:`busnb.methods.dusss.select_by_text`) keeps the candidate with the most teacher
    probability, in practice the largest one."""
    gain = 1 - cal["logloss_map"] / cal["logloss_prior"]
    line = f"the text map explains the labeled masks {gain:.0%} better than their base rate (log-loss)"
    if gain < informative:
        line += (": at this size it carries (almost) no information, so it cannot tell the teacher's lesion "
                 "candidates apart and the selection keeps the largest one")
    return line


# the loss terms of a pretraining epoch (history.json), in the words of the module docstrings
LOSS_TERMS = {
    "loss": "total (sum of the terms below)",
    "it": "image-text + text-image InfoNCE (cross-modal)",
    "ii": "image-image InfoNCE (two views of one image)",
    "tt": "text-text InfoNCE (against the momentum text encoder)",
    "gl": "global-to-local (sentence vs the image's local features)",
    "gauss": "SSS: Gaussian (W2) contrast of image and text embeddings",
    "ground": "grounding: lesion phrases on the labeled masks",
    "ground_pool": "grounding: lesion phrases on the pool's APPG pseudo-labels",
    "target_entropy": "entropy of the SSS soft targets (not a loss; 0: one-hot, ln B: uniform)",
}


def loss_table(infos: dict):
    """A DataFrame of the pretraining loss terms, first and last epoch of each stage in ``infos`` ({name: the
    info of :func:`pretrained_vlm`}), one row per term with what it is (:data:`LOSS_TERMS`). A term a stage does
    not have (SSS off: no ``gauss``, no soft targets) is blank, so compare terms row by row: the totals of two
    stages with different terms are not comparable."""
    import pandas as pd

    cols = {}
    for name, info in infos.items():
        first, last = info.get("first") or {}, info.get("final") or {}
        n = info.get("epochs", 0)
        cols[f"{name}: epoch 1"] = {k: v for k, v in first.items() if k != "epoch"}
        if n > 1:
            cols[f"{name}: epoch {n}"] = {k: v for k, v in last.items() if k != "epoch"}
    keys = [k for k in LOSS_TERMS if any(k in c for c in cols.values())]
    keys += sorted({k for c in cols.values() for k in c} - set(keys))
    df = pd.DataFrame({c: [v.get(k) for k in keys] for c, v in cols.items()}, index=keys).round(3)
    df.insert(0, "term", [LOSS_TERMS.get(k, "") for k in keys])
    return df


def pretrain_vlm(params: dict, parts: dict, profile, out: Path, progress: bool = True, device: str = "auto",
                 pseudo=None) -> dict:
    """Train a :class:`VLM` with :func:`busnb.vlm.losses.dcl_loss` on the train pool of ``parts`` and write
    ``best.pt`` (``{"net": state_dict}``, the last epoch), ``history.json`` and ``texts.json``; resumes from
    ``last.pt``. Returns the stage info (losses per epoch, calibration). ``pseudo``: with
    ``pool_grounding="appg"``, the unlabeled images with their APPG pseudo-labels at the profile's size
    (:class:`busnb.data.tensors.SegArrays`, built by the ``vlm_pretrain`` stage), grounded like the labeled ones."""
    from ..progress import tqdm

    from ..data.tensors import SegArrays
    from ..models import pick_device
    from ..train import resume_loop_state, save_loop_state

    p = stage_params(**params)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    pool = list(parts["labeled"]) + list(parts["unlabeled"])
    if len(pool) < 2:
        raise ValueError(f"VLM pretraining needs at least 2 train-pool images; {parts['split_name']} has {len(pool)}")
    size = profile.image_size
    epochs = p["epochs"] or max(1, profile.epochs // 2)
    texts = pool_texts(parts["labeled"], parts["unlabeled"])
    write_json(out / "texts.json", {s.id: texts[s.id] for s in pool})
    images = load_images(pool, size, progress).to(dev)
    # labeled train images and masks: the grounding term and, after training, the calibration (never val / test
    # / unlabeled masks)
    labeled = SegArrays(parts["labeled"], size)
    lab_img, lab_mask = labeled.images, labeled.masks
    vlm = VLM.from_params(p).to(dev)
    table = TextTable(vlm, texts, [s.id for s in pool])
    t_ids, t_mask = table.ids.to(dev), table.mask.to(dev)
    ground = bool(p["grounding"]) and len(lab_img) > 0
    if p["pool_grounding"] == "appg":
        if pseudo is None:
            raise ValueError("vlm_pretrain: pool_grounding='appg' needs the unlabeled pool's APPG pseudo-labels. Fix: "
                             "run it as the vlm_pretrain stage (busnb train / busnb vlm-pretrain), which makes them.")
        if not {s.id for s in pseudo.samples} <= {s.id for s in parts["unlabeled"]}:
            raise ValueError("vlm_pretrain: the pseudo-labelled images must be unlabeled-pool images of this split")
    # the grounding terms, each (log name, images in [0, 1], masks): labeled masks first, then the pool's APPG
    # pseudo-labels (that order keeps the labeled-only default's random stream what it was before the pool term)
    grounded = ([("ground", lab_img, lab_mask)] if ground else []) + (
        [("ground_pool", pseudo.images, pseudo.masks)] if p["pool_grounding"] == "appg" and len(pseudo) else [])
    grounded = [(k, x.to(dev).float() / 255.0, y.to(dev)) for k, x, y in grounded]
    pool_term = any(k == "ground_pool" for k, _, _ in grounded)
    if grounded:
        g_tok = vlm.text.tokenize([*LESION_PHRASES, BACKGROUND_PHRASE])
        g_ids, g_mask = g_tok["input_ids"].to(dev), g_tok["attention_mask"].to(dev)
    opt = torch.optim.AdamW(vlm.trainable(), lr=p["lr"], weight_decay=1e-4)
    batch = min(p["batch"], len(pool))
    steps = max(1, len(pool) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
    last = out / "last.pt"
    epoch, history = resume_loop_state(last, vlm=vlm, opt=opt, sched=sched)
    bar = tqdm(range(epoch, epochs), desc=f"VLM pretrain (dcl={p['dcl']}, sss={p['sss']})", disable=not progress,
               initial=epoch, total=epochs)
    for ep in bar:
        vlm.train()
        perm = torch.randperm(len(pool))
        sums: dict = {}
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            x = images[idx.to(dev)].float() / 255.0
            s1, s2 = table.sample_two(idx)
            s1, s2 = s1.to(dev), s2.to(dev)
            loss, logs = dcl_loss(vlm, random_view(x), random_view(x), t_ids[s1], t_mask[s1], t_ids[s2], t_mask[s2],
                                  dcl=p["dcl"], sss=p["sss"], sss_tau=p["sss_tau"], sss_alpha=p["sss_alpha"])
            # the phrase embeddings, once per step. The text encoder's dropout draws from the same generator as the
            # grounding batches, so where they are encoded fixes every later draw: with the pool term on, before any
            # grounding batch (the order of the committed dusss-appg_grounding runs, made at d2499d2); with the
            # labeled term alone, after its batch (the order of every run made before the pool term existed)
            tg = vlm.encode_text(g_ids, g_mask)["g"] if pool_term else None
            for name, gx, gy in grounded:
                j = torch.randint(len(gx), (p["grounding_batch"],)).to(dev)
                xg, yg = flip_pair(gx[j], gy[j])
                tg = vlm.encode_text(g_ids, g_mask)["g"] if tg is None else tg
                lg = grounding_loss(vlm.encode_image(xg)["local"], tg[:-1], tg[-1], yg, vlm.T)
                loss = loss + lg
                logs[name] = lg.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            vlm.momentum_update()
            for k, v in {"loss": loss.detach(), **logs}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        history.append({"epoch": ep + 1, **{k: round(v / steps, 5) for k, v in sums.items()}})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
        save_loop_state(last, ep + 1, history, vlm=vlm, opt=opt, sched=sched)
        write_json(out / "history.json", history)
    # calibration of the activation map on labeled train masks (never val / test / unlabeled)
    cal = calibrate(vlm, lab_img, lab_mask, steps=100)
    torch_save({"net": {k: v.detach().cpu() for k, v in vlm.state_dict().items()}, "params": p}, out / "best.pt")
    return {"epochs": epochs, "params": p, "first": history[0] if history else None,
            "final": history[-1] if history else None, "calibration": cal, "n_images": len(pool),
            "n_sentences": len(table.sentences), **({"n_pool_grounded": len(pseudo)} if pool_term else {})}


def pretrained_vlm(parts: dict, profile, seed: int, progress: bool = True, device: str = "auto",
                   **settings) -> tuple[VLM, dict]:
    """(VLM in eval mode, stage info) of the ``vlm_pretrain`` stage for ``parts`` / ``profile`` / ``seed`` with
    ``settings`` (:func:`stage_params`): from the stage cache, or pretrained now (same cache as ``dusss``). The
    image encoder has the profile's U-Net depth unless ``settings`` give ``depth``, as in ``dusss``."""
    from ..stages import StageContext, StageSpec, run_stage

    params = stage_params(**{"depth": profile.encoder_depth, **settings})
    ctx = StageContext(parts, profile, seed, None, {}, {"device": device} if device != "auto" else {}, progress)
    state, info = run_stage(StageSpec("vlm_pretrain", params), ctx)
    vlm = VLM.from_params(params)
    vlm.load_state_dict(state)
    return vlm.eval(), info


@torch.no_grad()
def similarity_matrices(vlm: VLM, images: torch.Tensor, sentences: list[str], sss_tau: float = 0.1) -> dict:
    """For images (B,1,H,W in [0,1]) and one sentence each: the image-text cosine matrix (B,B), the SSS
    targets from the momentum text Gaussians (what the loss is trained towards with SSS on), the one-hot
    targets (SSS off) and the W2 similarity of the text Gaussians."""
    from .losses import same_sentence, sss_targets, w2_similarity

    vlm.eval()
    dev = next(vlm.parameters()).device
    tok = vlm.text.tokenize(sentences)
    ids, mask = tok["input_ids"].to(dev), tok["attention_mask"].to(dev)
    im = vlm.encode_image(images.to(dev))
    tx = vlm.encode_text(ids, mask)
    tm = vlm.encode_text(ids, mask, momentum=True)
    return {"cosine": (im["g"] @ tx["g"].t()).cpu(), "sss_targets": sss_targets(tm["g"], tm["sigma"], sss_tau, same_sentence(ids)).cpu(),
            "onehot": torch.eye(len(sentences)), "w2_similarity": w2_similarity(tm["g"], tm["sigma"], tm["g"],
                                                                                tm["sigma"], sss_tau).cpu(),
            "text_sigma": tx["sigma"].mean(1).cpu()}


def cmd_vlm_pretrain(a) -> int:
    from ..cli import _kv
    from ..config import check_overrides, get_profile
    from ..experiment import prepare

    prof = get_profile(a.profile, **check_overrides(a.profile, _kv(a.set)))
    settings = _kv(a.vlm_set)
    stage_params(**settings)  # unknown settings fail before any data is loaded
    parts = prepare(prof, a.dataset, a.ratio, a.seed, a.root, progress=True)
    _, info = pretrained_vlm(parts, prof, a.seed, True, a.device or "auto", **settings)
    f, c = info["final"], info["calibration"]
    print(json.dumps({"dir": info["dir"], "epochs": info["epochs"], "first": info["first"], "final": f,
                      "calibration": c}, indent=1))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("vlm-pretrain", help="DuSSS vision-language pretraining (DCL + SSS) on a split's train pool; "
                       "the vlm_pretrain stage that `busnb train --method dusss` uses (same cache)")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--dataset")
    p.add_argument("--root")
    p.add_argument("--ratio", type=float, default=2.5, help="labeled ratio: labeled texts use mask facts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", help="profile override key=value")
    p.add_argument("--vlm-set", action="append", help=f"pretraining setting key=value, of {sorted(DEFAULTS)}")
    p.add_argument("--device", help="cpu, cuda, ... (default: auto)")
    p.set_defaults(fn=cmd_vlm_pretrain)
