"""In-domain self-supervised pretraining of the U-Net (SimCLR or masked restoration, with lightly), per dataset and split seed.

No ImageNet weights can be downloaded on many hospital and air-gapped machines, so the encoder is pretrained
on the dataset itself: on the **train pool** of a split (labeled + unlabeled images of split seed ``k``;
never its validation or test images), with no mask at all. The result depends on the split seed only (not on
the labeled ratio: masks are not read), so one encoder serves every ratio and method of that seed.

Method: SimCLR (Chen et al., ICML 2020): two augmented views per image, the encoder's deepest feature map
average-pooled, a 2-layer projection head (``lightly.models.modules.SimCLRProjectionHead``) and the NT-Xent
loss (``lightly.loss.NTXentLoss``, temperature 0.2). Views suit B-mode ultrasound (there is no colour to
jitter): a random resized crop (area 35-100 %, aspect 3/4-4/3), horizontal flip, small rotation, gamma,
Gaussian blur and multiplicative speckle (``busnb.augment``). Adam, lr 1e-3, cosine decay.

Method ``restore`` (``SSLConfig.method``, the profile's ``ssl_method``): masked restoration of the **whole U-Net**,
encoder and decoder - the in-painting task of Models Genesis (Zhou et al., MICCAI 2019 / MedIA 2021: a U-Net
learns to restore medical images from corrupted copies, and its encoder *and* decoder initialise the
segmentation network), in the masked form of MAE (He et al., CVPR 2022: a random ``mask_ratio`` share of the
cells of a ``grid`` x ``grid`` partition is hidden, here filled with uniform noise; cells drawn with lightly's
``random_token_mask``; the loss counts the hidden cells only, since the U-Net's skip connections would copy the
visible ones). Input: one ultrasound view as above; target: the same view uncorrupted; loss: mean squared error
of the sigmoid output (:func:`masked_mse`). SimCLR pretrains the encoder only, so with 13 labeled images the
decoder still starts random; restoration pretrains both. Everything but the one-channel output layer is kept
(``unet.pt``); loading it (:func:`load_encoder`) needs the run's decoder widths.

Method ``simclr+restore``: both, one after the other, as Chaitanya et al. (NeurIPS 2020, "Contrastive learning of
global and local features for medical image segmentation with limited annotations") pretrain a U-Net: the encoder
by a global contrastive task, then the decoder on top of that **frozen** encoder (its weights and its batch-norm
statistics). Here the encoder is the split seed's SimCLR one (the ``simclr`` result, a cached stage of its own,
reused as it is) and the decoder learns the masked restoration above; ``unet.pt`` then holds SimCLR's encoder
unchanged and a decoder trained to read it.

The encoder is stored at ``<cache>/encoders/<split>-s<seed>-<encoder>-<size>px-<key>/encoder.pt`` (``restore``,
``simclr+restore``: ``...-<size>px-<method>-<key>/unet.pt``) with ``info.json`` (inputs, losses); the key hashes
everything the result depends on (image ids and content, the encoder, image size, settings, the source of the
modules in ``CODE``). Pretraining is written under a lock, checkpointed every epoch
(``last.pt``, atomically) and resumes where it stopped. ``encoder_weights=ssl`` in a profile makes every
network of a run (a method's students and teachers, and its stages) start from this encoder;
``encoder_weights=<path to encoder.pt>`` uses a given file.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .atomic import torch_save, write_json
from .paths import cache_dir
from .rundir import RunLock, clean_tmp


SSL_METHODS = ("simclr", "restore", "simclr+restore")


@dataclass(frozen=True)
class SSLConfig:
    epochs: int = 100
    batch: int = 64
    lr: float = 1e-3
    temperature: float = 0.2
    proj_dim: int = 128
    min_area: float = 0.35
    method: str = "simclr"      # or "restore", "simclr+restore" (module docstring)
    mask_ratio: float = 0.6     # restore: share of grid cells hidden
    grid: int = 8               # restore: cells per side

    def __post_init__(self):
        if self.method not in SSL_METHODS:
            raise ValueError(f"ssl method {self.method!r}: choose one of {', '.join(SSL_METHODS)}")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"ssl mask_ratio {self.mask_ratio!r}: must be in (0, 1)")

    @property
    def restores(self) -> bool:
        """Whether the decoder is pretrained (by masked restoration): the result is ``unet.pt``, not ``encoder.pt``."""
        return self.method != "simclr"

    def contrastive(self) -> "SSLConfig":
        """The SimCLR stage of ``simclr+restore``: these settings with ``method="simclr"``."""
        return replace(self, method="simclr")


def ultrasound_views(img: torch.Tensor, min_area: float = 0.35) -> torch.Tensor:
    """One random view of each image in ``img`` (B,1,H,W, [0,1]): resized crop + flip + rotation up to 10
    degrees, then gamma, blur and speckle (``busnb.augment``). Draws from torch's default generator."""
    from .augment import _uniform, blur, gamma, speckle

    n = img.shape[0]
    area = _uniform(n, min_area, 1.0, img)
    logr = _uniform(n, math.log(3 / 4), math.log(4 / 3), img)
    sx = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
    sy = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
    cx, cy = _uniform(n, -1, 1, img) * (1 - sx), _uniform(n, -1, 1, img) * (1 - sy)
    ang = _uniform(n, -10, 10, img) * (math.pi / 180)
    fx = torch.where(torch.rand(n, device=img.device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos * sx * fx, -sin * sy, cx], 1),
                         torch.stack([sin * sx * fx, cos * sy, cy], 1)], 1)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    v = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return speckle(blur(gamma(v), p=0.5), max_sigma=0.2)


class SimCLRModel(torch.nn.Module):
    """The U-Net's encoder + global average pool + lightly's SimCLR projection head."""

    def __init__(self, encoder: torch.nn.Module, feat_dim: int, proj_dim: int = 128):
        super().__init__()
        from lightly.models.modules import SimCLRProjectionHead

        self.encoder = encoder
        self.head = SimCLRProjectionHead(feat_dim, feat_dim, proj_dim)

    def forward(self, x):
        return self.head(self.encoder(x)[-1].mean((2, 3)))


def nt_xent(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020, Eq. 1) of two views' projections (lightly's NTXentLoss)."""
    from lightly.loss import NTXentLoss

    return NTXentLoss(temperature=temperature)(z0, z1)


def masked_view(x: torch.Tensor, grid: int, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_masked, m): ``x`` (B,C,H,W) with ``ratio`` of the cells of a ``grid`` x ``grid`` partition replaced by
    uniform noise, and m (B,1,H,W) = 1 on the hidden pixels. Cells drawn per image by lightly's
    ``random_token_mask`` (torch's default generator)."""
    from lightly.models.utils import random_token_mask

    b, _, h, w = x.shape
    _, hidden = random_token_mask((b, grid * grid), ratio, mask_class_token=True, device=x.device)
    cells = torch.zeros(b, grid * grid, device=x.device, dtype=x.dtype).scatter_(1, hidden, 1.0)
    m = F.interpolate(cells.view(b, 1, grid, grid), size=(h, w), mode="nearest")
    return x * (1 - m) + torch.rand_like(x) * m, m


def masked_mse(pred: torch.Tensor, target: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Restoration loss of the ``restore`` method: mean squared error over the hidden pixels (m = 1) only, as MAE
    scores masked patches only (He et al. 2022, Sec. 3)."""
    return ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[1]).clamp(min=1.0)


# the modules the encoder depends on (its cache key hashes these, not the whole package)
CODE = ("ssl.py", "augment.py", "models.py", "data/tensors.py", "data/io.py")


def train_pool(parts: dict) -> list:
    """The train pool of a split (``busnb.experiment.prepare``): its labeled and unlabeled samples, never val or test."""
    return list(parts["labeled"]) + list(parts["unlabeled"])


def encoder_key(parts: dict, encoder: str, size: int, cfg: SSLConfig, depth: int = 5,
                decoder_channels=None) -> tuple[str, dict]:
    from .provenance import source_hash

    pool = sorted(s.id for s in train_pool(parts))
    inputs = {"dataset": parts["dataset"], "split": parts["split_name"], "seed": parts["seed"],
              "content": parts["fingerprint"]["content"],
              "pool": hashlib.sha1("\n".join(pool).encode()).hexdigest()[:12], "n_pool": len(pool),
              "encoder": encoder, "depth": depth, "image_size": size, "ssl": asdict(cfg), "code": source_hash(*CODE)}
    if cfg.restores:  # the decoder is pretrained too: its widths are part of the result
        inputs["decoder_channels"] = list(_decoder(decoder_channels, depth))
    if cfg.method == "simclr+restore":  # the frozen encoder: the SimCLR stage of the same inputs
        inputs["encoder_from"] = encoder_dir(parts, encoder, size, cfg.contrastive(), depth).name
    return hashlib.sha1(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12], inputs


def _decoder(decoder_channels, depth: int) -> tuple:
    if decoder_channels is None:
        raise ValueError("ssl method 'restore' pretrains the decoder too: pass the run's decoder_channels")
    if len(decoder_channels) != depth:
        raise ValueError(f"decoder_channels {tuple(decoder_channels)} has {len(decoder_channels)} widths, the encoder "
                         f"depth is {depth}: they must match (one decoder width per encoder stage)")
    return tuple(int(c) for c in decoder_channels)


def encoder_dir(parts: dict, encoder: str, size: int, cfg: SSLConfig, depth: int = 5, decoder_channels=None) -> Path:
    key, _ = encoder_key(parts, encoder, size, cfg, depth, decoder_channels)
    name = encoder if depth == 5 else f"{encoder}d{depth}"
    tag = "" if cfg.method == "simclr" else f"-{cfg.method}"
    return cache_dir() / "encoders" / f"{parts['split_name']}-s{parts['seed']}-{name}-{size}px{tag}-{key}"


def weights_file(cfg: SSLConfig) -> str:
    """The file a pretraining leaves: ``encoder.pt`` (SimCLR: encoder only) or ``unet.pt`` (``restore`` and
    ``simclr+restore``: encoder and decoder)."""
    return "unet.pt" if cfg.restores else "encoder.pt"


def pretrain_encoder(parts: dict, encoder: str, size: int, cfg: SSLConfig = SSLConfig(), progress: bool = True,
                     device: str = "auto", seed: int | None = None, depth: int = 5, decoder_channels=None) -> Path:
    """Path of the pretrained weights on the train pool of ``parts`` (``busnb.experiment.prepare``: labeled +
    unlabeled images; val and test are not read): ``encoder.pt`` (the encoder's state dict) with SimCLR,
    ``unet.pt`` (encoder and decoder, ``decoder_channels`` needed) with ``cfg.method="restore"`` or
    ``"simclr+restore"`` (which first pretrains, or reuses, the SimCLR ``encoder.pt`` of the same inputs). Cached
    by inputs, resumable, one writer at a time; runs in its own RNG stream seeded from the split seed, so the
    caller's random state is untouched. ``depth``: the encoder's stages, as in the profile that will load it
    (``Profile.encoder_depth``)."""
    from .progress import tqdm

    from .data.tensors import SegArrays
    from .models import build_model, pick_device
    from .train import resume_loop_state, rng_state, save_loop_state, seed_everything, set_rng_state

    key, inputs = encoder_key(parts, encoder, size, cfg, depth, decoder_channels)
    out = encoder_dir(parts, encoder, size, cfg, depth, decoder_channels)
    done = out / weights_file(cfg)
    if done.is_file():
        return done
    pool = train_pool(parts)
    if len(pool) < 2:
        raise ValueError(f"self-supervised pretraining needs at least 2 train-pool images; split "
                         f"{parts['split_name']} seed {parts['seed']} has {len(pool)}")
    frozen = None
    if cfg.method == "simclr+restore":  # stage 1, cached on its own: the SimCLR encoder the decoder learns to read
        frozen = pretrain_encoder(parts, encoder, size, cfg.contrastive(), progress, device, seed, depth)
    with RunLock(out, wait=True):
        if done.is_file():
            return done
        clean_tmp(out, quiet=not progress)
        write_json(out / "inputs.json", inputs)
        dev = pick_device(device)
        saved = rng_state()
        seed_everything(1_000_003 + parts["seed"] if seed is None else seed)
        try:
            arrays = SegArrays(pool, size, progress=progress).to(dev)  # masks are loaded but never used
            if cfg.method == "simclr":
                net = build_model(encoder, None, decoder_channels=(16,) * depth).net
                model = SimCLRModel(net.encoder, net.encoder.out_channels[-1], cfg.proj_dim).to(dev)
            else:
                model = build_model(encoder, None, decoder_channels=_decoder(decoder_channels, depth)).to(dev)
                if frozen is not None:
                    model.net.encoder.load_state_dict(torch.load(frozen, map_location=dev, weights_only=True))
                    model.net.encoder.requires_grad_(False)
            opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
            batch = min(cfg.batch, len(pool))
            steps = max(1, len(pool) // batch)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps)
            last = out / "last.pt"
            epoch, losses = resume_loop_state(last, model=model, opt=opt, sched=sched)
            label = {"simclr": "SimCLR", "restore": "restore", "simclr+restore": "restore (SimCLR encoder frozen)"}[
                cfg.method]
            bar = tqdm(range(epoch, cfg.epochs), desc=f"{label} {encoder} {size}px", disable=not progress,
                       initial=epoch, total=cfg.epochs)
            for ep in bar:
                model.train()
                if frozen is not None:  # frozen means its batch-norm statistics too
                    model.net.encoder.eval()
                perm = torch.randperm(len(pool), device=arrays.images.device)
                tot = torch.zeros((), device=dev)  # summed on the device: one host sync per epoch, not per step
                for s in range(steps):
                    x = arrays.images[perm[s * batch:(s + 1) * batch]].float() / 255.0
                    loss = ssl_loss(model, x, cfg)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    tot += loss.detach()
                losses.append(round(float(tot) / steps, 5))
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                save_loop_state(last, ep + 1, losses, model=model, opt=opt, sched=sched)
            write_json(out / "info.json", {"key": key, **inputs, "losses": losses, "n_images": len(pool)})
            torch_save(pretrained_state(model, cfg), done)
        finally:
            set_rng_state(saved)
    return done


def ssl_loss(model: torch.nn.Module, x: torch.Tensor, cfg: SSLConfig) -> torch.Tensor:
    """One batch's pretraining loss. SimCLR: NT-Xent of two ultrasound views (:func:`nt_xent`); restore: the
    masked restoration error of one view (:func:`masked_view`, :func:`masked_mse`)."""
    if cfg.method == "simclr":
        return nt_xent(model(ultrasound_views(x, cfg.min_area)), model(ultrasound_views(x, cfg.min_area)),
                       cfg.temperature)
    v = ultrasound_views(x, cfg.min_area)
    xm, m = masked_view(v, cfg.grid, cfg.mask_ratio)
    return masked_mse(torch.sigmoid(model(xm).float()), v, m)


def pretrained_state(model: torch.nn.Module, cfg: SSLConfig) -> dict:
    """What a pretraining keeps (CPU tensors): the encoder's state dict (SimCLR), or the U-Net's without its
    one-channel output layer (restore; keys ``encoder.*`` and ``decoder.*``)."""
    if cfg.method == "simclr":
        state = model.encoder.state_dict()
    else:
        state = {k: v for k, v in model.net.state_dict().items() if not k.startswith("segmentation_head.")}
    return {k: v.detach().cpu() for k, v in state.items()}


@torch.no_grad()
def embed(encoder: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """L2-normalised global embeddings (deepest feature map, average-pooled) of ``images`` (N,1,H,W) in [0, 1]."""
    was = encoder.training
    encoder.eval()
    out = torch.cat([encoder(images[i:i + batch])[-1].mean((2, 3)) for i in range(0, len(images), batch)])
    encoder.train(was)
    return F.normalize(out, dim=1)


def knn_agreement(emb: torch.Tensor, classes) -> float:
    """Leave-one-out 1-nearest-neighbour class agreement of embeddings: the fraction of images whose nearest
    other image (cosine) has the same image-level class. A label-free check that an encoder groups images by
    what they show (BUSI: benign / malignant; phantom: lesion shape); chance is the class mix."""
    sim = emb @ emb.T
    sim.fill_diagonal_(-2)
    nn_idx = sim.argmax(1).tolist()
    return sum(classes[i] == classes[j] for i, j in enumerate(nn_idx)) / len(classes)


def chance_agreement(classes) -> float:
    """1-NN agreement of a random neighbour: sum over classes of p_c (n_c - 1) / (n - 1)."""
    from collections import Counter

    n = len(classes)
    return sum(c * (c - 1) for c in Counter(classes).values()) / (n * (n - 1))


def neighbour_check(pool, encoder_path, encoder: str, size: int, decoder_channels, seed: int = 0) -> dict:
    """The label-free check of an encoder (``notebooks/10_self_supervised_encoder``): leave-one-out 1-NN class
    agreement (:func:`knn_agreement`) of the train-pool images ``pool`` embedded by the encoder at
    ``encoder_path``, beside a random-init encoder of the same architecture (drawn from ``seed``, own RNG
    stream) and chance (:func:`chance_agreement`). Reads the images and their image-level class only, no mask."""
    from .data.tensors import SegArrays
    from .models import build_model
    from .train import rng_state, set_rng_state

    images = SegArrays(pool, size, progress=False).batch(torch.arange(len(pool)))["image"]
    classes = [s.cls for s in pool]
    saved = rng_state()
    try:
        torch.manual_seed(seed)
        random_enc = build_model(encoder, None, decoder_channels).net.encoder
        ssl_enc = build_model(encoder, str(encoder_path), decoder_channels).net.encoder  # its init draws too
    finally:
        set_rng_state(saved)
    return {"n_images": len(pool), "chance": round(chance_agreement(classes), 4),
            "random_encoder": round(knn_agreement(embed(random_enc, images), classes), 4),
            "ssl_encoder": round(knn_agreement(embed(ssl_enc, images), classes), 4)}


def load_encoder(net, path: str | Path) -> None:
    """Load pretrained weights into ``net`` (a :class:`busnb.models.SegNet`): an encoder state dict
    (``encoder.pt``, SimCLR) into its encoder, or a U-Net without its output layer (``unet.pt``, ``restore``: keys
    ``encoder.*`` and ``decoder.*``) into encoder and decoder, the output layer left as initialised. A clear error
    when the file is missing or belongs to another encoder or decoder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights {path} not found. Fix: pretrain one with `busnb pretrain "
                                "--profile P --seed S` (or set encoder_weights=ssl), or give the path of an "
                                "existing encoder.pt or unet.pt.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    whole = any(k.startswith("decoder.") for k in state)
    try:
        if whole:  # strict load, the network's own output layer standing in for the one the file leaves out
            head = {k: v for k, v in net.net.state_dict().items() if k.startswith("segmentation_head.")}
            net.net.load_state_dict({**head, **state})
        else:
            net.net.encoder.load_state_dict(state)
    except RuntimeError as e:
        part = "encoder and decoder" if whole else "encoder"
        raise ValueError(f"{path} does not fit this network's {part} ({str(e).splitlines()[0]}). Fix: use weights "
                         "pretrained for the same network (busnb pretrain --profile with the run's profile: its "
                         "encoder, the length of its decoder_channels and, for ssl_method=restore or simclr+restore, "
                         "the widths themselves).") from None


def is_path(weights) -> bool:
    """An ``encoder_weights`` value that names a file rather than smp weights or ``ssl``."""
    return isinstance(weights, (str, Path)) and (str(weights).endswith((".pt", ".pth")) or "/" in str(weights))


def cmd_pretrain(a) -> int:
    from .cli import _kv
    from .config import check_overrides, get_profile
    from .experiment import prepare

    prof = get_profile(a.profile, **check_overrides(a.profile, _kv(a.set)))
    cfg = SSLConfig(epochs=a.epochs or prof.ssl_epochs, batch=a.batch, method=prof.ssl_method)
    for seed in a.seeds:
        parts = prepare(prof, a.dataset, 2.5, seed, a.root, progress=True)  # the train pool does not depend on the ratio
        path = pretrain_encoder(parts, prof.encoder, prof.image_size, cfg, device=a.device or "auto",
                                depth=prof.encoder_depth, decoder_channels=prof.decoder_channels)
        info = json.loads((path.parent / "info.json").read_text())
        print(f"split seed {seed}: {path}  ({info['n_images']} train-pool images, {cfg.method} loss "
              f"{info['losses'][0]:.3f} -> {info['losses'][-1]:.3f})")
        extra = "" if cfg.method == "simclr" else f" --set ssl_method={cfg.method}"
        print(f"  use it: busnb train --profile {a.profile} --set encoder_weights=ssl{extra} ...  "
              f"(or encoder_weights={path})")
        if a.check:
            c = neighbour_check(train_pool(parts), path, prof.encoder, prof.image_size, prof.decoder_channels)
            write_json(path.parent / "check.json", c)
            print(f"  1-NN same class (label-free check, {c['n_images']} images): pretrained encoder "
                  f"{c['ssl_encoder']:.3f}, random encoder {c['random_encoder']:.3f}, chance {c['chance']:.3f}  "
                  f"-> {path.parent / 'check.json'}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("pretrain", help="in-domain self-supervised pretraining on a split's train pool: SimCLR "
                       "(the U-Net's encoder) or, with --set ssl_method=restore, masked restoration (encoder and "
                       "decoder), or with ssl_method=simclr+restore both (SimCLR's encoder, then a decoder restored "
                       "on it, frozen); cached per dataset and split seed")
    p.add_argument("--profile", default="smoke", help="encoder and image size come from the profile")
    p.add_argument("--dataset")
    p.add_argument("--root")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="split seeds (one encoder each)")
    p.add_argument("--epochs", type=int, help="default: the profile's ssl_epochs")
    p.add_argument("--batch", type=int, default=SSLConfig.batch)
    p.add_argument("--set", action="append", help="profile override key=value")
    p.add_argument("--device", help="cpu, cuda, ... (default: auto)")
    p.add_argument("--check", action="store_true", help="then the label-free 1-nearest-neighbour class check of "
                   "the encoder against a random one (check.json beside encoder.pt)")
    p.set_defaults(fn=cmd_pretrain)
