"""Procedural 3D ultrasound-like phantom: speckled volumes holding ellipsoid or lobulated hypoechoic lesions.

The 3D counterpart of ``busnb.data.phantom`` (whose noise and log compression it shares): layered tissue along the depth axis (axis 1, H; skin, fat,
gland, muscle) with smooth texture; one lesion (sometimes two) of shape ``ellipsoid`` or ``lobulated`` (an
ellipsoid whose radius is modulated by a few spherical-harmonic-like lobes), hypoechoic, with posterior
enhancement or shadowing below it; multiplicative speckle (complex Gaussian scatterers scaled by the amplitude,
convolved with an anisotropic Gaussian point-spread function modulated along depth, envelope-detected), depth
attenuation and log compression to uint8. Volumes are (D, H, W) = (size, size, size) voxels and deterministic
per (``seed``, index); nothing is written to disk (a volume of 48^3 takes well under a second).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..data.phantom import config_key, log_compress, smooth_noise

SHAPES_3D = ("ellipsoid", "lobulated")


@dataclass(frozen=True)
class Phantom3DConfig:
    n_volumes: int = 24
    size: int = 48
    seed: int = 0
    p_second_lesion: float = 0.25

    def key(self) -> str:
        return config_key(self)


def lesion_mask_3d(shape: str, size: int, centre, radii, rng) -> np.ndarray:
    """Boolean (size, size, size) mask of one lesion: an ellipsoid with semi-axes ``radii`` (voxels, along
    D, H, W) around ``centre``, randomly rotated in the D-W plane; ``lobulated`` modulates its boundary with
    3-5 lobes around the depth axis and 1-2 along it."""
    if shape not in SHAPES_3D:
        raise ValueError(f"unknown 3D lesion shape {shape!r}; choose one of {SHAPES_3D}")
    zz, yy, xx = np.mgrid[0:size, 0:size, 0:size].astype(np.float64)
    dz, dy, dx = zz - centre[0], yy - centre[1], xx - centre[2]
    rot = rng.uniform(0, np.pi)
    u = dx * np.cos(rot) + dz * np.sin(rot)
    w = -dx * np.sin(rot) + dz * np.cos(rot)
    rho = np.sqrt((w / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (u / radii[2]) ** 2)
    bound = 1.0
    if shape == "lobulated":
        az = np.arctan2(w, u)                       # angle around the depth axis
        el = np.arctan2(dy, np.hypot(u, w))         # elevation
        k, m = rng.integers(3, 6), rng.integers(1, 3)
        bound = 1.0 + rng.uniform(0.18, 0.28) * np.cos(k * az + rng.uniform(0, 2 * np.pi)) \
            + rng.uniform(0.08, 0.15) * np.cos(2 * m * el + rng.uniform(0, 2 * np.pi))
    return rho <= bound


def render_volume(cfg: Phantom3DConfig, index: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Volume (uint8, (D, H, W)), union lesion mask (bool) and per-lesion records of volume ``index``."""
    rng = np.random.default_rng([cfg.seed, index, 3])
    s = cfg.size
    shp = (s, s, s)
    y = np.arange(s, dtype=np.float64)[None, :, None]
    skin = 0.05 * s
    fat = skin + rng.uniform(0.12, 0.2) * s + 0.03 * s * smooth_noise(rng, (s, 1, s), 0.3 * s)
    gland = fat + rng.uniform(0.45, 0.55) * s + 0.04 * s * smooth_noise(rng, (s, 1, s), 0.3 * s)
    amp = 0.55 + 0.12 * smooth_noise(rng, shp, 0.06 * s)
    amp = np.where(y < fat, 0.22 + 0.04 * smooth_noise(rng, shp, 0.05 * s), amp)
    amp = np.where(y >= gland, 0.4 + 0.1 * np.sin(2 * np.pi * y / rng.uniform(5, 9)), amp)
    amp = np.where(y < skin, 1.0, amp)
    n_les = 2 if rng.random() < cfg.p_second_lesion else 1
    union, lesions = np.zeros(shp, bool), []
    slots = [(0.3, 0.7)] if n_les == 1 else [(0.22, 0.4), (0.6, 0.78)]
    for i in range(n_les):
        shape = str(rng.choice(SHAPES_3D))
        r = rng.uniform(0.11, 0.15) * s if n_les == 2 else rng.uniform(0.14, 0.21) * s
        radii = (r * rng.uniform(0.8, 1.1), r * rng.uniform(0.7, 0.9), r * rng.uniform(1.1, 1.5))
        cy = rng.uniform(max(float(fat.mean()) + radii[1], 0.35 * s), min(float(gland.mean()) - radii[1], 0.65 * s))
        centre = (rng.uniform(0.35, 0.65) * s, cy, rng.uniform(*slots[i]) * s)
        m = lesion_mask_3d(shape, s, centre, radii, rng) & ~union
        if not m.any():
            continue
        zs, ys, xs = np.nonzero(m)
        posterior = "enhancement" if rng.random() < 0.6 else "shadowing"
        cols = np.zeros((s, 1, s), bool)
        cols[zs.min(): zs.max() + 1, 0, xs.min(): xs.max() + 1] = True
        below = (y > ys.max()) & cols
        fade = np.exp(-np.clip(y - ys.max(), 0, None) / (0.35 * s))
        amp = amp * (1 + {"enhancement": 0.6, "shadowing": -0.6}[posterior] * below * fade)
        inner = rng.uniform(0.05, 0.11) * (1 + 0.3 * smooth_noise(rng, shp, 2))
        amp = np.where(m, np.clip(inner, 0.01, None), amp)
        union |= m
        lesions.append({"shape": shape, "posterior": posterior, "voxels": int(m.sum()),
                        "bbox": [int(zs.min()), int(ys.min()), int(xs.min()), int(zs.max()) + 1, int(ys.max()) + 1,
                                 int(xs.max()) + 1]})
    amp = ndimage.gaussian_filter(np.clip(amp, 0.02, 1.5), 0.7)
    field = (rng.standard_normal(shp) + 1j * rng.standard_normal(shp)) / np.sqrt(2) * amp
    # PSF: Gaussian envelope (narrow in depth), cosine carrier along depth (axis 1)
    k = np.arange(-4, 5, dtype=np.float64)
    carrier = np.exp(-(k / 1.3) ** 2) * np.cos(2 * np.pi * k / 3.2)
    env = ndimage.convolve1d(field.real, carrier, axis=1) + 1j * ndimage.convolve1d(field.imag, carrier, axis=1)
    env = ndimage.gaussian_filter(env.real, (1.4, 0, 1.6)) + 1j * ndimage.gaussian_filter(env.imag, (1.4, 0, 1.6))
    return log_compress(np.abs(env), rng, y / s, attenuation=(0.8, 1.4)), union, lesions


def make_phantom3d(cfg: Phantom3DConfig = Phantom3DConfig(), progress: bool = False):
    """(volumes (N, D, H, W) uint8, masks (N, D, H, W) bool, lesion records) of the whole phantom."""
    from ..progress import tqdm

    vols, masks, recs = [], [], []
    for i in tqdm(range(cfg.n_volumes), desc="phantom3d", disable=not progress):
        v, m, les = render_volume(cfg, i)
        vols.append(v)
        masks.append(m)
        recs.append(les)
    return np.stack(vols), np.stack(masks), recs
