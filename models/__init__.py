"""Torch network definitions (nn.Modules only): U-Net (2D, 3D, anisotropic 3D), ResNet classifiers and
Monte Carlo dropout."""

from idl.models.dropout import MCDropout, set_mc_dropout
from idl.models.resnet import ResNetClassifier, ResNetSpec, build_resnet
from idl.models.unet import UNet, UNet2D, UNetSpec, build_unet2d

__all__ = [
    "MCDropout",
    "ResNetClassifier",
    "ResNetSpec",
    "UNet",
    "UNet2D",
    "UNetSpec",
    "build_resnet",
    "build_unet2d",
    "set_mc_dropout",
]
