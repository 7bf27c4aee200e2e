"""3D segmentation networks from MONAI, one output channel, with the decoder's last feature map.

``arch``:

* ``vnet``      - MONAI ``VNet`` (Milletari et al. 2016), the dual-network paper's first network. Its widths are
  fixed (16 ... 256 channels, 45.6 M parameters): 3.3 s per step of four 16^3 patches on one core of the
  development VM, so it is for GPUs; the CPU profiles use ``unet3d``.
* ``unet3d``    - MONAI ``BasicUNet`` (a 3D U-Net, Cicek et al. 2016) with ``channels`` (6 widths).
* ``segresnet`` - MONAI ``SegResNet`` (Myronenko 2018): a ResNet-block encoder-decoder.
* ``partner``   - the same ``SegResNet`` as the second, different architecture of the dual-network method
  (standing in for the paper's 3D ResNet-34), with one change: no ReLU between its last normalisation and its
  1x1 output convolution. MONAI's head is norm -> ReLU -> conv; once all of that convolution's weights are
  negative, no input can lift the logit above the conv's bias, and a bias below 0 means the network never
  marks a voxel as lesion. That happened (``results/cpu-2026-11-24/phantom3d-r10-e45``, seed 1: weights all
  negative, bias -0.03, ``fg_b`` = 0 at every epoch); a linear head on normalised features cannot get stuck so.

``forward(x, return_features=True)`` returns ``(logits, features)``, the features being the input of the
network's output block (full resolution), captured with a forward pre-hook, for the prototype contrast.
Sizes: every spatial size must be divisible by 16 (``vnet``, ``unet3d``) or 8 (``segresnet``).
"""
from __future__ import annotations

import torch
from torch import nn

ARCHS_3D = ("vnet", "unet3d", "segresnet", "partner")


class VolNet(nn.Module):
    """A MONAI 3D network whose output block's input is returned as features on request."""

    def __init__(self, arch: str = "unet3d", channels=(8, 8, 16, 32, 64, 8), in_channels: int = 1):
        super().__init__()
        from monai.networks.nets import BasicUNet, SegResNet, VNet

        linear_head = arch == "partner"
        arch = "segresnet" if arch == "partner" else arch
        if arch == "vnet":
            self.net = VNet(spatial_dims=3, in_channels=in_channels, out_channels=1, dropout_prob_down=0.0,
                            dropout_prob_up=(0.0, 0.0))
            head = self.net.out_tr
        elif arch == "unet3d":
            if len(channels) != 6:
                raise ValueError(f"unet3d needs 6 channel widths (BasicUNet features), got {tuple(channels)}; "
                                 "set decoder_channels in the profile, e.g. (8, 8, 16, 32, 64, 8)")
            self.net = BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=1, features=tuple(channels))
            head = self.net.final_conv
        elif arch == "segresnet":
            self.net = SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=1, init_filters=8)
            head = self.net.conv_final  # norm, activation, 1x1 conv
            if linear_head:
                head[1] = nn.Identity()
        else:
            raise ValueError(f"unknown 3D architecture {arch!r}; choose one of {ARCHS_3D}")
        self.arch = arch
        self._feats = None
        head.register_forward_pre_hook(self._grab)

    def _grab(self, module, args):
        self._feats = args[0]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        logits = self.net(x)
        feats, self._feats = self._feats, None
        return (logits, feats) if return_features else logits


def build_volume_model(encoder: str = "unet3d", encoder_weights=None, decoder_channels=(8, 8, 16, 32, 64, 8),
                       in_channels: int = 1, arch: str | None = None) -> VolNet:
    """The 3D counterpart of ``busnb.models.build_model`` (same positional order, so a profile's ``encoder``
    names the 3D architecture and ``decoder_channels`` its widths); ``arch`` overrides it (``partner``: the
    dual-network method's second network). No pretrained 3D weights exist here: ``encoder_weights`` must be None."""
    if encoder_weights is not None:
        raise ValueError(f"3D networks are trained from scratch here; encoder_weights={encoder_weights!r} "
                         "is not supported (set encoder_weights=none)")
    return VolNet(arch or encoder, decoder_channels, in_channels)
