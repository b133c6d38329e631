"""A self-contained architecture file for a package's ``pytorch_state_dict`` weights.

bioimage.io tools rebuild a network from the Python file a package names
(``ArchitectureFromFileDescr``). The file is generated from idl's own module sources, so there is one
source of truth: the network's module from :mod:`idl.models` and the ``idl.models`` modules it
imports, whole, dependencies first; functions and classes it imports from other layers (the U-Net's
``pad_mode``) by their source alone, constants (a tuple of names) by their value. The ``from idl...
import`` lines are dropped, since every name they bring in is defined earlier in the file, and so are
``if TYPE_CHECKING:`` blocks (imports for annotations, which the file's ``from __future__ import
annotations`` leaves unevaluated). What is left imports only torch, torchvision and the standard
library, so the package runs where idl is not installed; a file that would still import idl, or that
defines a name twice, is refused.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from types import ModuleType
from typing import Any

from idl.infer.core.errors import ExportError

MODELS = "idl.models"
FUTURE = "from __future__ import annotations"


def _idl(module: str | None) -> bool:
    return module is not None and (module == "idl" or module.startswith("idl."))


def _annotations_only(node: ast.stmt) -> bool:
    """Whether ``node`` is an ``if TYPE_CHECKING:`` block (imports for annotations alone)."""
    if not isinstance(node, ast.If) or node.orelse:
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _strip(source: str, tree: ast.Module) -> str:
    """``source`` without its docstring, its ``__future__`` import, its top-level idl imports and its
    ``if TYPE_CHECKING:`` blocks."""
    drop: set[int] = set()
    body = tree.body
    for index, node in enumerate(body):
        docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        idl_import = isinstance(node, ast.ImportFrom) and _idl(node.module)
        if docstring or future or idl_import or _annotations_only(node):
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = source.splitlines()
    kept = [line for number, line in enumerate(lines, start=1) if number not in drop]
    return "\n".join(kept).strip("\n") + "\n"


def _check_imports(tree: ast.Module, where: str) -> None:
    """Refuse idl imports below the top level (inside a function or class): they cannot be inlined.
    Those of ``if TYPE_CHECKING:`` blocks are for annotations and are dropped (:func:`_strip`)."""
    kept = ast.Module(body=[n for n in tree.body if not _annotations_only(n)], type_ignores=[])
    for node in ast.walk(kept):
        names = []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        if any(_idl(name) for name in names) and node.col_offset > 0:
            raise ExportError(f"{where} imports {names[0]} inside a function; it cannot be made standalone")


class _Collector:
    """The pieces of the file in dependency order: ``(label, source)``."""

    def __init__(self) -> None:
        self.pieces: list[tuple[str, str]] = []
        self.seen: set[str] = set()

    def module(self, module: ModuleType) -> None:
        if module.__name__ in self.seen:
            return
        self.seen.add(module.__name__)
        source = inspect.getsource(module)
        tree = ast.parse(source)
        _check_imports(tree, module.__name__)
        for node in tree.body:
            if isinstance(node, ast.Import) and any(_idl(a.name) for a in node.names):
                raise ExportError(f"{module.__name__}: 'import idl...' cannot be made standalone")
            if isinstance(node, ast.ImportFrom) and _idl(node.module):
                for alias in node.names:
                    if alias.asname not in (None, alias.name):
                        raise ExportError(f"{module.__name__}: renamed import of {alias.name}")
                    self.imported(importlib.import_module(str(node.module)), alias.name)
        self.pieces.append((module.__name__, _strip(source, tree)))

    def imported(self, module: ModuleType, name: str) -> None:
        obj = getattr(module, name)
        home = getattr(obj, "__module__", None) or module.__name__
        if home.startswith(MODELS + ".") or home == MODELS:
            self.module(sys.modules[home])  # an idl.models module comes whole
            return
        label = f"{home}.{name}"
        if label in self.seen:
            return
        if _literal(obj):  # a constant (a tuple of names, a number): by its value
            self.seen.add(label)
            self.pieces.append((label, f"{name} = {obj!r}\n"))
            return
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            raise ExportError(f"{label} is neither a function, a class nor a constant; it cannot be inlined")
        source = inspect.getsource(obj)
        tree = ast.parse(source)
        _check_imports(tree, label)
        free = _free_idl_names(obj)
        if free:
            raise ExportError(f"{label} uses {', '.join(sorted(free))} from idl; it cannot be inlined alone")
        self.seen.add(label)
        self.pieces.append((label, source.strip("\n") + "\n"))


def _literal(value: Any) -> bool:
    """Whether ``value`` is a plain constant its ``repr`` reproduces: a string, number, bool or None,
    or a tuple of them."""
    if isinstance(value, tuple):
        return all(_literal(item) for item in value)
    return value is None or type(value) in (str, int, float, bool)


def _free_idl_names(obj: Any) -> set[str]:
    """Global names a function uses that come from idl (a class is checked method by method)."""
    functions = [obj] if inspect.isfunction(obj) else [f for f in vars(obj).values() if inspect.isfunction(f)]
    found = set()
    for function in functions:
        for name in function.__code__.co_names:
            value = function.__globals__.get(name)
            home = getattr(value, "__module__", None) or getattr(value, "__name__", None)
            if isinstance(home, str) and _idl(home):
                found.add(name)
    return found


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def standalone_source(net_class: type) -> str:
    """The architecture file of ``net_class`` (a network of :mod:`idl.models`): its module and what it
    needs from idl, as one Python file that imports no idl."""
    collector = _Collector()
    collector.module(sys.modules[net_class.__module__])
    defined: dict[str, str] = {}
    for label, source in collector.pieces:
        for name in _top_level_names(ast.parse(source)):
            if name in defined:
                raise ExportError(f"{name} is defined in both {defined[name]} and {label}")
            defined[name] = label
    header = (
        f'"""The {net_class.__name__} network of idl, as one file: generated from the sources of '
        + ", ".join(label for label, _ in collector.pieces)
        + ".\n\nIt imports torch (and torchvision) only; idl need not be installed. Do not edit: it is "
        'rewritten with every export."""\n'
    )
    parts = [header, FUTURE + "\n"]
    for label, source in collector.pieces:
        parts.append(f"\n# ---- {label} ----\n\n{source}")
    text = "".join(parts)
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _idl(node.module):
            raise ExportError(f"the architecture file of {net_class.__name__} still imports {node.module}")
        if isinstance(node, ast.Import) and any(_idl(a.name) for a in node.names):
            raise ExportError(f"the architecture file of {net_class.__name__} still imports idl")
    return text


def architecture_file_name(net_class: type) -> str:
    """The file's name in the package: the network's module name (``unet.py``, ``resnet.py``)."""
    return net_class.__module__.rsplit(".", 1)[-1] + ".py"
