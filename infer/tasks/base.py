"""The inference side of a task: how its models' outputs are written, described and evaluated.

A :class:`Task` serves one *kind* of model (``ModelInfo.kind``: ``semantic``, ``instance`` and
``detection`` for the two instance networks, ``regression``, ``classification``) or, for a bioimage.io
package made elsewhere, its output as it is. The command-line tools and training never branch on the
task: they look the task up (:mod:`idl.infer.tasks.registry`) and call it. Adding a task means a
subclass here, its counterpart on the training side and one ``register`` call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from idl.infer.core.grid import AxisSize
from idl.infer.core.model_info import ModelInfo
from idl.infer.evaluate.agreement import Agreement
from idl.infer.runtime.iospec import IOSpec, activation, image_io
from idl.infer.runtime.model import LoadedModel
from idl.infer.tiling.predict import AS_IT_IS, Outputs, PredictOptions, predict_image
from idl.infer.tiling.volume import BlockRunner

Summary = dict[str, float | int]


@dataclass(frozen=True)
class Request:
    """One prediction run: ``files`` through ``model`` into ``out_dir``, evaluated against
    ``groundtruth`` when it is given: a folder (or, for classification, ``groundtruth.csv`` or the
    folder holding it), or each image's ground truth already matched (image name without suffix ->
    ground-truth file, or class label)."""

    model: LoadedModel
    files: Sequence[Path]
    out_dir: Path
    options: PredictOptions = PredictOptions()
    axes: str | None = None
    save_probabilities: bool = False
    groundtruth: Path | Mapping[str, Any] | None = None
    evaluation_dir: Path | None = None  # None: out_dir / "evaluation"
    # multi-input networks: each input tensor's files (--input NAME=PATH), matched by image name
    named_inputs: Mapping[str, Sequence[Path]] | None = None
    # where the blocks of one volume written to OME-Zarr are predicted (--dask); None: here
    blocks: BlockRunner | None = None

    @property
    def evaluation(self) -> Path:
        return self.evaluation_dir or self.out_dir / "evaluation"


@dataclass(frozen=True)
class Folders:
    """What ``idl-evaluate`` gets: predictions written earlier (by any tool), the ground truth (a
    folder, or classification's ``groundtruth.csv``), where the evaluation goes, and the images for
    its figures."""

    predictions: Path
    groundtruth: Path
    out_dir: Path
    images: Path | None = None
    num_classes: int | None = None
    axes: str | None = None
    dims: int = 2
    progress: bool = True
    threshold: str | float = "otsu"  # probability maps given as predictions: thresholded as idl-predict does
    on_nonfinite: str = "replace"  # NaN/inf in predictions: left out of the scores, or "error"
    strict: bool = False  # ground truth without a prediction: an error instead of a warning


UNET_CITATION = (
    "Ronneberger, O., Fischer, P. & Brox, T. U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation. MICCAI 2015.",
    "10.1007/978-3-319-24574-4_28",
)
SEGNET_CITATION = (
    "Badrinarayanan, V., Kendall, A. & Cipolla, R. SegNet: A Deep Convolutional Encoder-Decoder "
    "Architecture for Image Segmentation. IEEE TPAMI 39, 2481-2495 (2017).",
    "10.1109/TPAMI.2016.2644615",
)
RESNET_CITATION = (
    "He, K., Zhang, X., Ren, S. & Sun, J. Deep Residual Learning for Image Recognition. CVPR 2016.",
    "10.1109/CVPR.2016.90",
)
MASK_RCNN_CITATION = (
    "He, K., Gkioxari, G., Dollar, P. & Girshick, R. Mask R-CNN. ICCV 2017.",
    "10.1109/ICCV.2017.322",
)
STARDIST_CITATION = (
    "Schmidt, U., Weigert, M., Broaddus, C. & Myers, G. Cell Detection with Star-Convex Polygons. "
    "MICCAI 2018.",
    "10.1007/978-3-030-00934-2_30",
)
CELLPOSE_CITATION = (
    "Stringer, C., Wang, T., Michaelos, M. & Pachitariu, M. Cellpose: a generalist algorithm for "
    "cellular segmentation. Nature Methods 18, 100-106 (2021).",
    "10.1038/s41592-020-01018-x",
)


@dataclass(frozen=True)
class PackageText:
    """How a bioimage.io package describes a model of the task: the words of its description and
    README, its tags, and its output tensor (the tensor's post-processing is the task's
    :meth:`Task.io_spec`)."""

    title: str  # what the model does, e.g. "semantic segmentation"
    network: str  # e.g. "2D U-Net"
    tags: tuple[str, ...]
    tensor: str  # the output tensor's id
    output: str  # the output tensor's description
    channels: tuple[str, ...]  # the output's channel names
    value_range: tuple[float | None, float | None]
    use: str  # README: what the output is
    targets: str  # README: what the model was trained to output
    inputs: str  # README: what it was trained on
    uncertainty: str = "a per-pixel uncertainty map"  # README: what --mc-samples adds
    mismatch_ppm: int | None = None  # elements per million that may differ between weight formats
    # the inference side's post-processing of the output, for the package's config (idl: postprocessing)
    postprocessing: dict[str, Any] | None = None
    citations: tuple[tuple[str, str], ...] = (UNET_CITATION,)  # the network's papers: (text, DOI)


def extras(summary: Summary) -> str:
    """What every task's headline ends with: atypical inputs and the mean uncertainty, when known."""
    line = ""
    if "atypical_fraction" in summary:
        line += f", atypical inputs {100 * summary['atypical_fraction']:.0f}%"
    if "uncertainty_mean" in summary:
        line += f", mean uncertainty {summary['uncertainty_mean']:.4g}"
    return line


class Task:
    """What one kind of model does on the inference side. Subclasses set ``kind`` and ``task`` and
    override what differs; :meth:`predict` and :meth:`evaluate` have no default."""

    kind: ClassVar[str] = ""  # the ModelInfo.kind it serves
    task: ClassVar[str] = ""  # the task users name with --task (several kinds may share one)
    evaluates: ClassVar[bool] = True  # False: nothing to evaluate by (a package made elsewhere)

    def out_channels(self, info: ModelInfo) -> int:
        """Channels of the graph's output: one sigmoid channel for two classes, else one per class."""
        return 1 if info.num_classes == 2 else info.num_classes

    def io_spec(self, info: ModelInfo) -> IOSpec:
        """How to feed the network and read its output (default: image in, class probabilities out)."""
        k = self.out_channels(info)
        return image_io(info, k, activation(info, k), "probability")

    def outputs(self, info: ModelInfo) -> Outputs:
        """What the tiled runner makes of the network's output (default: the output as it is)."""
        return AS_IT_IS

    def mc_missing(self, info: ModelInfo, mc: Path) -> str:
        """Why a model folder has no Monte Carlo graph."""
        return f"expected {mc.name} next to it; re-export the model with idl-export"

    def describe(self, info: ModelInfo) -> list[str]:
        """Lines for ``idl-predict --info`` about the task and what prediction writes."""
        return [f"task: {info.task}, {info.num_classes} classes, {info.dims}D, trained on axes {info.axes}"]

    def agreement(self, info: ModelInfo) -> Agreement | None:
        """How the answers of an int8 graph must agree with the float32 graph's for it to be kept
        (:mod:`idl.infer.evaluate.agreement`, :mod:`idl.export.quantize`); None (the default): the
        task's graphs are not quantized."""
        return None

    def answers(
        self, model: LoadedModel, images: Sequence[np.ndarray], options: PredictOptions
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """What idl-predict answers for each of ``images`` (normalized, channels-last), as
        :meth:`agreement` compares them: the mask, labels or values of the tiled prediction, and its
        uncertainty map (empty without Monte Carlo samples)."""
        found, spreads = [], []
        for image in images:
            prediction = predict_image(model, image, options)
            found.append(prediction.mask if prediction.mask is not None else prediction.probabilities)
            spreads.append(prediction.uncertainty if prediction.uncertainty is not None else np.zeros(0))
        return found, spreads

    def package_text(self, info: ModelInfo) -> PackageText:
        """How a bioimage.io package of the model describes it."""
        raise NotImplementedError

    def package_sizes(self, info: ModelInfo) -> list[AxisSize]:
        """The input sizes a package declares per space axis."""
        raise NotImplementedError

    def package_test(
        self, sample: np.ndarray, info: ModelInfo, onnx_path: Path
    ) -> tuple[np.ndarray, np.ndarray]:
        """The package's test input (channels-last, from the raw ``sample``) and the model's
        post-processed output on it (with a batch axis), computed by the ONNX graph."""
        raise NotImplementedError

    def package_cover(self, image: np.ndarray, output: np.ndarray, info: ModelInfo, path: Path) -> Path:
        """The package's cover image from its test input and output (without the batch axis)."""
        raise NotImplementedError

    demo: ClassVar[str] = ""  # what idl-demo writes for the task (empty: no demo)

    def write_demo(self, project: Path, n_train: int, n_test: int, seed: int, size: int) -> str:
        """Write a synthetic ``project`` for ``idl-demo``; returns what a classical baseline scores on
        its test images."""
        raise NotImplementedError

    def split(self, folder: Path) -> tuple[list[Path], dict[str, Any] | None]:
        """The images of a project split (``PROJECT/test``) and their ground truth by image name, or
        ``None`` when some image has none."""
        raise NotImplementedError

    def groundtruth_folder(self, folder: Path) -> Path:
        """Where a project split keeps its ground truth, as :meth:`evaluate_folder` takes it."""
        return folder / "groundtruth"

    def check(self, request: Request) -> None:
        """Fail before predicting when the ground truth cannot be matched to the images."""

    def predict(self, request: Request) -> Path:
        """Predict ``request.files`` and write the task's outputs into ``request.out_dir``; returns
        the folder or file the evaluation reads."""
        raise NotImplementedError

    def done(self, request: Request, predictions: Path) -> str:
        """What the command line prints after :meth:`predict`."""
        return f"the predictions of {len(request.files)} file(s) written to {request.out_dir}"

    def headline(self, summary: Summary) -> str:
        """One line with the evaluation's headline scores."""
        scores = [f"{k} {v:.4g}" for k, v in summary.items() if isinstance(v, float)]
        return ", ".join(scores[:4]) + extras(summary)

    def evaluate(self, request: Request, predictions: Path) -> Summary:
        """Evaluate what :meth:`predict` wrote (``predictions``) against ``request.groundtruth``;
        writes ``metrics.csv``, ``summary.json``, figures and ``report.html`` into
        ``request.evaluation`` and returns the summary."""
        raise NotImplementedError

    def evaluate_folder(self, folders: Folders) -> Summary:
        """``idl-evaluate``: predictions written earlier (any tool) against ground truth."""
        raise NotImplementedError
