"""The architecture file of a package's pytorch_state_dict weights: generated from idl's sources, it
imports nothing from idl and rebuilds the very network idl trained."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from idl.export.standalone import standalone_source
from idl.models import InstanceMaskRCNN, MaskRCNNSpec, ResNetClassifier, ResNetSpec, UNet, UNetSpec


def _imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
    return names


@pytest.mark.parametrize(
    ("net_class", "expected"),
    [
        (UNet, {"__future__", "collections", "copy", "dataclasses", "typing", "torch"}),
        (
            ResNetClassifier,
            {"__future__", "collections", "copy", "dataclasses", "typing", "torch", "torchvision"},
        ),
        (
            InstanceMaskRCNN,
            {
                "__future__",
                "collections",
                "copy",
                "dataclasses",
                "typing",
                "numpy",
                "torch",
                "torchvision",
                "skimage",
            },
        ),
    ],
)
def test_architecture_file_imports_nothing_from_idl(net_class, expected) -> None:
    source = standalone_source(net_class)
    assert _imports(source) == expected  # skimage: only inside Mask R-CNN's training-target helper
    assert "import idl" not in source and "from idl" not in source
    assert source.count("from __future__ import annotations") == 1
    # the idl.models modules a network needs come whole: its base classes (freezing, network) and
    # the Monte Carlo dropout the defaults of idl.models.network switch
    for module in ("dropout", "freezing", "network"):
        assert f"# ---- idl.models.{module} ----" in source
    assert "TYPE_CHECKING:" not in source  # imports for annotations alone are left out
    # one source of truth: the network's class is idl's, line for line
    assert inspect.getsource(net_class) in source


def _largest_difference(ours, theirs, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((ours(x) - theirs(x)).abs().max())


def test_standalone_unet_equals_idls_2d_and_3d(make_unet, load_without_idl, tmp_path: Path) -> None:
    module = load_without_idl(standalone_source(UNet), tmp_path / "unet.py")
    specs = [
        UNetSpec(in_channels=2, out_channels=3, depth=2, base_filters=4),
        UNetSpec(depth=2, base_filters=4, dims=3, anisotropic=True),
    ]
    for seed, spec in enumerate(specs):
        net, _ = make_unet(seed, spec)
        rebuilt = module.build_unet2d(**yaml.safe_load(yaml.safe_dump(asdict(spec))))  # as a package has it
        rebuilt.load_state_dict(net.state_dict())
        rebuilt.eval()
        assert type(rebuilt).__module__ == module.__name__  # not idl's class
        shape = (2, spec.in_channels, 20, 36) if spec.dims == 2 else (1, 1, 8, 20, 12)
        x = torch.rand(shape)  # not a size multiple: forward pads as idl's does
        assert _largest_difference(net, rebuilt, x) == 0.0
        aligned = torch.rand(1, spec.in_channels, *spec.multiples)
        assert _largest_difference(net.forward_aligned, rebuilt.forward_aligned, aligned) == 0.0


def test_standalone_resnet_equals_idls(load_without_idl, tmp_path: Path) -> None:
    module = load_without_idl(standalone_source(ResNetClassifier), tmp_path / "resnet.py")
    torch.manual_seed(1)
    net = ResNetClassifier(ResNetSpec(1, 3, "resnet18", small_input=True)).eval()
    rebuilt = module.build_resnet(in_channels=1, num_classes=3, variant="resnet18", small_input=True)
    rebuilt.load_state_dict(net.state_dict())
    assert _largest_difference(net, rebuilt.eval(), torch.rand(2, 1, 32, 32)) == 0.0


def test_standalone_maskrcnn_equals_idls(load_without_idl, tmp_path: Path) -> None:
    """About 4 s: two Mask R-CNNs (ResNet-50 FPN) built and run once."""
    module = load_without_idl(standalone_source(InstanceMaskRCNN), tmp_path / "maskrcnn.py")
    torch.manual_seed(2)
    spec = MaskRCNNSpec(1, (16, 32, 64, 128, 256), 20, score_threshold=0.0)  # untrained: keep everything
    net = InstanceMaskRCNN(spec).eval()
    kwargs = json.loads(json.dumps(asdict(spec)))  # as a package has them: tuples as lists
    rebuilt = module.build_maskrcnn(**kwargs)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.rand(1, 1, 96, 128)
    with torch.no_grad():
        ours, theirs = net(x), rebuilt(x)
    assert ours[0, 0].max() > 0  # objects were found
    assert torch.equal(ours, theirs)


def test_the_guard_sees_idl_imports(load_without_idl, tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="imports idl.models"):
        load_without_idl("from idl.models import UNet\n", tmp_path / "top.py")
    late = load_without_idl("def f():\n    import idl.infer\n", tmp_path / "late.py")
    with pytest.raises(ImportError, match="imports idl.infer"):
        late.f()


def test_imports_for_annotations_alone_are_left_out(tmp_path: Path, load_without_idl) -> None:
    """A network module may import idl under ``if TYPE_CHECKING:`` for its annotations: the block is
    dropped, the file imports without idl, and the annotation stays an unevaluated string."""
    (tmp_path / "annotated_net.py").write_text(
        "from __future__ import annotations\n\nfrom typing import TYPE_CHECKING\n\nfrom torch import nn\n\n"
        "if TYPE_CHECKING:\n    from idl.infer.core.model_info import ModelInfo\n\n\n"
        "class Annotated(nn.Module):\n    def sizes(self, info: ModelInfo) -> int:\n"
        "        return info.in_channels\n"
    )
    spec = importlib.util.spec_from_file_location("annotated_net", tmp_path / "annotated_net.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["annotated_net"] = module
    try:
        spec.loader.exec_module(module)
        source = standalone_source(module.Annotated)
    finally:
        sys.modules.pop("annotated_net", None)
    assert "ModelInfo" in source and "TYPE_CHECKING:" not in source
    standalone = load_without_idl(source, tmp_path / "standalone_annotated.py")
    assert standalone.Annotated.sizes.__annotations__["info"] == "ModelInfo"


def test_constants_from_other_layers_come_by_their_value(tmp_path: Path, load_without_idl) -> None:
    """A tuple of names imported from another layer is written as its value; a dict is refused."""
    from idl.infer.core.errors import ExportError
    from idl.infer.core.model_info import TASKS

    for name, body, kept in (
        ("tuple_net", "from idl.infer.core.model_info import TASKS\n\nKNOWN = TASKS\n", True),
        ("dict_net", "from idl.infer.core.model_info import LEGACY_KINDS\n\nKNOWN = LEGACY_KINDS\n", False),
    ):
        (tmp_path / f"{name}.py").write_text(
            f"from torch import nn\n{body}\n\nclass Net(nn.Module):\n    pass\n"
        )
        spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
            if not kept:
                with pytest.raises(ExportError, match="neither a function, a class nor a constant"):
                    standalone_source(module.Net)
                continue
            source = standalone_source(module.Net)
        finally:
            sys.modules.pop(name, None)
        assert f"TASKS = {TASKS!r}" in source
        assert load_without_idl(source, tmp_path / f"standalone_{name}.py").KNOWN == TASKS


def test_a_network_that_imports_idl_inside_a_function_is_refused(tmp_path: Path) -> None:
    from idl.infer.core.errors import ExportError

    (tmp_path / "late_net.py").write_text(
        "from torch import nn\n\n\nclass Late(nn.Module):\n    def forward(self, x):\n"
        "        from idl.infer.core.grid import pad_mode\n\n        return x\n"
    )
    spec = importlib.util.spec_from_file_location("late_net", tmp_path / "late_net.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["late_net"] = module
    try:
        spec.loader.exec_module(module)
        with pytest.raises(ExportError, match="imports idl.infer.core.grid inside a function"):
            standalone_source(module.Late)
    finally:
        sys.modules.pop("late_net")
