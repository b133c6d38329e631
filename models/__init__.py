"""Torch network definitions (nn.Modules only): U-Net (2D, 3D, anisotropic 3D) and Monte Carlo dropout."""

from idl.models.dropout import MCDropout, set_mc_dropout
from idl.models.unet import UNet, UNet2D, UNetSpec, build_unet2d

__all__ = ["MCDropout", "UNet", "UNet2D", "UNetSpec", "build_unet2d", "set_mc_dropout"]
