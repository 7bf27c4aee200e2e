"""Run profiles: small named configurations (UniMatch-style), overridable field by field.

* ``smoke`` - phantom, 64 px, tiny U-Net (ResNet-18 cut after its second stage: three decoder widths, 0.76 M
  parameters), a few steps: tests and ``make demo``. Checks that code runs;
  its numbers mean nothing (18 steps: the networks have barely moved from their initialisation).
* ``demo``  - the teaching size, the default of notebooks 03-06: the same phantom, network and input size as
  ``smoke``, batch 4+4, 10 epochs x 10 steps (100 steps for the static teacher, 100 for the dual-teacher run:
  44 s on one CPU core). Enough for the teachers, the fused target and the student to segment the
  lesions (test Dice about 0.8-0.9 on the phantom), so the maps of 03 and 04 have structure. Still 4 labeled
  images and 11 test images: differences of a few Dice points between methods are within noise, and the
  notebooks say so beside their numbers.
* ``cpu``   - BUSI at 128 px, ResNet-18 U-Net from scratch, 40 epochs: a laptop, < 1 h per run.
* ``gpu``   - the paper recipe: BUSI, 224 px, ResNet-34 U-Net, Adam, ReduceLROnPlateau,
  batch 4 labeled + 4 unlabeled, 100 epochs, no augmentation.
* ``scratch`` - the recipe for training with no downloaded weights, next to the faithful ``gpu`` one and
  applied to every method alike: the same network, data and batch, but lr 1e-3 (1e-4 is an ImageNet
  fine-tuning rate), 150 epochs, ultrasound augmentation (``busnb.augment``: flips, small affine, gamma,
  blur, speckle) and the encoder pretrained in-domain with SimCLR on the split's train pool
  (``encoder_weights=ssl``, ``busnb.ssl``).

``encoder_weights``: None (from scratch), ``ssl`` (the in-domain encoder of the run's dataset and split seed,
pretrained for ``ssl_epochs`` epochs with ``ssl_method``, ``simclr`` (the encoder), ``restore`` (encoder and
decoder by masked restoration) or ``simclr+restore`` (SimCLR's encoder, then a decoder restored on it, frozen), and
cached), the path of an ``encoder.pt``, or a name smp downloads
(``imagenet``; not possible offline). ``augment``: ``none`` | ``weak`` | ``us`` (``busnb.augment``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .data.phantom import PhantomConfig


@dataclass(frozen=True)
class Profile:
    name: str
    dataset: str
    image_size: int
    encoder: str
    decoder_channels: tuple
    epochs: int
    steps_per_epoch: int | None
    batch_labeled: int = 4
    batch_unlabeled: int = 4
    lr: float = 1e-3
    plateau_patience: int = 10
    encoder_weights: str | None = None
    augment: str = "none"
    ssl_epochs: int = 100
    ssl_method: str = "simclr"  # or "restore", "simclr+restore" (busnb.ssl: the decoder pretrained too)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    seeds: tuple = (0,)
    ratios: tuple = (2.5,)
    ndim: int = 2               # 3: volumes (busnb.vol; `busnb train --profile phantom3d`), image_size = volume edge
    patch_size: tuple = ()      # 3D: training crop (d, h, w) and sliding-window size

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def encoder_depth(self) -> int:
        """Stages of the 2D encoder: one per decoder width (``busnb.models.SegNet``)."""
        return len(self.decoder_channels)


PROFILES = {
    "smoke": Profile("smoke", "phantom", 64, "resnet18", (32, 16, 8), epochs=3, steps_per_epoch=6, ssl_epochs=2,
                     batch_labeled=2, batch_unlabeled=2, plateau_patience=2),
    "demo": Profile("demo", "phantom", 64, "resnet18", (32, 16, 8), epochs=10, steps_per_epoch=10,
                    ssl_epochs=10, plateau_patience=4),
    "cpu": Profile("cpu", "busi", 128, "resnet18", (128, 64, 32, 16, 16), epochs=40, steps_per_epoch=None,
                   plateau_patience=5, ratios=(2.5, 100.0), ssl_epochs=80),
    "gpu": Profile("gpu", "busi", 224, "resnet34", (256, 128, 64, 32, 16), epochs=100, steps_per_epoch=None,
                   lr=1e-4, plateau_patience=10, seeds=(0, 1, 2), ratios=(2.5, 10.0, 20.0, 100.0)),
    "scratch": Profile("scratch", "busi", 224, "resnet34", (256, 128, 64, 32, 16), epochs=150, steps_per_epoch=None,
                       lr=1e-3, plateau_patience=15, encoder_weights="ssl", augment="us", ssl_epochs=200,
                       seeds=(0, 1, 2), ratios=(2.5, 10.0)),
    # 3D (busnb.vol): the 3D phantom (``phantom``: n_images volumes of size^3 voxels), MONAI 3D U-Net (``encoder``
    # names the 3D architecture, ``decoder_channels`` its 6 BasicUNet widths; vnet for GPUs), random patches,
    # sliding-window validation and test. phantom3d: 45 epochs x 10 steps; at 15 every run was still rising and
    # dual_uncertainty tied its supervised U-Net (60.6 vs 60.7 Dice, 3 seeds), at 45 it leads (80.1 vs 71.9;
    # results/cpu-2026-11-24: 8 min per dual_uncertainty run, 4 min supervised, on one CPU core)
    "smoke3d": Profile("smoke3d", "phantom3d", 40, "unet3d", (4, 4, 8, 8, 16, 4), epochs=2, steps_per_epoch=2,
                       batch_labeled=1, batch_unlabeled=1, plateau_patience=2, phantom=PhantomConfig(n_images=8, size=40),
                       ratios=(10.0,), ndim=3, patch_size=(32, 32, 32)),
    "phantom3d": Profile("phantom3d", "phantom3d", 48, "unet3d", (8, 8, 16, 32, 64, 8), epochs=45, steps_per_epoch=10,
                         batch_labeled=2, batch_unlabeled=2, plateau_patience=5,
                         phantom=PhantomConfig(n_images=40, size=48), ratios=(10.0,), ndim=3, patch_size=(32, 32, 32)),
}


class SettingError(ValueError):
    """An override names no profile field or has the wrong type."""


def _coerce(name: str, value, default, profile: str):
    """``value`` converted to the type of the profile's ``default`` for field ``name``, or SettingError."""
    def bad(kind):
        return SettingError(f"setting {name}={value!r}: {name} must be {kind} (profile {profile} has "
                            f"{name}={default!r}).")

    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes"):
            return True
        if str(value).lower() in ("false", "0", "no"):
            return False
        raise bad("true or false")
    if name in ("steps_per_epoch", "encoder_weights") and value in (None, "none", "None", "null"):
        return None
    if isinstance(default, int) or name == "steps_per_epoch":
        if isinstance(value, bool):
            raise bad("an integer")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise bad("an integer") from None
        if f != int(f):
            raise bad("an integer")
        return int(f)
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        try:
            return tuple(type(default[0])(v) if default else v for v in value)
        except (TypeError, ValueError):
            raise bad(f"a list of {type(default[0]).__name__}") from None
    if isinstance(default, PhantomConfig):
        if isinstance(value, PhantomConfig):
            return value
        if not isinstance(value, dict):
            raise bad("a mapping of phantom settings")
        try:
            return replace(default, **value)
        except TypeError as e:
            raise bad(f"phantom settings ({e})") from None
    if default is None or isinstance(default, str):
        return None if value is None else str(value)
    return value


def check_overrides(name: str, overrides: dict) -> dict:
    """Validate ``overrides`` against profile ``name`` before anything is loaded: unknown fields (with the
    closest valid name) and wrong types raise :class:`SettingError`. Returns the converted values."""
    from .errors import closest

    if name not in PROFILES:
        raise SettingError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    base = PROFILES[name]
    fields = [f for f in base.__dataclass_fields__ if f != "name"]
    out = {}
    for k, v in overrides.items():
        if k not in fields:
            close = closest(k, fields)
            hint = f" Did you mean '{close}'?" if close else ""
            raise SettingError(f"unknown setting {k!r}.{hint} Valid settings: {', '.join(sorted(fields))}.")
        out[k] = _coerce(k, v, getattr(base, k), name)
    for k in ("epochs", "image_size", "batch_labeled", "batch_unlabeled"):
        if k in out and out[k] < 1:
            raise SettingError(f"setting {k}={out[k]}: must be at least 1.")
    if "augment" in out:
        from .augment import KINDS

        if out["augment"] not in KINDS:
            raise SettingError(f"setting augment={out['augment']!r}: choose one of {', '.join(KINDS)}.")
    if "ssl_method" in out:
        from .ssl import SSL_METHODS

        if out["ssl_method"] not in SSL_METHODS:
            raise SettingError(f"setting ssl_method={out['ssl_method']!r}: choose one of {', '.join(SSL_METHODS)}.")
    if "encoder_weights" in out and out["encoder_weights"] not in (None, "ssl", "imagenet"):
        from pathlib import Path

        if not Path(out["encoder_weights"]).is_file():
            raise SettingError(f"setting encoder_weights={out['encoder_weights']!r}: no such file. Use none, ssl "
                               "(in-domain pretrained network, cached per split seed), imagenet "
                               "(needs a download), or the path of an encoder.pt or unet.pt from `busnb pretrain`.")
    if "lr" in out and not out["lr"] > 0:
        raise SettingError(f"setting lr={out['lr']}: must be positive.")
    return out


def get_profile(name: str, **overrides) -> Profile:
    """A named profile with any field replaced, e.g. ``get_profile("cpu", epochs=5)``; overrides are checked
    (:func:`check_overrides`)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(PROFILES[name] if name in PROFILES else check_overrides(name, {}), **check_overrides(name, overrides))
