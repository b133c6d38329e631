"""Torch network definitions (nn.Modules only): U-Net (2D, 3D, anisotropic 3D), ResNet classifiers,
Mask R-CNN and Monte Carlo dropout."""

from idl.models.dropout import MCDropout, set_mc_dropout
from idl.models.maskrcnn import InstanceMaskRCNN, MaskRCNNSpec, build_maskrcnn
from idl.models.resnet import ResNetClassifier, ResNetSpec, build_resnet
from idl.models.unet import UNet, UNet2D, UNetSpec, build_unet2d

__all__ = [
    "InstanceMaskRCNN",
    "MCDropout",
    "MaskRCNNSpec",
    "ResNetClassifier",
    "ResNetSpec",
    "UNet",
    "UNet2D",
    "UNetSpec",
    "build_maskrcnn",
    "build_resnet",
    "build_unet2d",
    "set_mc_dropout",
]
