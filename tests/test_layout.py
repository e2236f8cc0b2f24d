"""The layout keeps its word: the student's file short enough to read whole, the machinery in a
package of small modules tied by plain imports, and data flowing one way through it: sources
become records, records go to the handlers, and outputs take them from there."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path
from types import FunctionType

import pytest
from conftest import ROOT

PACKAGE = ROOT / "alpaca_stream"
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported(path: Path) -> set[str]:
    """The modules of the package that this file imports, by dotted name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("alpaca_stream"):
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (PACKAGE / f"{node.module[14:].replace('.', '/')}/{alias.name}.py").exists())
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("alpaca_stream"))
    return names


def name_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_the_students_file_is_short_enough_to_read_whole_with_on_trade_on_the_first_screens():
    lines = (ROOT / "websocket_stream.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250
    assert any(line.startswith("async def on_trade(") for line in lines[:100])
    assert max(map(len, lines)) <= 79  # read whole in an 80-column editor or terminal


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_each_module_of_the_package_stays_under_600_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 600


def test_every_class_and_function_the_package_offers_says_what_it_does():
    import alpaca_stream

    offered = [getattr(alpaca_stream, name) for name in alpaca_stream.__all__]
    defined = [thing for thing in offered if isinstance(thing, type | FunctionType)
               and getattr(thing, "__module__", "").startswith("alpaca_stream")]  # not Handler, a type alias
    undocumented = [thing.__name__ for thing in defined if not (thing.__doc__ or "").strip()]
    assert len(defined) >= 20 and undocumented == []


def test_modules_are_tied_by_plain_imports_never_by_a_name_at_run_time():
    for path in [ROOT / "websocket_stream.py", *MODULES]:
        text = path.read_text(encoding="utf-8")
        assert "import_module" not in text and "__import__" not in text, path.name


# Each part, and the parts it must never import: data flows one way, sources -> records ->
# handlers -> outputs, and only the command line and the supervisor see all of them.
NEVER = {
    "alpaca_stream.records": ("sources", "outputs", "handlers", "connection", "supervisor", "cli", "options"),
    "alpaca_stream.handlers": ("sources", "outputs", "connection", "supervisor", "cli", "options"),
    "alpaca_stream.sources": ("outputs", "supervisor", "cli", "options"),
    "alpaca_stream.outputs": ("sources", "supervisor", "cli", "options"),
    "alpaca_stream.server": ("sources", "outputs", "handlers", "records", "connection", "supervisor", "cli"),
    "alpaca_stream.connection": ("sources", "outputs", "supervisor", "cli", "options"),
    "alpaca_stream.supervisor": ("cli", "options", "outputs"),
}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_data_flows_one_way_through_the_package(path):
    name = name_of(path)
    for part, never in NEVER.items():
        if name == part or name.startswith(part + "."):
            wrong = {module for module in imported(path) for other in never
                     if module == f"alpaca_stream.{other}" or module.startswith(f"alpaca_stream.{other}.")}
            assert not wrong, f"{name} imports {', '.join(sorted(wrong))}"
    assert "alpaca_stream" not in imported(path) or name == "alpaca_stream", "the package's own surface, from inside"


def test_every_library_the_package_imports_is_declared_in_pyproject_not_left_to_another_ones():
    # A library that comes only through another's requirements (requests, through alpaca-py's)
    # goes the day that one no longer needs it.
    listed = re.search(r"^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(encoding="utf-8"),
                       re.MULTILINE | re.DOTALL)
    assert listed  # (tomllib reads it from Python 3.11 on only)
    declared = {re.split(r"[<>=!~ \[;]", requirement)[0].lower().replace("_", "-")
                for requirement in re.findall(r'^ *"([^"]+)"', listed[1], re.MULTILINE)}
    distributions = importlib.metadata.packages_distributions()
    used = set()
    for path in [*MODULES, ROOT / "websocket_stream.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            used.update(name.split(".")[0] for name in names)
    third_party = {distribution.lower().replace("_", "-") for name in used - set(sys.stdlib_module_names)
                   for distribution in distributions.get(name, ())}
    assert third_party and third_party - {"alpaca-stream"} - declared == set()
