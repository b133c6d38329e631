"""idl-predict must run where torch is not installed: block the import and run it end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from idl.infer.io.images import read_image

SCRIPT = textwrap.dedent(
    """
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("torch import was not blocked")

    import idl.infer
    import idl.infer.service.run, idl.infer.tasks, idl.infer.service.load  # noqa: E401
    import idl.infer.tiling.predict  # noqa: F401
    import idl.cli.evaluate  # noqa: F401
    from idl.cli.predict import main

    main(sys.argv[1:], standalone_mode=True)
    """
)


def test_predict_end_to_end_with_torch_blocked(model_dir: Path, tmp_path: Path) -> None:
    project = model_dir.parent
    out = tmp_path / "pred"
    args = [
        str(model_dir),
        str(project / "test" / "image"),
        "--out",
        str(out),
        "--mc-samples",
        "3",
        "--gt",
        str(project / "test" / "groundtruth"),
        "--quiet",
    ]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (project / "test" / "image").iterdir())
    assert sorted(p.name for p in out.glob("*.tif")) == names
    mask = read_image(out / names[0])
    assert mask.dtype == np.uint8 and mask.shape == (96, 96)
    assert read_image(out / "uncertainty" / names[0]).dtype == np.float32
    assert (out / "evaluation" / "summary.json").is_file() and (out / "evaluation" / "report.html").is_file()


def test_package_prediction_with_torch_blocked(model_dir: Path, tmp_path: Path) -> None:
    """The bioimage.io path (bioimageio.spec, our package with its MC attachment) needs no torch either."""
    package = next(model_dir.glob("*.bioimageio.zip"))
    image = next((model_dir.parent / "test" / "image").iterdir())
    out = tmp_path / "pkg"
    args = [str(package), str(image), "--out", str(out), "--mc-samples", "2", "--quiet"]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert read_image(out / f"{image.stem}.tif").shape == (96, 96)
    assert read_image(out / "uncertainty" / f"{image.stem}.tif").max() > 0


def test_classification_package_with_torch_blocked(classified_project: Path, tmp_path: Path) -> None:
    package = classified_project / "model" / f"{classified_project.name}-resnet18.bioimageio.zip"
    out = tmp_path / "classes"
    args = [str(package), str(classified_project / "test" / "image"), "--out", str(out), "--mc-samples", "4"]
    args += ["--gt", str(classified_project / "test" / "groundtruth" / "groundtruth.csv"), "--quiet"]
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out / "results.csv")
    assert len(table) == 15 and table["uncertainty"].between(0, 1).all()
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["accuracy"] == pytest.approx((table["prediction"] == table["groundtruth"]).mean())
    assert "accuracy" in proc.stdout and "uncertainty AUROC" in proc.stdout
