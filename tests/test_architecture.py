"""Where the code may decide by task: only in the task modules. Everything else asks the task (see
docs/architecture.md), so adding a task touches its two modules and nothing else."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

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
