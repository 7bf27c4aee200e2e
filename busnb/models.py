"""The segmentation network: an smp U-Net whose forward can also return decoder features."""
from __future__ import annotations

import torch
from torch import nn


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be loaded here."""


class SegNet(nn.Module):
    """smp ``Unet`` (Ronneberger et al. 2015) with a configurable encoder, one output channel.

    ``forward(x, return_features=True)`` returns ``(logits, features)`` where ``features``
    is the last decoder map (B, decoder_channels[-1], H, W), used by the contrastive losses.

    ``decoder_channels`` has one width per decoder stage, and its length is the encoder's depth (smp's
    ``encoder_depth``, 1-5): 5 is the full ResNet; the ``smoke`` and ``demo`` profiles use 3 (a ResNet-18 cut
    after ``layer2``, 0.76 M parameters instead of 11.7 M), which is plenty for 64-px phantoms and keeps their
    checkpoints a few MB. The stages a shallower ResNet does not run are removed, so they are neither trained
    nor saved.
    """

    def __init__(self, encoder: str = "resnet34", encoder_weights: str | None = None, in_channels: int = 1,
                 decoder_channels=(256, 128, 64, 32, 16), arch: str = "unet"):
        super().__init__()
        import segmentation_models_pytorch as smp

        try:
            if arch == "unet":
                self.net = smp.Unet(encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels,
                                    classes=1, decoder_channels=tuple(decoder_channels),
                                    encoder_depth=len(decoder_channels))
                drop_unused_stages(self.net.encoder, len(decoder_channels))
            else:  # another smp architecture (e.g. the second network of the dual-network method)
                self.net = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights,
                                            in_channels=in_channels, classes=1)
        except Exception as e:  # offline: hub download fails with a variety of errors
            if encoder_weights is None:
                raise
            raise WeightsUnavailable(
                f"could not load '{encoder_weights}' weights for encoder '{encoder}' ({type(e).__name__}: {e}). "
                "Fix: run with encoder_weights=None (training from scratch, as in this repo's reported results), "
                "or on a connected machine download them once (they land in the Hugging Face cache, "
                "~/.cache/huggingface) and copy that cache here."
            ) from e
        self.arch = arch
        self.depth = len(decoder_channels) if arch == "unet" else 5
        self.feature_channels = decoder_channels[-1] if arch == "unet" else None

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.net.encoder(x)
        dec = self.net.decoder(feats)
        logits = self.net.segmentation_head(dec)
        if return_features and dec.shape[-2:] != logits.shape[-2:]:  # decoders ending below full resolution (FPN)
            dec = torch.nn.functional.interpolate(dec, size=logits.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, dec) if return_features else logits


def drop_unused_stages(encoder: nn.Module, depth: int) -> None:
    """Delete the ResNet stages an smp encoder of ``depth`` < 5 never runs (smp keeps ``layer3``/``layer4``
    as dead weights: they would be saved in every checkpoint and counted as parameters)."""
    for stage, needed in (("layer4", 5), ("layer3", 4), ("layer2", 3), ("layer1", 2)):
        if depth < needed and isinstance(getattr(encoder, stage, None), nn.Module):
            delattr(encoder, stage)


# The second, different architecture of two-network methods (``build_model(..., arch="partner")``): smp LinkNet
# (additive skips) on a MobileNet-V2 encoder (inverted residuals), beside the U-Net on a ResNet: different
# encoder and decoder, as the dual-network method (arXiv 2509.13084) pairs a V-Net with a ResNet-34 in 3D.
# Always from scratch (a pretrained encoder.pt of the profile's encoder does not fit it).
PARTNER_2D = ("linknet", "mobilenet_v2")


def build_model(encoder: str = "resnet34", encoder_weights: str | None = None,
                decoder_channels=(256, 128, 64, 32, 16), in_channels: int = 1, arch: str = "unet") -> SegNet:
    """A :class:`SegNet`. ``encoder_weights``: None (from scratch), a name smp knows (``imagenet``: needs the
    download), or the path of an ``encoder.pt`` (e.g. the in-domain SimCLR encoder of ``busnb pretrain``).
    ``ssl`` must be resolved to a path first (``busnb.experiment.resolve_encoder``). ``arch``: ``unet`` (the
    profile's network), another smp architecture on the same encoder (``linknet``, ``fpn``, ...), or ``partner``
    (:data:`PARTNER_2D`, from scratch)."""
    if arch == "partner":
        return SegNet(PARTNER_2D[1], None, in_channels, decoder_channels, arch=PARTNER_2D[0])
    from .ssl import is_path, load_encoder

    if encoder_weights == "ssl":
        raise ValueError("encoder_weights='ssl' names the in-domain encoder of a dataset and split seed; it is "
                         "resolved by the experiment (busnb train / run_experiment). Outside a run, pretrain it "
                         "with `busnb pretrain` and pass encoder_weights=<path to encoder.pt>.")
    if is_path(encoder_weights):
        net = SegNet(encoder, None, in_channels, decoder_channels, arch=arch)
        load_encoder(net, encoder_weights)
        return net
    return SegNet(encoder, encoder_weights, in_channels, decoder_channels, arch=arch)


def check_device(device: str = "auto") -> torch.device:
    """The device ``device`` names, checked: a ``ValueError`` (one line, with the fix) for a name torch does not
    know or a device this machine does not have, instead of a failure deep inside the first step."""
    if device == "auto":
        return pick_device(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r}: not a device name. Fix: cpu, cuda, cuda:1, mps, or leave it out "
                         "(auto: CUDA, then MPS, then CPU).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine. Fix: --device cpu, or leave "
                         "it out (auto).")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                         f"(0..{torch.cuda.device_count() - 1}). Fix: name one of them.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                  and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: Apple MPS is not available on this machine. Fix: --device cpu, or "
                         "leave it out (auto).")
    return dev


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple MPS, else CPU; any other name is checked by :func:`check_device`."""
    if device != "auto":
        return check_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
