"""Our packages run where idl is not installed: bioimageio.core's ``test_model`` passes for the onnx,
torchscript and pytorch_state_dict weights in a separate environment with torch, ONNX Runtime and
bioimageio.core but no idl (``.venv-zoo``, built by ``.ci/run``).

Outside CI the environment may be missing; the test then skips and says how to build it. ``.ci/run``
sets ``IDL_ZOO_PYTHON``, and with it set a missing environment fails the test instead."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("without_idl.py")
BUILD = (
    "python3 -m venv .venv-zoo && .venv-zoo/bin/python -m pip install torch torchvision "
    '"bioimageio.core>=0.9" onnxruntime "pydantic<2.14"'
)


@pytest.fixture(scope="session")
def zoo_python() -> Path:
    """The Python of the environment without idl; skip (or, under .ci/run, fail) without it, before
    the package is exported."""
    configured = os.environ.get("IDL_ZOO_PYTHON")
    python = Path(configured) if configured else REPO / ".venv-zoo" / "bin" / "python"
    if python.is_file():
        return python
    if configured:
        pytest.fail(f"IDL_ZOO_PYTHON={configured} does not exist; .ci/run builds it ({BUILD})")
    pytest.skip(f"no environment without idl at {python.parent.parent}; build it with: {BUILD}")


@pytest.mark.slow  # exports a package (about 8 s) and runs test_model three times in another Python
def test_every_weight_format_passes_test_model_without_idl(
    zoo_python: Path, fresh_package, tmp_path: Path
) -> None:
    python = zoo_python
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    no_idl = subprocess.run(
        [str(python), "-c", "import idl"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert no_idl.returncode != 0 and "No module named 'idl'" in no_idl.stderr
    run = subprocess.run(
        [str(python), str(SCRIPT), str(fresh_package.path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    formats = report["formats"]
    assert set(formats) == {"onnx", "pytorch_state_dict", "torchscript"}
    for fmt, result in formats.items():
        assert result["status"] == "passed", result["failures"]
        assert f"Reproduce test outputs from test inputs ({fmt})" in result["tests"]
        sizes = [
            t for t in result["tests"] if t.startswith(f"Run {fmt} inference for inputs with batch_size")
        ]
        assert len(sizes) == 6, result["tests"]  # three tile sizes, batches of 1 and 2
        assert result["max_abs_diff_vs_onnx"] <= 1e-4, (fmt, result["max_abs_diff_vs_onnx"])
    print(
        "without idl ({}): test_model passed for {}; largest difference from ONNX: {}".format(
            ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
            ", ".join(formats),
            ", ".join(f"{k} {v['max_abs_diff_vs_onnx']:.2g}" for k, v in formats.items() if k != "onnx"),
        )
    )
