"""Torch network definitions: U-Net (2D, 3D, anisotropic 3D), SegNet (2D), ResNet classifiers, Mask
R-CNN, the star-convex polygon and flow-field U-Nets, and Monte Carlo dropout. Every network
implements :class:`~idl.models.network.Network` (what training, checkpoints and export need of it)
and is registered here under the name checkpoints store (:mod:`idl.models.registry`)."""

from idl.models.dropout import MCDropout, set_mc_dropout
from idl.models.maskrcnn import InstanceMaskRCNN, MaskRCNNSpec, build_maskrcnn
from idl.models.network import Network
from idl.models.registry import register
from idl.models.resnet import ResNetClassifier, ResNetSpec, build_resnet
from idl.models.segnet import SegNet, SegNetSpec, build_segnet
from idl.models.unet import (
    FlowUNet,
    StarDistSpec,
    StarDistUNet,
    UNet,
    UNet2D,
    UNetSpec,
    build_flows,
    build_stardist,
    build_unet2d,
)

register("unet", UNet, UNetSpec, aliases=("unet2d",))  # "unet2d": checkpoints from before the 3D U-Net
register("resnet", ResNetClassifier, ResNetSpec)
register("maskrcnn", InstanceMaskRCNN, MaskRCNNSpec)
register("stardist", StarDistUNet, StarDistSpec)
register("flows", FlowUNet, UNetSpec)
register("segnet", SegNet, SegNetSpec)

__all__ = [
    "FlowUNet",
    "InstanceMaskRCNN",
    "MCDropout",
    "MaskRCNNSpec",
    "Network",
    "ResNetClassifier",
    "ResNetSpec",
    "SegNet",
    "SegNetSpec",
    "StarDistSpec",
    "StarDistUNet",
    "UNet",
    "UNet2D",
    "UNetSpec",
    "build_flows",
    "build_maskrcnn",
    "build_resnet",
    "build_segnet",
    "build_stardist",
    "build_unet2d",
    "set_mc_dropout",
]
