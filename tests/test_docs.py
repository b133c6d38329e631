"""The manual against the code.

docs/usage.md's command reference has a section ``### `idl-x` `` for every console script in
pyproject.toml (and for every subcommand of a group), whose option table lists every option of that
command with a meaning (and every value of a choice option); every ``--option`` named in a section
exists on its command. Every relative link
in README.md and docs/*.md points to an existing file (and heading).

Torch-free: the click commands import torch only when they run, which a test here checks in a fresh
interpreter, so this module runs in the lab-PC environment too.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "usage.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
COMMAND_HEADING = re.compile(r"^`([a-z][a-z0-9-]*(?: [a-z0-9-]+)*)`$")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HELP = "--help"


# --- the commands, read from the code ---------------------------------------------------------


def console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: command name -> ``module:attribute``."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        return dict(tomllib.load(file)["project"]["scripts"])


def load(target: str) -> click.Command:
    module, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command), f"{target} is not a click command"
    return command


def command_tree(name: str, command: click.Command) -> dict[str, click.Command]:
    """``command`` under ``name`` and, for a group, each subcommand under ``name sub`` (recursively)."""
    found = {name: command}
    if isinstance(command, click.Group):
        for sub_name, sub in command.commands.items():
            found.update(command_tree(f"{name} {sub_name}", sub))
    return found


def idl_commands() -> dict[str, click.Command]:
    """Every command a user can type: each console script and each subcommand of its groups."""
    found: dict[str, click.Command] = {}
    for name, target in console_scripts().items():
        found.update(command_tree(name, load(target)))
    return found


def long_options(command: click.Command) -> dict[str, click.Option]:
    """The ``--`` spellings of the command's options (both sides of ``--x/--no-x`` flags, ``--help``
    too), each with its option."""
    names: dict[str, click.Option] = {}
    for param in command.get_params(click.Context(command)):
        if isinstance(param, click.Option) and not param.hidden:
            names.update({o: param for o in (*param.opts, *param.secondary_opts) if o.startswith("--")})
    return names


def missing_choices(option: click.Option, row: str) -> list[str]:
    """The values of a choice option that its reference row does not name."""
    if not isinstance(option.type, click.Choice):
        return []
    return [
        str(c) for c in option.type.choices if not re.search(rf"(?<![\w-]){re.escape(str(c))}(?![\w-])", row)
    ]


# --- the reference, read from the Markdown ------------------------------------------------------


def outside_code(text: str) -> list[str]:
    """The lines of ``text`` with those of fenced code blocks blanked (headings and links there are
    not Markdown)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return lines


def reference_sections(text: str) -> dict[str, list[str]]:
    """The lines under each level-3 heading that is a command in backticks (``### `idl-x sub` ``), up
    to the next heading of level 1 to 3. A section given twice keeps both parts."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in outside_code(text):
        heading = HEADING.match(line)
        if heading and len(heading.group(1)) <= 3:
            command = COMMAND_HEADING.match(heading.group(2)) if len(heading.group(1)) == 3 else None
            current = sections.setdefault(command.group(1), []) if command else None
        elif current is not None:
            current.append(line)
    return sections


def table_rows(lines: list[str]) -> list[tuple[str, str]]:
    """(first cell, second cell) of each Markdown table row; ``\\|`` stays inside a cell."""
    rows = []
    for line in lines:
        if line.lstrip().startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if cells and not set("".join(cells)) <= set("-: "):
                rows.append((cells[0], cells[1] if len(cells) > 1 else ""))
    return rows


def reference_problems(commands: dict[str, click.Command], text: str) -> list[str]:
    """What is wrong with the command reference ``text`` for ``commands`` (name -> click command):

    - a command without a section, or a section of no command;
    - an option of a command not listed in the first column of a table row of its section, or listed
      without a meaning;
    - an option named anywhere in a section that its command does not have;
    - a value of a choice option that its row does not name.
    """
    sections = reference_sections(text)
    problems = []
    for name, command in commands.items():
        if name not in sections:
            problems.append(f"{name}: no section '### `{name}`' in the command reference")
            continue
        lines = sections[name]
        exists = long_options(command)
        listed: set[str] = set()
        for first, meaning in table_rows(lines):
            options = set(OPTION.findall(first))
            if options and not meaning:
                problems.append(f"{name} {', '.join(sorted(options))}: listed without a meaning")
            for option in sorted(options & set(exists)):
                for value in missing_choices(exists[option], f"{first} {meaning}"):
                    problems.append(f"{name} {option}: the value {value!r} is not in its reference row")
            listed |= options
        for option in sorted(set(exists) - {HELP} - listed):
            problems.append(f"{name} {option}: an option of the command, not listed in its reference")
        named = set(OPTION.findall("\n".join(lines)))
        for option in sorted(named - set(exists) - {HELP}):
            problems.append(f"{name} {option}: named in the reference, but {name} has no such option")
    for name in sorted(set(sections) - set(commands)):
        problems.append(f"{name}: a section of the command reference, but no such command")
    return problems


# --- links ---------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, lower case, punctuation dropped (``_`` and
    ``-`` kept), spaces as ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in outside_code(page.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            name, n = base, 0
            while name in found:  # GitHub numbers repeated headings
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``page`` whose file does not exist or whose ``#anchor`` names no heading
    of that file (each as ``PAGE:LINE: TARGET: why``, PAGE relative to ``root``)."""
    problems = []
    for number, line in enumerate(outside_code(page.read_text(encoding="utf-8")), start=1):
        for target in LINK.findall(line):
            if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(root)}:{number}: {target}"
            if not file.exists():
                problems.append(f"{where}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                problems.append(f"{where}: no heading with the anchor #{anchor} in {file.name}")
    return problems


# --- the tests -----------------------------------------------------------------------------------


def test_every_option_of_every_command_is_in_the_reference() -> None:
    commands = idl_commands()
    assert {"idl-train", "idl-predict", "idl-labels from-masks"} <= set(commands)
    problems = reference_problems(commands, REFERENCE.read_text(encoding="utf-8"))
    assert not problems, "docs/usage.md's command reference is out of date:\n" + "\n".join(problems)


def test_the_commands_import_no_torch() -> None:
    """The options are read by importing the commands; that must not import torch (or mlflow), or
    this test and the lab-PC install would need them."""
    modules = sorted({target.partition(":")[0] for target in console_scripts().values()})
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(' '.join(m for m in ('torch', 'torchvision', 'mlflow') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing {modules} imported {result.stdout.strip()}"


def test_relative_links_resolve() -> None:
    assert REFERENCE in PAGES
    problems = [problem for page in PAGES for problem in link_problems(page)]
    assert not problems, "\n".join(problems)


# the check itself, on a small command and reference of its own


def toy(*extra: str, formats: tuple[str, ...] = ("tif", "zarr")) -> click.Command:
    options = [
        click.Option(["--alpha"]),
        click.Option(["--beta/--no-beta"]),
        click.Option(["--format"], type=click.Choice(formats)),
    ]
    return click.Command("toy", params=[*options, *(click.Option([o]) for o in extra)])


TOY_REFERENCE = """\
# Reference

Outside any section `--anything` may be named.

### `toy`

`toy [OPTIONS]` does nothing.

| option | meaning |
|---|---|
| `--alpha A\\|B` | the alpha |
| `--beta` / `--no-beta` | beta on or off |
| `--format tif\\|zarr` | TIFF files or OME-Zarr folders |
| `--help` | is allowed, not required |

## After the reference

`--gamma` here belongs to no command.
"""


def test_the_toy_reference_is_complete() -> None:
    assert reference_problems({"toy": toy()}, TOY_REFERENCE) == []


def test_an_option_added_without_documentation_is_found() -> None:
    assert reference_problems({"toy": toy("--gamma")}, TOY_REFERENCE) == [
        "toy --gamma: an option of the command, not listed in its reference"
    ]


def test_an_option_documented_but_not_in_the_code_is_found() -> None:
    stale = TOY_REFERENCE.replace("| `--help` |", "| `--delta N` | removed from the code |\n| `--help` |")
    prose = TOY_REFERENCE.replace("does nothing.", "does nothing, unlike `other --epsilon`.")
    assert reference_problems({"toy": toy()}, stale) == [
        "toy --delta: named in the reference, but toy has no such option"
    ]
    assert reference_problems({"toy": toy()}, prose) == [
        "toy --epsilon: named in the reference, but toy has no such option"
    ]


def test_a_new_value_of_a_choice_option_is_found() -> None:
    assert reference_problems({"toy": toy(formats=("tif", "zarr", "npy"))}, TOY_REFERENCE) == [
        "toy --format: the value 'npy' is not in its reference row"
    ]


def test_one_side_of_a_flag_mentioned_only_in_prose_is_not_listed() -> None:
    half = TOY_REFERENCE.replace("| `--beta` / `--no-beta` | beta on or off |", "| `--beta` | beta on |")
    half = half.replace("does nothing.", "does nothing (`--no-beta` turns beta off).")
    assert reference_problems({"toy": toy()}, half) == [
        "toy --no-beta: an option of the command, not listed in its reference"
    ]
    blank = TOY_REFERENCE.replace("| the alpha |", "| |")
    assert reference_problems({"toy": toy()}, blank) == ["toy --alpha: listed without a meaning"]


def test_sections_of_subcommands_and_of_missing_commands() -> None:
    group = click.Group("toys", commands={"one": toy()})
    tree = command_tree("toys", group)
    assert set(tree) == {"toys", "toys one"}
    text = TOY_REFERENCE.replace("### `toy`", "### `toys`\n\nTwo subcommands.\n\n### `toys one`")
    assert reference_problems(tree, text) == []
    assert reference_problems(tree, TOY_REFERENCE) == [
        "toys: no section '### `toys`' in the command reference",
        "toys one: no section '### `toys one`' in the command reference",
        "toy: a section of the command reference, but no such command",
    ]


def test_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, with commas\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md) [ok](other.md#a-code-heading-with-commas) [ok](#page)\n"
        "[web](https://example.org/x) [gone](missing.md) [bad anchor](other.md#nothing)\n"
        "```\n[in code](nowhere.md)\n```\n"
    )
    found = [p.split(": ", 1)[1] for p in link_problems(page, tmp_path)]
    assert found == [
        "missing.md: no such file",
        "other.md#nothing: no heading with the anchor #nothing in other.md",
    ]
