"""The layout keeps its promises: imports go one way, hosts stay thin, public names are exported and documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.doc_pages import read_page

ROOT = Path(__file__).resolve().parent.parent
#: Host modules parse, call the runtime and render; the logic they call lives elsewhere (docs/architecture.md).
MAX_HOST_MODULE_LINES = 500
#: The directories of the project's own Python code (not .venv/, build/ or anything else a clone may hold).
PROJECT_TREES = ("sandbox", "zingyconn", "tests", "benchmarks", "examples")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "sandbox").rglob("*.py")), ids=lambda p: p.name)
def test_sandbox_never_imports_zingyconn(path: Path) -> None:
    """The generic sandbox package does not depend on the product built on it."""
    offenders = {name for name in _imported_modules(path) if name.split(".")[0] == "zingyconn"}
    assert not offenders, f"{path.relative_to(ROOT)} imports {sorted(offenders)}"


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in (ROOT / "zingyconn").rglob("*.py")
        # __main__ is the `python -m zingyconn` entry point: a host by nature.
        if "hosts" not in p.relative_to(ROOT / "zingyconn").parts and p.name != "__main__.py"
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_core_never_imports_hosts(path: Path) -> None:
    """Entry points depend on the core, never the other way round."""
    offenders = {name for name in _imported_modules(path) if name.startswith("zingyconn.hosts")}
    assert not offenders, f"{path.relative_to(ROOT)} imports {sorted(offenders)}"


@pytest.mark.parametrize("path", sorted((ROOT / "zingyconn" / "hosts").rglob("*.py")), ids=lambda p: p.name)
def test_host_modules_stay_thin(path: Path) -> None:
    """Each entry-point module stays small enough to read in one sitting."""
    assert len(path.read_text().splitlines()) <= MAX_HOST_MODULE_LINES


def test_no_grab_bag_modules() -> None:
    """There is no utils.py or helpers.py: every module is named by what it holds."""
    # Only the project's own trees: a virtualenv inside the clone (.venv/) holds third-party utils.py files.
    modules = [p for tree in PROJECT_TREES for p in (ROOT / tree).rglob("*.py")]
    assert modules
    assert not [p for p in modules if p.stem in {"utils", "helpers", "misc"}]


@pytest.mark.parametrize("package", ["sandbox", "zingyconn"])
def test_public_names_are_sorted_and_importable(package: str) -> None:
    """Each package's ``__all__`` is sorted and every name in it exists."""
    module = __import__(package)
    names = list(module.__all__)
    assert names == sorted(names)
    assert all(hasattr(module, name) for name in names)


def test_every_cli_command_is_documented() -> None:
    """Every top-level ``zingyconn`` command appears on the command line page."""
    from zingyconn.hosts.cli import COMMANDS

    page = read_page("cli")
    missing = [name for name in COMMANDS if not re.search(rf"zingyconn {re.escape(name)}\b", page)]
    assert not missing, f"docs/cli.md does not mention: {missing}"


def test_every_configuration_variable_is_documented() -> None:
    """Every ZINGYCONN_* variable the code reads is documented on the configuration page."""
    used: set[str] = set()
    for path in (ROOT / "zingyconn").rglob("*.py"):
        used.update(re.findall(r"\"(ZINGYCONN_[A-Z_]+)\"", path.read_text()))
    page = read_page("configuration")
    # Not configuration: a marker placed in the brokered twilio client's own environment mapping.
    internal = {"ZINGYCONN_BROKERED"}
    assert not sorted(v for v in used - internal if v not in page)
