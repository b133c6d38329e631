"""Run inside an environment without idl (``.venv-zoo``): bioimageio.core's ``test_model`` for each
weight format of a package, and each format's network output on the test input against the ONNX
weights'. Prints one JSON object; exits non-zero if idl can be imported.

    python without_idl.py PACKAGE
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np


def raw_output(descr, weight_format: str) -> dict[str, np.ndarray]:
    """The network output before post-processing on the preprocessed test input."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample

    sample = get_test_input_sample(descr)
    with create_prediction_pipeline(descr, weight_format=weight_format) as pipeline:
        pipeline.apply_preprocessing(sample)
        got = pipeline.predict_sample_without_blocking(
            sample,
            skip_preprocessing=True,
            skip_postprocessing=True,
            skip_input_padding=True,
            skip_output_cropping=True,
        )
    return {str(m): np.array(t.data, np.float64) for m, t in got.members.items()}


def main(package: str) -> None:
    if importlib.util.find_spec("idl") is not None:
        sys.exit("idl is importable here: this check needs an environment without it")
    import bioimageio.core
    import onnxruntime
    import torch
    from bioimageio.core import load_model_description, test_model

    descr = load_model_description(package, perform_io_checks=False)
    formats = [f for f in ("onnx", "pytorch_state_dict", "torchscript") if getattr(descr.weights, f)]
    report = {
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "bioimageio.core": bioimageio.core.__version__,
        },
        "formats": {},
    }
    onnx = raw_output(descr, "onnx")
    for fmt in formats:
        summary = test_model(package, weight_format=fmt)
        raw = raw_output(descr, fmt)
        diff = max(float(np.max(np.abs(raw[m] - onnx[m]))) for m in onnx)
        report["formats"][fmt] = {
            "status": summary.status,
            "tests": [d.name for d in summary.details],
            "failures": "" if summary.status == "passed" else summary.format(),
            "max_abs_diff_vs_onnx": diff,
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
