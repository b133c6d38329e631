"""Mask R-CNN for instance segmentation: torchvision's ``maskrcnn_resnet50_fpn``, built without
downloaded weights, sized to the data, and wrapped so that its evaluation forward returns a label
image.

Sized to the data instead of torchvision's defaults, which suit photographs:

- no resizing: images keep their pixel size (torchvision scales every image to 800 px on the short
  side, which blows a 192 px crop of nuclei up 4x and a 2048 px scan down);
- anchor sizes from the objects' sizes in the training labels (:func:`anchor_sizes_for`);
- any number of input channels (the first convolution is rebuilt), images normalized by idl
  beforehand (mean 0, standard deviation 1 inside the network);
- room for as many objects per image as the data has.

The exported computation (:meth:`InstanceMaskRCNN.forward` in evaluation mode) takes one normalized
image ``(1, C, Y, X)`` and returns ``(1, 2, Y, X)`` float32: channel 0 the label image (0 background,
1..N objects, highest-scoring object first where masks overlap), channel 1 the detection score of the
object owning each pixel. One output of the image's own size keeps the graph usable by any
bioimage.io consumer and lets idl tile it like any other network. It is exported as torchvision's own
ONNX tests export it (opset 17, one image of any size) and checked on two image sizes, where a mask
probability within rounding of 0.5 may flip a few pixels (:meth:`InstanceMaskRCNN.agreement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from idl.models.freezing import FreezableEncoder
from idl.models.network import Agreement, Examples, Exportable, MonteCarlo, largest_difference

if TYPE_CHECKING:
    from idl.infer.core.model_info import ModelInfo

FPN_LEVELS = 5  # feature maps of the ResNet-50 FPN: strides 4, 8, 16, 32, 64
ASPECT_RATIOS = (0.5, 1.0, 2.0)
MASK_THRESHOLD = 0.5
MIN_VISIBLE_SHARE = 0.5  # of its mask an object must keep after better objects took their pixels


# the exported graph is checked on two uneven image sizes, neither a multiple of 32
EXAMPLE_SIZES = ((160, 224), (256, 192))

ROIS_PER_IMAGE = 128  # regions sampled per image for the box and mask heads in training
PROPOSALS_TRAINING = 1000  # region proposals kept per image after NMS in training


@dataclass(frozen=True)
class MaskRCNNSpec:
    """Everything that defines the network's shape and its detection settings."""

    in_channels: int = 1
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per FPN level
    max_detections: int = 100  # objects per image (or tile) at most
    score_threshold: float = 0.5  # detections below this score are dropped
    nms_threshold: float = 0.5  # box overlap at which the weaker of two detections is dropped

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchor_sizes", tuple(int(s) for s in self.anchor_sizes))
        if len(self.anchor_sizes) != FPN_LEVELS:
            raise ValueError(f"Mask R-CNN needs {FPN_LEVELS} anchor sizes, got {self.anchor_sizes}")
        if self.in_channels < 1 or self.max_detections < 1:
            raise ValueError("in_channels and max_detections must be >= 1")


def anchor_sizes_for(object_sides: np.ndarray) -> tuple[int, ...]:
    """Anchor sizes for the five FPN levels from the objects' box sides (``sqrt(height * width)``):
    doubling per level like torchvision's ``32 ... 512``, but starting at the 5th percentile of the
    objects (rounded to a power of two, at least 8 px), so the finest level matches the smallest
    objects and the coarsest still covers objects 16x larger."""
    sides = np.asarray(object_sides, dtype=float)
    small = float(np.percentile(sides, 5)) if sides.size else 32.0
    base = int(2 ** max(3, round(np.log2(max(small, 1.0)))))
    return tuple(base * 2**level for level in range(FPN_LEVELS))


class _KeepSize(GeneralizedRCNNTransform):
    """torchvision's input transform without its resize: pixels keep their size, the batch is still
    padded to a multiple of 32."""

    def resize(self, image, target=None):  # noqa: D102 - same contract as the parent
        return image, target


def compose_labels(masks: torch.Tensor, scores: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(2, Y, X)``: the label image and the score of the owning object, from ``(N, Y, X)`` mask
    probabilities sorted by descending score. A pixel belongs to the first (highest-scoring) object
    whose mask covers it; an object left with less than half of its mask that way is mostly a second
    detection of a better one and is dropped (its label number stays unused). ``like`` is any
    ``(1, Y, X)`` tensor: it gives the background plane, so an image without detections works (also
    in ONNX)."""
    covered = (masks > MASK_THRESHOLD).to(like.dtype)
    background = torch.zeros_like(like)
    index = torch.argmax(torch.cat([background, covered], dim=0), dim=0)  # first maximum: best object
    ids = torch.cumsum(torch.ones_like(scores, dtype=like.dtype), dim=0)  # 1..N, traceable for any N
    visible = (index.to(like.dtype)[None] == ids[:, None, None]).to(like.dtype).sum(dim=(1, 2))
    kept = (visible >= MIN_VISIBLE_SHARE * covered.sum(dim=(1, 2))).to(like.dtype)
    index = torch.argmax(torch.cat([background, covered * kept[:, None, None]], dim=0), dim=0)
    score_of = torch.cat([torch.zeros_like(like[:, 0, 0]), scores.to(like.dtype)], dim=0)
    return torch.stack([index.to(like.dtype), score_of[index]], dim=0)


class InstanceMaskRCNN(FreezableEncoder, Exportable):
    """torchvision Mask R-CNN (ResNet-50 FPN, two classes: background and object) per
    :class:`MaskRCNNSpec`; ``forward`` in evaluation mode returns labels and scores (see the module
    docstring), :meth:`losses` trains."""

    builder: ClassVar[str] = "build_maskrcnn"  # the idl.models function a package rebuilds it with
    output: ClassVar[str] = "labels"
    onnx_opset: ClassVar[int | None] = 17  # as torchvision's own ONNX tests
    # labels may differ on this share of the pixels, scores (where the labels agree) by as much
    tolerance: ClassVar[float] = 1e-3

    def __init__(self, spec: MaskRCNNSpec) -> None:
        super().__init__()
        self.spec = spec
        channels = spec.in_channels
        anchors = AnchorGenerator(tuple((s,) for s in spec.anchor_sizes), (ASPECT_RATIOS,) * FPN_LEVELS)
        self.net = maskrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=2,
            rpn_anchor_generator=anchors,
            box_detections_per_img=spec.max_detections,
            box_score_thresh=spec.score_threshold,
            box_nms_thresh=spec.nms_threshold,
            # Matterport's nucleus settings (TRAIN_ROIS_PER_IMAGE, POST_NMS_ROIS_TRAINING) instead of
            # torchvision's COCO ones (512, 2000): the mask head's convolutions on every positive
            # region dominate a CPU step, which takes 5.5 s instead of 17.4 s (4 crops of 128 px
            # with 15 nuclei each)
            box_batch_size_per_image=ROIS_PER_IMAGE,
            rpn_post_nms_top_n_train=PROPOSALS_TRAINING,
        )
        self.net.transform = _KeepSize(1, 1, [0.0] * channels, [1.0] * channels)
        if channels != 3:
            conv = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            self.net.backbone.body.conv1 = conv

    @staticmethod
    def in_encoder(name: str) -> bool:
        """The ResNet-50 body is the encoder; FPN, region proposals and heads stay trainable."""
        return name.startswith("net.backbone.body.")

    def losses(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """The summed torchvision training losses (classifier, box, mask, objectness, RPN box) of
        ``(C, Y, X)`` images with ``boxes``/``labels``/``masks`` targets; call in training mode."""
        return sum(self.net(images, targets).values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, C, Y, X)`` normalized image -> ``(1, 2, Y, X)`` labels and scores (evaluation mode)."""
        detections = self.net([x[0]])[0]
        return compose_labels(detections["masks"][:, 0], detections["scores"], x[0, :1])[None]

    def monte_carlo(self) -> MonteCarlo | None:
        """None: Mask R-CNN has no dropout."""
        return None

    def formats_at_every_size(self) -> tuple[str, ...]:
        """ONNX alone: PyTorch's runs of Mask R-CNN at three tile sizes take minutes on a CPU."""
        return ("onnx",)

    def example_inputs(self, info: ModelInfo) -> Examples:
        """One image of each of :data:`EXAMPLE_SIZES` (batch 1, y and x dynamic)."""
        generator = torch.Generator().manual_seed(0)
        images = [torch.rand(1, info.in_channels, *size, generator=generator) for size in EXAMPLE_SIZES]
        return Examples(images[0], tuple(images), {2: "y", 3: "x"})

    def agreement(self, expected: torch.Tensor, got: torch.Tensor) -> Agreement:
        """The share of pixels whose label differs, or the largest score difference where the labels
        agree, whichever is larger."""
        if expected.shape != got.shape:
            return largest_difference(expected, got)  # infinite
        labels, scores = compare_labels(expected, got)
        return Agreement(max(labels, scores), f"{labels:.2%} of the labels differ, scores by {scores:.3g}")


def compare_labels(expected: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """Two ``(N, 2, Y, X)`` outputs of :meth:`InstanceMaskRCNN.forward`: the share of pixels whose
    label differs, and the largest score difference where the labels agree."""
    same = got[:, 0] == expected[:, 0]
    differences = (got[:, 1].double() - expected[:, 1].double()).abs()[same]
    score = float(differences.max()) if differences.numel() else 0.0
    return float(1.0 - same.double().mean()), score


def targets_from_labels(labels: np.ndarray, min_area: int = 4) -> dict[str, torch.Tensor]:
    """Mask R-CNN training targets from a ``(Y, X)`` label image: one binary mask, tight box and class
    1 per object of at least ``min_area`` pixels (slivers cut off by a crop are left out)."""
    from skimage.measure import regionprops

    masks, boxes = [], []
    for region in regionprops(labels.astype(np.int64)):
        if region.area < min_area:
            continue
        y0, x0, y1, x1 = region.bbox
        masks.append(labels == region.label)
        boxes.append((x0, y0, x1, y1))
    shape = labels.shape
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks) if masks else np.zeros((0, *shape), bool)).to(torch.uint8),
    }


def labels_from_targets(target: dict[str, torch.Tensor]) -> np.ndarray:
    """The ``(Y, X)`` label image (objects numbered 1..N in target order) of Mask R-CNN targets: the
    inverse of :func:`targets_from_labels`."""
    masks = target["masks"].numpy().astype(bool)
    labels = np.zeros(masks.shape[1:], np.int64)
    for k, mask in enumerate(masks, start=1):
        labels[mask] = k
    return labels


def build_maskrcnn(**spec: object) -> InstanceMaskRCNN:
    """An :class:`InstanceMaskRCNN` in evaluation mode from the fields of :class:`MaskRCNNSpec`: the
    architecture entry point named in bioimage.io packages (plain JSON keyword arguments)."""
    return InstanceMaskRCNN(MaskRCNNSpec(**spec)).eval()  # type: ignore[arg-type]
