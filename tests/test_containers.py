"""The container files, without a Docker engine: each Dockerfile's install steps run in a clean virtual
environment (from a copy of exactly what the Dockerfile copies), the inference image holds no torch
and stays small, and the compose file wires the trainer to the tracking server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from idl.infer.io.images import write_tiff

from .infer.conftest import small_package  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]
# python:3.11-slim unpacked (Docker Hub: about 125 MB); the inference image must stay under 800 MB
SLIM_BASE_MB = 150
INFER_IMAGE_MB = 800


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            steps.append((word.upper(), rest.strip()))
    return steps


def _build_in_venv(dockerfile: Path, tmp_path: Path, compile_bytecode: bool = True) -> Path:
    """Copy what the COPY steps copy, then run the RUN steps that install and check (pip, python) with
    a fresh virtual environment first on PATH; system steps (apt-get, useradd) are the base image's.
    Without ``compile_bytecode`` pip leaves out the ``.pyc`` files (the image has them): for an
    install whose size is not measured, byte-compiling torch is 50 s of its 118 s and tests nothing."""
    context, venv = tmp_path / "context", tmp_path / "venv"
    context.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    env.pop("PIP_COMPILE", None)  # .ci/run's setting: what the image holds is built here
    if not compile_bytecode:
        env["PIP_COMPILE"] = "false"  # pip's --no-compile
    for instruction, args in _instructions(dockerfile):
        if instruction == "ARG":  # the build's defaults
            name, _, default = args.partition("=")
            env[name] = default.strip('"')
        elif instruction == "COPY":
            *sources, _ = args.split()
            for source in sources:
                target = context / source
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(ROOT / source, target)
        elif instruction == "RUN" and args.split()[0] in ("pip", "python"):
            done = subprocess.run(["bash", "-c", args], cwd=context, env=env, capture_output=True, text=True)
            assert done.returncode == 0, (
                f"{dockerfile.name}: RUN {args}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
    return venv


def _megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def _runs_as_user_with_entrypoint(dockerfile: Path, command: str) -> None:
    steps = _instructions(dockerfile)
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert json.loads(dict(steps)["ENTRYPOINT"]) == [command]


@pytest.mark.containers
@pytest.mark.slow  # installs idl's inference side into a fresh environment (about a minute)
def test_inference_image_installs_without_torch_and_stays_small(small_package: Path, tmp_path: Path) -> None:  # noqa: F811
    dockerfile = ROOT / "Dockerfile.infer"
    _runs_as_user_with_entrypoint(dockerfile, "idl-predict")
    venv = _build_in_venv(dockerfile, tmp_path)
    python = venv / "bin" / "python"
    check = (
        "import importlib.util as u; print([m for m in ('torch', 'torchvision', 'mlflow') if u.find_spec(m)])"
    )
    found = subprocess.run([str(python), "-c", check], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]"  # the base install: no torch (and no registry client)
    # it predicts with the libraries' own test suites removed
    write_tiff(tmp_path / "in" / "cells.tif", np.random.default_rng(0).random((40, 56)).astype(np.float32))
    command = [str(venv / "bin" / "idl-predict"), str(small_package), str(tmp_path / "in")]
    done = subprocess.run([*command, "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "cells.tif").is_file()
    size = _megabytes(venv)
    print(f"inference environment {size:.0f} MB + base image {SLIM_BASE_MB} MB")
    assert size + SLIM_BASE_MB < INFER_IMAGE_MB


@pytest.mark.containers
@pytest.mark.slow  # installs torch and idl's training side into a fresh environment (minutes)
def test_training_image_installs_idl_train(tmp_path: Path) -> None:
    dockerfile = ROOT / "Dockerfile.train"
    _runs_as_user_with_entrypoint(dockerfile, "idl-train")
    assert _instructions(dockerfile)[0][1].startswith("nvidia/cuda:")
    venv = _build_in_venv(dockerfile, tmp_path, compile_bytecode=False)
    help_text = subprocess.run([str(venv / "bin" / "idl-train"), "--help"], capture_output=True, text=True)
    assert help_text.returncode == 0 and "--amp" in help_text.stdout


def test_compose_starts_the_tracking_server_with_a_trainer() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    server = services["mlflow"]
    assert "mlflow server" in server["command"] and "--port 5000" in server["command"]
    assert "sqlite:///" in server["command"] and "5000:5000" in server["ports"]
    for name, dockerfile in (("trainer", "Dockerfile.train"), ("predict", "Dockerfile.infer")):
        service = services[name]
        assert (ROOT / service["build"]["dockerfile"]).name == dockerfile and (ROOT / dockerfile).is_file()
        assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert service["depends_on"]["mlflow"]["condition"] == "service_healthy"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv*", ".git", "tests", "mlflow", "data"} <= set(ignored)


def test_every_sub_package_is_installed() -> None:
    """A non-editable install (the containers') holds only the packages pyproject.toml lists: a
    sub-package missing there works in a checkout and fails in the image."""
    import tomllib

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {v: k for k, v in settings["package-dir"].items()}
    found = {
        ".".join([folders[init.relative_to(ROOT).parts[0]], *init.relative_to(ROOT).parts[1:-1]])
        for folder in folders
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert found == set(settings["packages"])
