"""Where the code may decide by task: only in the task modules. Everything else asks the task (see
docs/architecture.md), so adding a task touches its two modules and nothing else."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("infer", "models", "train", "export", "cli")
# a comparison with the task name, a model's kind, a task's name as a literal, Mask R-CNN's label
# output or model name, or the classifier test
BRANCH = re.compile(
    r"""(?<!for )\btask\s*(==|!=|in\b|not in\b)"""
    r"""|(?<!dtype)\.kind\s*(==|!=|in\b|not in\b)"""
    r"""|(==|!=)\s*["'](semantic|instance|detection|regression|classification)["']"""
    r"""|\.output\s*(==|!=)\s*["']labels["']"""
    r"""|\bmodel\s*(==|!=)\s*["']maskrcnn["']"""
    r"""|\bis_classifier\("""
)
TASK_MODULES = ("infer/tasks/", "train/tasks/")  # each task's two modules and the two registries


def branches() -> Counter[str]:
    """How many task comparisons each module of the five layers holds."""
    counts: Counter[str] = Counter()
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            text = path.read_text()
            found = len(BRANCH.findall(text))
            if found:
                counts[path.relative_to(ROOT).as_posix()] = found
    return counts


def test_the_pattern_finds_task_branches() -> None:
    assert BRANCH.search('if info.task == "regression":')
    assert BRANCH.search("elif config.task in ('semantic', 'instance'):")
    assert BRANCH.search('if info.output == "labels":')
    assert BRANCH.search('if config.model == "maskrcnn":')
    assert BRANCH.search("if is_classifier(model):")
    assert BRANCH.search('if info.kind == "detection":')
    assert BRANCH.search('elif name != "regression":')
    assert not BRANCH.search('exact = planes.dtype.kind == "u"')  # numpy's kind of a dtype
    assert not BRANCH.search('if kind == "batch":')  # an axis kind of a bioimage.io tensor
    assert not BRANCH.search("task = normalize_task(name)")
    assert not BRANCH.search("for task in TASKS:")
    assert not BRANCH.search('if info.output == "logits":')  # the activation, not the task


def test_only_task_modules_branch_on_the_task() -> None:
    outside = {m: n for m, n in branches().items() if not m.startswith(TASK_MODULES)}
    assert not outside, (
        "these modules decide by task name (module: how often); put task-specific code into the task's "
        f"modules (infer/tasks/, train/tasks/) instead: {outside}"
    )


def test_command_line_choices_are_the_librarys_constants() -> None:
    """A ``click.Choice`` of literal values in cli/ is a copy of a library constant that drifts from
    it; the choices come from the library (the registries, ``MAPS``, ``POLICIES``, ...). Reading them
    imports no torch: idl-predict, idl-evaluate and idl-labels run without it, idl-train and
    idl-export print their install hint."""
    import ast
    import subprocess
    import sys

    literal = []
    for path in sorted((ROOT / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "Choice"
                and node.args
                and isinstance(node.args[0], ast.List | ast.Tuple | ast.Set)
                and all(isinstance(item, ast.Constant) for item in node.args[0].elts)
            ):
                literal.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno}")
    assert not literal, f"click.Choice with a literal list (use the library's constant): {literal}"
    blocked = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'mlflow'):\n"
        "            raise ImportError(f'{name} is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import idl.cli.predict, idl.cli.evaluate, idl.cli.labels, idl.cli.train, idl.cli.export\n"
    )
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# Networks: export, checkpoints and training ask the network (idl.models.network.Network) and find it in
# one registry (idl.models.registry); nothing outside models/ decides by a network's class.
MODELS = ROOT / "models"
REGISTRY = "models/registry.py"  # the one registry of networks


def _name(node: ast.AST) -> str | None:
    """The name an expression ends in: ``UNet`` of ``UNet`` and of ``idl.models.UNet``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def registered_networks() -> tuple[set[str], set[str]]:
    """The network classes registered in models/ (the classes of its ``register(name, network, spec)``
    calls) with the other names models/ gives them (``UNet2D = UNet``), and their spec classes: read
    from the source, so that the rule needs no torch and no list kept by hand."""
    networks: set[str] = set()
    specs: set[str] = set()
    aliases: list[tuple[str, str]] = []
    for path in sorted(MODELS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _name(node.func) == "register":
                given = dict(zip(("name", "network", "spec"), node.args, strict=False))
                given.update({k.arg: k.value for k in node.keywords if k.arg})
                networks.update(n for n in [_name(given.get("network", ast.Pass()))] if n)
                specs.update(n for n in [_name(given.get("spec", ast.Pass()))] if n)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Name):
                aliases += [(t.id, node.value.id) for t in node.targets if isinstance(t, ast.Name)]
    for _ in aliases:  # aliases of aliases
        networks.update(alias for alias, target in aliases if target in networks)
    return networks, specs


def _classes_in(node: ast.AST) -> list[str]:
    """The class names of an ``isinstance`` argument: a name, a tuple of them, ``A | B``."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [n for item in node.elts for n in _classes_in(item)]
    if isinstance(node, ast.BinOp):
        return _classes_in(node.left) + _classes_in(node.right)
    return [n for n in [_name(node)] if n]


def _checked_classes(node: ast.AST) -> ast.AST | None:
    """The class argument of an ``isinstance(x, C)`` or ``issubclass(t, C)`` call, else None."""
    checks = isinstance(node, ast.Call) and _name(node.func) in ("isinstance", "issubclass")
    return node.args[1] if checks and len(node.args) == 2 else None


def _is_type_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and _name(node.func) == "type" and len(node.args) == 1


def network_decisions(source: str, networks: set[str]) -> list[str]:
    """Where ``source`` decides by a network's class: ``isinstance``/``issubclass`` with a network
    class, ``type(x) is N``, a comparison with its ``__name__``, a ``case N()`` pattern (also under a
    name it was imported as)."""
    tree = ast.parse(source)
    local = set(networks)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            local.update(a.asname for a in node.names if a.asname and a.name in networks)
    found = []
    equality = (ast.Is, ast.IsNot, ast.Eq, ast.NotEq)
    for node in ast.walk(tree):
        if _checked_classes(node) is not None:
            hits = [n for n in _classes_in(_checked_classes(node)) if n in local]
        elif isinstance(node, ast.Compare) and isinstance(node.ops[0], equality):
            sides = [node.left, *node.comparators]
            typed = any(_is_type_call(s) for s in sides)
            hits = [n for s in sides for n in [_name(s)] if typed and n in local]
            named = any(isinstance(s, ast.Attribute) and s.attr == "__name__" for s in sides)
            hits += [s.value for s in sides if named and isinstance(s, ast.Constant) and s.value in networks]
        elif isinstance(node, ast.MatchClass):
            hits = [n for n in [_name(node.cls)] if n in local]
        else:
            continue
        found += [f"l.{node.lineno}: {hit}" for hit in hits]
    return found


def network_tables(source: str, names: set[str]) -> list[str]:
    """Literal dicts, lists, tuples and sets in ``source`` that hold a network or spec class (a table of
    networks: a second registry), but for the class tuple of an ``isinstance``."""
    tree = ast.parse(source)
    exempt = {id(_checked_classes(node)) for node in ast.walk(tree)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Dict, ast.List, ast.Tuple, ast.Set)) and id(node) not in exempt:
            items = [*node.keys, *node.values] if isinstance(node, ast.Dict) else node.elts
            hits = [n for item in items if item is not None for n in [_name(item)] if n in names]
            found += [f"l.{node.lineno}: {', '.join(hits)}"] if hits else []
    return found


def test_the_rules_find_network_decisions_and_tables() -> None:
    networks = {"UNet", "UNet2D", "InstanceMaskRCNN"}
    assert network_decisions("if isinstance(net, UNet):\n    pass\n", networks)
    assert network_decisions("ok = isinstance(net, (nn.Conv2d, models.InstanceMaskRCNN))\n", networks)
    assert network_decisions("ok = isinstance(net, UNet2D | str)\n", networks)
    assert network_decisions("ok = issubclass(type(net), UNet)\n", networks)
    assert network_decisions("ok = type(net) is UNet\n", networks)
    assert network_decisions('ok = type(net).__name__ == "InstanceMaskRCNN"\n', networks)
    assert network_decisions("from idl.models import UNet as U\nok = isinstance(net, U)\n", networks)
    assert network_decisions("match net:\n    case UNet():\n        pass\n", networks)
    assert not network_decisions("ok = isinstance(x, torch.Tensor)\n", networks)
    assert not network_decisions("net = UNet(spec)\nok = type(net) is type(other)\n", networks)
    table = 'ARCHITECTURES = {"unet": (UNet, UNetSpec), "maskrcnn": (InstanceMaskRCNN, MaskRCNNSpec)}\n'
    assert network_tables(table, networks | {"UNetSpec"}) == ["l.1: UNet, UNetSpec", "l.1: InstanceMaskRCNN"]
    assert network_tables("KNOWN = [UNet2D]\n", networks)
    assert not network_tables("ok = isinstance(net, (UNet, InstanceMaskRCNN))\n", networks)
    assert not network_tables('VARIANTS = {"resnet18": tv.resnet18}\n', networks)


def test_registered_networks_are_read_from_models() -> None:
    networks, specs = registered_networks()
    assert {"UNet", "UNet2D", "ResNetClassifier", "InstanceMaskRCNN"} <= networks
    assert {"UNetSpec", "ResNetSpec", "MaskRCNNSpec"} <= specs


@pytest.mark.torch
def test_the_source_scan_finds_every_registered_network() -> None:
    """What :func:`registered_networks` reads from the source is what the registry holds at run time."""
    from idl.models.registry import registered

    networks, specs = registered_networks()
    ours = [r for r in registered() if r.network.__module__.startswith("idl.models")]
    assert {r.network.__name__ for r in ours} <= networks
    assert {r.spec.__name__ for r in ours} <= specs


def test_only_models_decide_by_network_class() -> None:
    networks, _ = registered_networks()
    outside = {}
    for layer in LAYERS:
        if layer == "models":
            continue
        for path in sorted((ROOT / layer).rglob("*.py")):
            found = network_decisions(path.read_text(), networks)
            if found:
                outside[path.relative_to(ROOT).as_posix()] = found
    assert not outside, (
        "these modules decide by a network's class; ask the network instead (idl.models.network.Network: "
        f"what it exports, how it is checked, its weight formats): {outside}"
    )


def test_one_network_registry() -> None:
    networks, specs = registered_networks()
    tables = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            module = path.relative_to(ROOT).as_posix()
            found = [] if module == REGISTRY else network_tables(path.read_text(), networks | specs)
            if found:
                tables[module] = found
    assert not tables, (
        f"these modules keep a table of networks; networks are registered in {REGISTRY} (with "
        f"idl.models.registry.register) and looked up there: {tables}"
    )


# The one prediction engine (docs/architecture.md): the names each piece may be used under, and where
TILE_LOOP = "infer/tiling/engine.py"  # run_tiles: every network over tiles runs here
BATCH_DRIVER = "infer/tiling/batch.py"  # run_batch: every batch of inputs goes through here
ENGINE_RULES = {
    # a loop over the tile grid (or a grid made to loop over) outside the tile loop
    r"\btile_grid\(": {TILE_LOOP, "infer/core/grid.py"},
    # a batch driver's pieces: the record of outputs, the failures collected to the end, a killed run's
    # leftovers (training clears its model folder's, which is no batch)
    r"\bOutputRecord\b": {BATCH_DRIVER, "infer/io/record.py", "infer/io/status.py"},  # status: reads it
    r"\bBatchError\(": {BATCH_DRIVER, "infer/core/errors.py"},
    r"\bremove_leftovers\(": {BATCH_DRIVER, "infer/io/places.py", "train/pipeline.py"},
}


def engine_breaches(sources: dict[str, str]) -> dict[str, list[str]]:
    """For each rule of :data:`ENGINE_RULES`, the modules (of ``sources``: path -> text) that break it."""
    found: dict[str, list[str]] = {}
    for pattern, allowed in ENGINE_RULES.items():
        rule = re.compile(pattern)
        bad = [path for path, text in sources.items() if rule.search(text) and path not in allowed]
        if bad:
            found[pattern] = sorted(bad)
    return found


def test_the_engine_rules_find_a_second_loop_and_a_second_driver() -> None:
    sources = {
        "infer/tiling/mine.py": "for tile in tile_grid(shape, tile, halo, rules):\n    run(tile)",
        "infer/tasks/mine.py": "record = OutputRecord.read(out)\nraise BatchError(failures, n)",
        TILE_LOOP: "tiles = tile_grid(shape, tile, halos, rules)",
        BATCH_DRIVER: "record = OutputRecord.read(out)",
    }
    assert engine_breaches(sources) == {
        r"\btile_grid\(": ["infer/tiling/mine.py"],
        r"\bOutputRecord\b": ["infer/tasks/mine.py"],
        r"\bBatchError\(": ["infer/tasks/mine.py"],
    }


def test_one_tile_loop_and_one_batch_driver() -> None:
    sources = {
        path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
        for layer in LAYERS
        for path in sorted((ROOT / layer).rglob("*.py"))
    }
    assert "def run_tiles(" in sources[TILE_LOOP] and "def run_batch(" in sources[BATCH_DRIVER]
    breaches = engine_breaches(sources)
    assert not breaches, (
        f"a second tile loop or batch driver (pattern: modules): {breaches}; run networks over tiles with "
        f"{TILE_LOOP}'s run_tiles (a merger of your own decides what becomes of the output) and batches of "
        f"inputs with {BATCH_DRIVER}'s run_batch"
    )
