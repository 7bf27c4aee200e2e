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
    """

    def __init__(self, encoder: str = "resnet34", encoder_weights: str | None = None, in_channels: int = 1,
                 decoder_channels=(256, 128, 64, 32, 16)):
        super().__init__()
        import segmentation_models_pytorch as smp

        try:
            self.net = smp.Unet(encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels,
                                classes=1, decoder_channels=tuple(decoder_channels))
        except Exception as e:  # offline: hub download fails with a variety of errors
            if encoder_weights is None:
                raise
            raise WeightsUnavailable(
                f"could not load '{encoder_weights}' weights for encoder '{encoder}' ({type(e).__name__}: {e}). "
                "Fix: run with encoder_weights=None (training from scratch, as in this repo's reported results), "
                "or on a connected machine download them once (they land in the Hugging Face cache, "
                "~/.cache/huggingface) and copy that cache here."
            ) from e
        self.feature_channels = decoder_channels[-1]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.net.encoder(x)
        dec = self.net.decoder(feats)
        logits = self.net.segmentation_head(dec)
        return (logits, dec) if return_features else logits


def build_model(encoder: str = "resnet34", encoder_weights: str | None = None,
                decoder_channels=(256, 128, 64, 32, 16), in_channels: int = 1) -> SegNet:
    return SegNet(encoder, encoder_weights, in_channels, decoder_channels)


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA, else Apple MPS, else CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
