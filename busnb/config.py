"""Run profiles: small named configurations (UniMatch-style), overridable field by field.

* ``smoke`` - phantom, 64 px, tiny ResNet-18 U-Net, a few steps: tests and ``make demo``.
* ``cpu``   - BUSI at 128 px, ResNet-18 U-Net from scratch, 40 epochs: a laptop, < 1 h per run.
* ``gpu``   - the paper recipe: BUSI, 224 px, ResNet-34 U-Net, Adam, ReduceLROnPlateau,
  batch 4 labeled + 4 unlabeled, 100 epochs, no augmentation.
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
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    seeds: tuple = (0,)
    ratios: tuple = (2.5,)

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "smoke": Profile("smoke", "phantom", 64, "resnet18", (64, 32, 16, 16, 8), epochs=3, steps_per_epoch=6,
                     batch_labeled=2, batch_unlabeled=2, plateau_patience=2),
    "cpu": Profile("cpu", "busi", 128, "resnet18", (128, 64, 32, 16, 16), epochs=40, steps_per_epoch=None,
                   plateau_patience=5, ratios=(2.5, 100.0)),
    "gpu": Profile("gpu", "busi", 224, "resnet34", (256, 128, 64, 32, 16), epochs=100, steps_per_epoch=None,
                   lr=1e-4, plateau_patience=10, seeds=(0, 1, 2), ratios=(2.5, 10.0, 20.0, 100.0)),
}


def get_profile(name: str, **overrides) -> Profile:
    """A named profile with any field replaced, e.g. ``get_profile("cpu", epochs=5)``."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "decoder_channels" in overrides:
        overrides["decoder_channels"] = tuple(overrides["decoder_channels"])
    return replace(PROFILES[name], **overrides)
