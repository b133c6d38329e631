"""Where the code may decide by task: only in the task modules (a ratchet for the modules that still
branch on the task name, until they are moved behind the task interface)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("infer", "models", "train", "export", "cli")
# a comparison with the task name, Mask R-CNN's label output or model name, or the classifier test
BRANCH = re.compile(
    r"""(?<!for )\btask\s*(==|!=|in\b|not in\b)"""
    r"""|\.output\s*(==|!=)\s*["']labels["']"""
    r"""|\bmodel\s*(==|!=)\s*["']maskrcnn["']"""
    r"""|\bis_classifier\("""
)
TASK_MODULES = ("infer/tasks/", "train/tasks/")
# modules that still branch on the task, with how often; the number may only go down
NOT_YET_MIGRATED = {
    "cli/demo.py": 3,
    "export/bioimageio.py": 16,
    "export/onnx.py": 2,
}


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
    assert not BRANCH.search('if kind == "batch":')  # an axis kind of a bioimage.io tensor
    assert not BRANCH.search("task = normalize_task(name)")
    assert not BRANCH.search("for task in TASKS:")
    assert not BRANCH.search('if info.output == "logits":')  # the activation, not the task


def test_only_task_modules_branch_on_the_task() -> None:
    outside = {m: n for m, n in branches().items() if not m.startswith(TASK_MODULES)}
    grown = {m: (n, NOT_YET_MIGRATED.get(m, 0)) for m, n in outside.items() if n > NOT_YET_MIGRATED.get(m, 0)}
    assert not grown, (
        "these modules decide by task name (found, allowed); put task-specific code into the task's "
        f"module instead: {grown}"
    )
    shrunk = {m: (outside.get(m, 0), n) for m, n in NOT_YET_MIGRATED.items() if outside.get(m, 0) < n}
    assert not shrunk, f"fewer task branches than listed (found, listed): lower NOT_YET_MIGRATED {shrunk}"
