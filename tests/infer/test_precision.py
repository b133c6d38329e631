"""``--precision``: which graph of an idl model runs (float32 or its int8 twin), and the errors that
say why an int8 graph cannot run. No torch: the models are written with onnx.helper."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from idl.cli import predict as predict_cli
from idl.infer.core.errors import ModelError
from idl.infer.runtime import precision
from idl.infer.runtime.model import read_info
from idl.infer.runtime.precision import (
    choose_graphs,
    choose_precision,
    cpu_flags,
    describe_quantized,
    fast_int8,
    int8_path_for,
)
from idl.infer.runtime.session import OnnxRunner
from idl.infer.service.load import load_model

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\nbogomips\t: 4000\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd aes asimddp\nCPU part\t: 0xd0c\n"
OLD_X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n"
REFUSED = {
    "scheme": "QDQ",
    "calibration": "16 training patches of 64 x 64 px",
    "deterministic": {
        "file": "model_int8.onnx",
        "kept": False,
        "measure": "fraction of mask pixels differing",
        "value": 0.0123,
        "limit": 0.001,
        "images": 3,
    },
}


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo() -> None:
    assert {"avx512_vnni", "avx2"} <= cpu_flags(X86)
    assert "asimddp" in cpu_flags(ARM)
    assert fast_int8(cpu_flags(X86)) and fast_int8(cpu_flags(ARM))
    assert not fast_int8(cpu_flags(OLD_X86)) and not fast_int8(cpu_flags(""))
    assert fast_int8({"amx_int8"}) and fast_int8({"avx_vnni"}) and fast_int8({"i8mm"})


def test_auto_picks_int8_only_with_an_int8_graph_on_a_cpu_with_fast_int8() -> None:
    vnni = cpu_flags(X86)
    assert choose_precision("auto", True, True, vnni) == "int8"
    assert choose_precision("auto", True, True, cpu_flags(OLD_X86)) == "fp32"  # no VNNI
    assert choose_precision("auto", False, True, vnni) == "fp32"  # no int8 graph
    assert choose_precision("auto", True, False, vnni) == "fp32"  # a GPU runs it
    assert choose_precision("fp32", True, True, vnni) == "fp32"
    assert choose_precision("int8", False, True, frozenset()) == "int8"  # asked for: checked later
    with pytest.raises(ModelError, match="unknown precision 'fp16'; use one of auto, fp32, int8"):
        choose_precision("fp16", True, True, vnni)


def _model(made: Path, where: Path, int8: bool, quantized: dict | None = None) -> Path:
    """A copy at ``where`` of the binary semantic model folder ``made`` (float32 and Monte Carlo
    graph) with, when ``int8``, a graph standing in for its int8 twin (the float32 graph under the
    int8 name: which file runs is what is tested here; export/quantize.py's tests run real int8
    graphs) and ``quantized`` as its record."""
    folder = Path(shutil.copytree(made, where))
    if quantized is not None:
        from idl.export.metadata import write_metadata

        info = replace(read_info(OnnxRunner(folder / "model.onnx", "cpu")), quantized=quantized)
        for name in ("model.onnx", "model_mc.onnx"):
            write_metadata(folder / name, info)
    if int8:
        shutil.copyfile(folder / "model.onnx", folder / "model_int8.onnx")
    return folder


@pytest.fixture
def semantic(volume_model) -> Path:  # noqa: ANN001 (the fixture's factory)
    """A binary semantic model folder of 2D images (tests/infer/conftest.py, onnx.helper)."""
    return volume_model("semantic", 2)


def test_fp32_always_runs_the_float32_graphs(tmp_path: Path, semantic: Path) -> None:
    folder = _model(semantic, tmp_path / "m", int8=True)
    model = load_model(folder, "cpu", precision="fp32")
    assert (model.weights, model.mc_weights, model.precision) == (
        folder / "model.onnx",
        folder / "model_mc.onnx",
        "fp32",
    )
    assert (
        load_model(_model(semantic, tmp_path / "plain", int8=False), "cpu", precision="fp32").precision
        == "fp32"
    )


def test_int8_runs_the_int8_graph_and_samples_from_the_float32_one_without_an_int8_twin(
    tmp_path: Path, semantic: Path
) -> None:
    folder = _model(semantic, tmp_path / "m", int8=True)
    model = load_model(folder, "cpu", precision="int8")
    assert (model.weights, model.precision, model.label) == (
        folder / "model_int8.onnx",
        "int8",
        str(folder / "model_int8.onnx"),
    )
    assert model.mc_weights == folder / "model_mc.onnx"  # no model_int8_mc.onnx beside it
    assert "Monte Carlo samples from the float32 graph" in model.precision_note
    shutil.copyfile(folder / "model_mc.onnx", folder / "model_int8_mc.onnx")
    assert load_model(folder, "cpu", precision="int8").mc_weights == folder / "model_int8_mc.onnx"


def test_auto_follows_the_cpu_flags(tmp_path: Path, semantic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _model(semantic, tmp_path / "m", int8=True)
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags(X86))
    model = load_model(folder, "cpu", precision="auto")
    assert model.weights == folder / "model_int8.onnx"
    assert "avx512_vnni" in model.precision_note
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags(OLD_X86))
    model = load_model(folder, "cpu", precision="auto")
    assert (model.weights, model.precision) == (folder / "model.onnx", "fp32")
    assert "no fast int8 instructions" in model.precision_note
    (folder / "model_int8.onnx").unlink()
    monkeypatch.setattr(precision, "cpu_flags", lambda: cpu_flags(X86))
    model = load_model(folder, "cpu", precision="auto")
    assert (model.weights, model.precision_note) == (folder / "model.onnx", "auto: no int8 graph")


def test_int8_without_an_int8_graph_says_which_file_why_and_what_to_do(
    tmp_path: Path, semantic: Path
) -> None:
    folder = _model(semantic, tmp_path / "m", int8=False)
    with pytest.raises(ModelError) as never_written:
        load_model(folder, "cpu", precision="int8")
    text = str(never_written.value)
    assert f"{folder / 'model_int8.onnx'}: no int8 graph" in text
    assert "none was written" in text and "idl-export" in text and "--precision fp32" in text
    refused = _model(semantic, tmp_path / "refused", int8=False, quantized=REFUSED)
    with pytest.raises(ModelError) as at_export:
        load_model(refused, "cpu", precision="int8")
    text = str(at_export.value)
    assert "refused at export" in text and "fraction of mask pixels differing 0.0123 (limit 0.001)" in text
    assert "on 3 validation image(s)" in text and "--precision fp32" in text
    skipped = _model(
        semantic, tmp_path / "skipped", int8=False, quantized={"skipped": "no validation images"}
    )
    with pytest.raises(ModelError, match="none was written: no validation images"):
        load_model(skipped, "cpu", precision="int8")


def test_int8_is_refused_for_packages_for_the_gpu_and_fp32_for_an_int8_file(
    tmp_path: Path, semantic: Path, small_package: Path
) -> None:
    with pytest.raises(ModelError, match="a bioimage.io package has no int8 graph") as package:
        load_model(small_package, "cpu", precision="int8")
    assert str(small_package) in str(package.value) and "--precision fp32" in str(package.value)
    assert load_model(small_package, "cpu", precision="auto").precision == "fp32"
    folder = _model(semantic, tmp_path / "m", int8=True)
    with pytest.raises(ModelError, match="int8 graphs are made for CPUs; use --device cpu"):
        choose_graphs(folder / "model.onnx", None, None, {}, "int8", "cuda", cpu_flags(X86))
    with pytest.raises(ModelError, match="this is the int8 graph of an idl model") as given:
        load_model(folder / "model_int8.onnx", "cpu", precision="fp32")
    assert str(folder / "model.onnx") in str(given.value)
    assert (
        load_model(folder / "model_int8.onnx", "cpu", precision="int8").weights == folder / "model_int8.onnx"
    )


def test_info_shows_the_precision_and_the_agreement_measured_at_export(
    tmp_path: Path, semantic: Path
) -> None:
    folder = _model(semantic, tmp_path / "m", int8=False, quantized=REFUSED)
    result = CliRunner().invoke(predict_cli.main, [str(folder), "--info", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "precision: float32, model.onnx" in result.output
    assert (
        "int8 graph: refused at export: fraction of mask pixels differing 0.0123 (limit 0.001) on 3 "
        "validation image(s)" in result.output
    )
    result = CliRunner().invoke(predict_cli.main, [str(folder), "--info", "--precision", "int8"])
    assert result.exit_code != 0 and "model_int8.onnx: no int8 graph" in result.output
    result = CliRunner().invoke(predict_cli.main, [str(folder), "--info", "--precision", "fp16"])
    assert result.exit_code == 2 and "'fp16' is not one of 'auto', 'fp32', 'int8'" in result.output
    assert describe_quantized({}) == ["int8 graph: none (exported without; idl-export writes one)"]
    assert int8_path_for(Path("a/model.onnx")) == Path("a/model_int8.onnx")
