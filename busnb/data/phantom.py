"""Procedural B-mode breast phantom: the embedded default dataset.

Each image is built as a backscatter-amplitude map of layered tissue (skin, fat with
Cooper's ligaments, fibroglandular tissue, pectoral muscle) holding one or two
hypoechoic lesions (oval, round, lobulated or irregular) with posterior acoustic
enhancement or shadowing. Imaging follows the usual speckle model: complex Gaussian
scatterers (Rayleigh envelope) scaled by the amplitude map, convolved with a
Gaussian-modulated point-spread function, envelope-detected, attenuated with depth,
log-compressed to 8 bits. Some images carry burned-in text, a depth ruler and
caliper crosses, as clinical exports do.

The result is written in the generic ``images/`` + ``masks/`` layout (plus
``labels.csv`` with the primary lesion's shape as class and ``lesions.json`` with
every lesion's shape and box), so every later code path reads it like real data.
Deterministic per ``seed``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from ..atomic import atomic_dir
from ..paths import data_dir
from .folder import load_folder
from .record import Sample

SHAPES = ("oval", "round", "lobulated", "irregular")


@dataclass(frozen=True)
class PhantomConfig:
    n_images: int = 48
    size: int = 160
    seed: int = 0
    p_second_lesion: float = 0.35
    p_marks: float = 0.5

    def key(self) -> str:
        return config_key(self)


def config_key(cfg) -> str:
    """A short, stable hash of a phantom config dataclass (names its cache folder); shared by the 3D phantom."""
    return hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:10]


def smooth_noise(rng, shape, sigma):
    """Gaussian-smoothed standard normal noise of any ``shape`` (2D images, 3D volumes), scaled to unit sd."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-8)


def log_compress(env: np.ndarray, rng, depth: np.ndarray, attenuation=(0.8, 1.6)) -> np.ndarray:
    """Envelope ``env`` -> uint8 B-mode: imperfectly compensated depth attenuation exp(-a depth), a drawn from
    ``attenuation`` (``depth`` in [0, 1), broadcastable to ``env``), then log compression into a dynamic range
    of 40-50 dB drawn per image. Shared by the 2D and the 3D phantom."""
    env = env * np.exp(-rng.uniform(*attenuation) * depth)
    db = 20 * np.log10(env / np.percentile(env, 99.5) + 1e-6)
    dyn = rng.uniform(40, 50)
    return np.clip((db + dyn) / dyn * 255, 0, 255).astype(np.uint8)


def lesion_mask(shape: str, h: int, w: int, cy: float, cx: float, r: float, rng) -> np.ndarray:
    """Boolean mask of one lesion of the given BI-RADS-like ``shape`` centred at (cy, cx), size ``r`` px."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rot = np.deg2rad(rng.uniform(-15, 15))
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)
    phi = np.arctan2(v, u)
    if shape == "oval":
        a, b, bound = r * rng.uniform(1.6, 2.0), r * rng.uniform(0.85, 1.0), 1.0
    elif shape == "round":
        a = b = r * rng.uniform(1.05, 1.2)
        bound = 1.0
    elif shape == "lobulated":
        a, b = r * rng.uniform(1.3, 1.5), r * rng.uniform(0.95, 1.05)
        k = rng.integers(3, 6)
        bound = 1.0 + rng.uniform(0.2, 0.28) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    elif shape == "irregular":
        a, b = r * rng.uniform(1.1, 1.4), r * rng.uniform(0.9, 1.1)
        bound = np.ones_like(phi)
        for k in range(2, 14):
            bound += rng.uniform(0.3, 0.6) / k * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
        n_spic = rng.integers(5, 10)
        for ang in rng.uniform(-np.pi, np.pi, n_spic):
            d = np.angle(np.exp(1j * (phi - ang)))
            bound += rng.uniform(0.25, 0.5) * np.exp(-(d / 0.08) ** 2)
    else:
        raise ValueError(f"unknown lesion shape {shape!r}; choose one of {SHAPES}")
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return rho <= bound


def _tissue(rng, h, w):
    """Backscatter amplitude of layered breast tissue and the layer boundaries."""
    x = np.arange(w)
    wave = lambda amp, per: amp * np.sin(2 * np.pi * x / per + rng.uniform(0, 2 * np.pi))  # noqa: E731
    skin = 0.05 * h + wave(0.01 * h, rng.uniform(0.8, 1.5) * w)
    fat = skin + rng.uniform(0.12, 0.2) * h + wave(0.03 * h, rng.uniform(0.5, 1.0) * w)
    gland = fat + rng.uniform(0.4, 0.5) * h + wave(0.04 * h, rng.uniform(0.4, 0.9) * w)
    yy = np.arange(h)[:, None].astype(np.float64)
    amp = np.empty((h, w))
    amp[:] = 0.55 + 0.12 * smooth_noise(rng, (h, w), 0.06 * h)  # gland
    fat_amp = 0.22 + 0.04 * smooth_noise(rng, (h, w), 0.05 * h)
    amp = np.where(yy < fat, fat_amp, amp)
    muscle = 0.4 + 0.12 * np.sin(2 * np.pi * yy / rng.uniform(5, 9) + 0.3 * smooth_noise(rng, (h, w), 6))
    amp = np.where(yy >= gland, muscle, amp)
    amp = np.where(yy < skin, 1.0, amp)
    # Cooper's ligaments: thin bright curves through fat
    for _ in range(rng.integers(2, 5)):
        y0 = rng.uniform(skin.mean() + 3, fat.mean())
        curve = y0 + wave(0.03 * h, rng.uniform(0.3, 0.8) * w) + np.linspace(0, rng.uniform(-0.08, 0.08) * h, w)
        amp += 0.5 * np.exp(-((yy - curve) / 1.2) ** 2) * (yy < fat)
    return np.clip(amp, 0.02, 1.5), fat, gland


def _image(rng, amp, size):
    from scipy import signal  # here, not at the top: scipy.signal takes about a second to import

    h, w = amp.shape
    field = (rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))) / np.sqrt(2) * amp
    ky, kx = np.mgrid[-6:7, -4:5].astype(np.float64)
    psf = np.exp(-(kx / 1.6) ** 2 - (ky / 1.3) ** 2) * np.cos(2 * np.pi * ky / 3.2)
    env = np.abs(signal.fftconvolve(field, psf, mode="same"))
    return log_compress(env, rng, np.arange(h)[:, None] / h)


def _marks(rng, img: Image.Image, lesions, size):
    d = ImageDraw.Draw(img)
    if rng.random() < 0.8:  # burned-in text near the top border
        txt = rng.choice(["L BREAST", "R BREAST", "RADIAL", "ANTI-RAD", "12:00 3CM FN", "2:00 2CM FN"])
        d.text((rng.integers(2, max(3, size // 3)), 2), str(txt), fill=255)
    if rng.random() < 0.6:  # depth ruler along the right border
        x = size - 4
        for y in range(8, size - 4, size // 12):
            d.line([(x - 2, y), (x, y)], fill=240)
    if rng.random() < 0.6:  # caliper crosses at the ends of the first lesion
        x0, y0, x1, y1 = lesions[0]["bbox"]
        yc = (y0 + y1) // 2
        for xc in (x0 - 2, x1 + 2):
            d.line([(xc - 3, yc), (xc + 3, yc)], fill=255)
            d.line([(xc, yc - 3), (xc, yc + 3)], fill=255)


def render_phantom(cfg: PhantomConfig, index: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Image (uint8), union mask (bool) and per-lesion records of phantom image ``index``."""
    rng = np.random.default_rng([cfg.seed, index])
    s = cfg.size
    amp, fat, gland = _tissue(rng, s, s)
    n_les = 2 if rng.random() < cfg.p_second_lesion else 1
    shapes = list(rng.choice(SHAPES, size=n_les, replace=False))
    lesions, union = [], np.zeros((s, s), bool)
    slots = [(0.3, 0.7)] if n_les == 1 else [(0.22, 0.38), (0.62, 0.78)]
    rng.shuffle(slots)
    for shape, (xa, xb) in zip(shapes, slots):
        r = rng.uniform(0.07, 0.11 if n_les == 2 else 0.14) * s
        cy = rng.uniform(max(fat.mean() + r, 0.35 * s), min(gland.mean() - r, 0.65 * s))
        cx = rng.uniform(xa, xb) * s
        m = lesion_mask(shape, s, s, cy, cx, r, rng) & ~union
        ys, xs = np.nonzero(m)
        posterior = "shadowing" if shape == "irregular" and rng.random() < 0.7 else (
            "enhancement" if rng.random() < 0.7 else "none")
        # posterior acoustic feature: a column band below the lesion, fading with depth
        cols = np.zeros(s, bool)
        cols[xs.min(): xs.max() + 1] = True
        below = (np.arange(s)[:, None] > ys.max()) & cols[None, :]
        fade = np.exp(-np.clip(np.arange(s)[:, None] - ys.max(), 0, None) / (0.35 * s))
        gain = {"enhancement": 0.7, "shadowing": -0.65, "none": 0.0}[posterior]
        amp = amp * (1 + gain * below * fade)
        inner = rng.uniform(0.05, 0.11) * (1 + 0.3 * smooth_noise(rng, (s, s), 3))
        amp = np.where(m, np.clip(inner, 0.01, None), amp)
        union |= m
        lesions.append({"shape": str(shape), "posterior": posterior,
                        "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]})
    # a soft rim so the boundary is not a perfect step
    amp = ndimage.gaussian_filter(amp, 0.8)
    img = Image.fromarray(_image(rng, amp, s))
    if rng.random() < cfg.p_marks:
        _marks(rng, img, lesions, s)
    return np.asarray(img), union, lesions


def generate_phantom(out: str | Path, cfg: PhantomConfig = PhantomConfig(), progress: bool = True) -> Path:
    """Write ``cfg.n_images`` phantom images to ``out`` atomically; reuse it if already complete. Concurrent
    callers (sweep jobs) take turns on a lock beside ``out``: one writes, the others then find it complete."""
    from ..progress import tqdm

    from ..rundir import RunLock

    out = Path(out)

    def complete() -> bool:
        return (out / "phantom.json").is_file() and json.loads((out / "phantom.json").read_text()) == asdict(cfg)

    if complete():
        return out
    with RunLock(out.parent / f".{out.name}.lock", wait=True, poll=0.5, quiet=True):
        if complete():
            return out
        return _write_phantom(out, cfg, tqdm, progress)


def _write_phantom(out: Path, cfg: PhantomConfig, tqdm, progress: bool) -> Path:
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        labels, meta = ["id,class"], {}
        for i in tqdm(range(cfg.n_images), desc="phantom", disable=not progress):
            img, mask, lesions = render_phantom(cfg, i)
            sid = f"phantom_{i:04d}"
            Image.fromarray(img).save(tmp / "images" / f"{sid}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / "masks" / f"{sid}.png")
            labels.append(f"{sid},{lesions[0]['shape']}")
            meta[sid] = lesions
        (tmp / "labels.csv").write_text("\n".join(labels) + "\n")
        (tmp / "lesions.json").write_text(json.dumps(meta, indent=1))
        (tmp / "phantom.json").write_text(json.dumps(asdict(cfg), sort_keys=True))
    return out


def default_phantom_dir(cfg: PhantomConfig) -> Path:
    return data_dir() / f"phantom-{cfg.key()}"


def load_phantom(root: str | Path | None = None, cfg: PhantomConfig = PhantomConfig()) -> list[Sample]:
    """Generate (once) and read the phantom; ``meta['lesions']`` holds each lesion's shape and box."""
    root = generate_phantom(root or default_phantom_dir(cfg), cfg)
    lesions = json.loads((Path(root) / "lesions.json").read_text())
    return [Sample(s.id, s.image, s.masks, s.cls, s.group, {"lesions": lesions[s.id]}) for s in load_folder(root)]


def lesion_caption(sample: Sample, sep: str = " + ") -> str:
    """A phantom image's lesions for a figure title: each shape with where it lies, left to right, the primary
    lesion (the image's class) marked, joined by ``sep``, e.g. "lobulated (left, primary) + oval (right)"; one
    lesion: its shape."""
    lesions = sample.meta.get("lesions", [])
    if len(lesions) < 2:
        return sep.join(les["shape"] for les in lesions)
    order = sorted(range(len(lesions)), key=lambda i: lesions[i]["bbox"][0] + lesions[i]["bbox"][2])
    where = ["left", "right"] if len(lesions) == 2 else [f"{k + 1}. from left" for k in range(len(lesions))]
    return sep.join(f"{lesions[i]['shape']} ({w}{', primary' if i == 0 else ''})" for w, i in zip(where, order))
