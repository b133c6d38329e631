"""ONNX Runtime sessions: CPU threads from --threads / $IDL_THREADS, and the provider used is said."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from idl.cli import predict as predict_cli
from idl.infer.core.errors import ModelError
from idl.infer.io.images import write_tiff
from idl.infer.runtime import session as session_module
from idl.infer.runtime.session import OnnxRunner, choose_providers

from .conftest import smoothing_net


def test_threads_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smoothing_net(tmp_path / "net.onnx")
    monkeypatch.setenv("IDL_THREADS", "1")
    one = OnnxRunner(tmp_path / "net.onnx", "cpu")
    assert one.session.get_session_options().intra_op_num_threads == 1
    assert one.provider == "CPUExecutionProvider"
    monkeypatch.delenv("IDL_THREADS")
    assert OnnxRunner(tmp_path / "net.onnx", "cpu").session.get_session_options().intra_op_num_threads == 0
    monkeypatch.setenv("IDL_THREADS", "two")
    with pytest.raises(ModelError, match="IDL_THREADS='two': give a whole number of threads"):
        OnnxRunner(tmp_path / "net.onnx", "cpu")


def test_providers_cuda_first_cpu_as_fallback() -> None:
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", gpu) == gpu and choose_providers("cuda", gpu) == gpu
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers("cpu", gpu) == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match=r"no CUDA provider.*idl-toolkit\[gpu\]"):
        choose_providers("cuda", ["CPUExecutionProvider"])


def test_idl_predict_says_which_provider_and_threads_ran_it(
    small_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDL_THREADS", "")  # restored after --threads sets it
    monkeypatch.setattr(session_module, "_reported", set())
    image = tmp_path / "cells.tif"
    write_tiff(image, np.random.default_rng(0).random((40, 56)).astype(np.float32))
    args = [str(small_package), str(image), "--out", str(tmp_path / "o"), "--threads", "1"]
    result = CliRunner().invoke(predict_cli.main, args)
    assert result.exit_code == 0, result.output
    assert "ONNX Runtime runs the model on CPUExecutionProvider (1 threads)" in result.output
