"""Image classification on the inference side: one row per image in ``results.csv`` (class
probabilities, Monte Carlo uncertainty, atypicality), evaluated by accuracy, balanced accuracy and the
confusion matrix against ``groundtruth.csv``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.errors import ConfigError, DataError
from idl.infer.core.grid import AxisSize
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import SPACE, ScaleRange, Softmax, apply_ops
from idl.infer.evaluate.agreement import CLASS_LIMIT, Agreement, class_disagreement
from idl.infer.io.omezarr import image_stem
from idl.infer.post.classes import label_csv_for, labelled_images, read_labels
from idl.infer.post.classify import class_names_for, prepare_image, resize_to
from idl.infer.runtime.iospec import IOSpec
from idl.infer.runtime.model import LoadedModel
from idl.infer.runtime.session import OnnxRunner
from idl.infer.tasks.base import RESNET_CITATION, Folders, PackageText, Request, Summary, Task, extras
from idl.infer.tasks.registry import register
from idl.infer.tiling.classify import Classify, classify_batch, predict_classes
from idl.infer.tiling.predict import PredictOptions
from idl.infer.tiling.tta import TTA_CHOICES


class Classification(Task):
    kind = "classification"
    task = "classification"
    demo = "single nuclei, round, elongated or dividing (32 x 32 px)"

    def write_demo(self, project: Path, n_train: int, n_test: int, seed: int, size: int) -> str:
        from idl.infer.datasets.synthetic import write_classification_project

        write_classification_project(project, n_train, n_test, seed, size=min(size, 64))
        return "always answering the most common class scores accuracy 0.33 (3 balanced classes)"

    def headline(self, summary: Summary) -> str:
        line = (
            f"accuracy {summary['accuracy']:.4f}, AUC {summary['auc']:.4f}, Jaccard {summary['jaccard']:.4f}"
        )
        if "uncertainty_auroc" in summary:
            line += (
                f", MC accuracy {summary['accuracy_mc']:.4f}, uncertainty AUROC wrong vs right "
                f"{summary['uncertainty_auroc']:.3f}"
            )
        return line + extras(summary)

    def out_channels(self, info: ModelInfo) -> int:
        return info.num_classes  # softmax over all classes, also for two

    def agreement(self, info: ModelInfo) -> Agreement:
        return Agreement("fraction of images given another class", CLASS_LIMIT, class_disagreement)

    def answers(
        self, model: LoadedModel, images: Sequence[np.ndarray], options: PredictOptions
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The class of each network input ``(C, H, W)`` (resized and normalized) as idl-predict
        finds it (:func:`~idl.infer.tiling.classify.classify_batch`): from the deterministic graph,
        or with ``options.mc_samples`` from the samples' mean (drawn from ``options.seed``), with
        its uncertainty (the entropy of that mean)."""
        samples = options.mc_samples
        if samples:
            model.reseed(options.seed)
        scores = classify_batch(model, np.stack(images), samples)
        if not samples:
            return list(np.argmax(scores.probabilities, axis=1)), [np.zeros(0)] * len(images)
        assert scores.mc_probabilities is not None and scores.uncertainty is not None
        return list(np.argmax(scores.mc_probabilities, axis=1)), list(np.asarray(scores.uncertainty))

    def io_spec(self, info: ModelInfo) -> IOSpec:
        """One image of the fixed input size in, one value per class out (axes ``bc``)."""
        spatial = SPACE[-info.dims :]
        norm = info.normalization
        return IOSpec(
            input_axes="bc" + spatial,
            output_axes="bc",
            in_channels=info.in_channels,
            out_channels=info.num_classes,
            sizes={a: AxisSize(n, 0) for a, n in zip(spatial, info.input_size, strict=True)},
            preprocessing=(ScaleRange(spatial, norm.low, norm.high, norm.eps),),
            postprocessing=(Softmax("c"),) if info.output == "logits" else (),
        )

    def describe(self, info: ModelInfo) -> list[str]:
        lines = [
            f"task: classification, {info.num_classes} classes ({', '.join(info.class_names)}); images are "
            f"resized to {' x '.join(map(str, info.input_size))} px; trained on axes {info.axes}",
            "  writes results.csv: filename, prediction, probability_<class>... (+ MC columns)",
        ]
        if info.input_reference:
            lines.append(
                "  input check: atypicality against the training images' statistics (<= ~1: typical)"
            )
        return lines

    def package_text(self, info: ModelInfo) -> PackageText:
        training = info.training
        network = str(training.get("architecture", "ResNet")).split(" ")[0].replace("resnet", "ResNet")
        return PackageText(
            title="image classification",
            network=network,
            tags=("resnet", "classification"),
            tensor="probabilities",
            output="class probabilities per image",
            channels=tuple(info.class_names) or tuple(f"class{i}" for i in range(info.num_classes)),
            value_range=(0.0, 1.0),
            use=f"class probabilities (softmax), one per class. Resize images to {list(info.input_size)} "
            "px first (idl-predict does this itself).",
            targets=f"- classes: {info.num_classes}"
            + (f" ({', '.join(info.class_names)})" if info.class_names else ""),
            inputs=f"- input size: {list(info.input_size)} px (images are resized to it), loss: "
            f"{training.get('loss', '?')}, images per class: {training.get('images_per_class', '?')}",
            uncertainty="an uncertainty in [0, 1] per image (normalized entropy of the mean distribution)",
            citations=(RESNET_CITATION,),
        )

    def package_sizes(self, info: ModelInfo) -> list[AxisSize]:
        return [AxisSize(n, 0) for n in info.input_size]  # the fixed input size

    def package_test(
        self, sample: np.ndarray, info: ModelInfo, onnx_path: Path
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sample at the input size (raw when it has that size, else resized as float32) and its
        class probabilities ``(1, K)``."""
        io = self.io_spec(info)
        image = sample if sample.shape[:-1] == tuple(info.input_size) else resize_to(sample, info.input_size)
        logits = OnnxRunner(onnx_path, "cpu")(prepare_image(image, io)[np.newaxis])
        return np.ascontiguousarray(image), apply_ops(io.postprocessing, logits, "bc").astype(np.float32)

    def package_cover(self, image: np.ndarray, output: np.ndarray, info: ModelInfo, path: Path) -> Path:
        from idl.infer.evaluate.covers import classes_cover

        return classes_cover(image, output, info.class_names, path)

    def _labels(self, request: Request) -> Mapping[str, str] | None:
        gt = request.groundtruth
        if gt is None or isinstance(gt, Mapping):
            return gt
        return read_labels(Path(gt))

    def split(self, folder: Path) -> tuple[list[Path], dict[str, Any] | None]:
        items = labelled_images(folder, require_labels=False)
        labels = {i.name: i.label for i in items if i.label is not None}
        return [i.image for i in items], labels if len(labels) == len(items) else None

    def groundtruth_folder(self, folder: Path) -> Path:
        return folder  # groundtruth.csv, or groundtruth/groundtruth.csv as InstantDL keeps it

    def check(self, request: Request) -> None:
        labels = self._labels(request)
        if labels is None:
            return
        missing = [f for f in request.files if image_stem(f) not in labels]
        if missing:
            source = (
                label_csv_for(Path(request.groundtruth))
                if isinstance(request.groundtruth, Path)
                else "ground truth"
            )
            raise DataError(
                f"{source}: no row for {missing[0].name} ({len(missing)} image(s) without one); add "
                "'file name,class' rows for every image."
            )

    def predict(self, request: Request) -> Path:
        labels = self._labels(request)
        options = request.options
        if request.blocks is not None:
            raise ConfigError(
                "--dask shares the blocks of one volume among workers; a classifier predicts whole images "
                "(use --shard I/N in separate --out folders to share many images among jobs)."
            )
        if options.tta in TTA_CHOICES:
            raise ConfigError(
                "--tta is for networks that output images: a mirrored or turned image may be another "
                "class (letters, polarity), so a classifier is not averaged over such copies; use "
                "--mc-samples for its uncertainty."
            )
        settings = Classify(
            options.mc_samples,
            request.axes,
            options.batch_size,
            options.on_nonfinite,
            options.uncertainty,
            seed=options.seed,
        )
        return predict_classes(
            request.model,
            list(request.files),
            request.out_dir,
            settings,
            dict(labels) if labels is not None else None,
            options.progress,
            options.overwrite,
            options.shard,
        )

    def done(self, request: Request, predictions: Path) -> str:
        return f"{len(request.files)} image(s) classified: {predictions}"

    def evaluate(self, request: Request, predictions: Path) -> Summary:
        labels = self._labels(request)
        assert labels is not None
        gt = request.groundtruth
        from idl.infer.evaluate.classification import evaluate_classification

        return evaluate_classification(
            predictions,
            dict(labels),
            class_names_for(request.model),
            request.evaluation,
            images={image_stem(f): f for f in request.files},
            axes=request.axes,
            labels_source=str(label_csv_for(gt)) if isinstance(gt, Path) else "groundtruth.csv",
        )

    def evaluate_folder(self, folders: Folders) -> Summary:
        from idl.infer.evaluate.classification import evaluate_results_folder

        f = folders
        return evaluate_results_folder(f.predictions, f.groundtruth, f.out_dir, f.images, f.axes, f.strict)


register(Classification())
