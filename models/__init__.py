"""Torch network definitions (nn.Modules only): U-Net and Monte Carlo dropout."""

from idl.models.dropout import MCDropout, set_mc_dropout
from idl.models.unet import UNet2D, UNetSpec, build_unet2d

__all__ = ["MCDropout", "UNet2D", "UNetSpec", "build_unet2d", "set_mc_dropout"]
