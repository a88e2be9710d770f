"""The layout keeps its promises: imports go one way, hosts stay thin, public names are exported and documented."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from tests.doc_pages import read_page, read_section

ROOT = Path(__file__).resolve().parent.parent
#: Host modules parse, call the runtime and render; the logic they call lives elsewhere (docs/architecture.md).
MAX_HOST_MODULE_LINES = 500
#: The directories of the project's own Python code (not .venv/, build/ or anything else a clone may hold).
PROJECT_TREES = ("sandbox", "zingyconn", "tests", "benchmarks", "examples", "scripts")


#: The layers of the code: ``sandbox``, each subpackage of ``zingyconn``, ``core`` (the modules at the top of
#: ``zingyconn``) and ``runtime`` (``zingyconn.runtime`` and the package's entry point, which compose the others).
RUNTIME_MODULES: Final = frozenset({"zingyconn", "zingyconn.runtime"})
SUBPACKAGES: Final = ("secrets", "egress", "twilio", "http", "snippet", "tasks", "hosts")
LAYERS: Final = ("sandbox", "core", *SUBPACKAGES, "runtime")

#: Which layers each layer may import (docs/architecture.md draws the same table, and each package's docstring
#: names what it must never import). ``hosts`` may import everything; nothing but ``hosts`` imports ``hosts``.
MAY_IMPORT: Final[dict[str, frozenset[str]]] = {
    "sandbox": frozenset(),
    "core": frozenset({"sandbox"}),
    "secrets": frozenset({"sandbox", "core"}),
    "egress": frozenset({"sandbox", "core", "secrets"}),
    "twilio": frozenset({"sandbox", "core", "egress"}),
    "http": frozenset({"sandbox", "core", "secrets", "egress"}),
    "snippet": frozenset({"sandbox", "twilio", "http"}),
    "tasks": frozenset({"sandbox", "core", "snippet"}),
    # The runtime reaches connection types through zingyconn.connection_types, never their packages.
    "runtime": frozenset(set(LAYERS) - {"hosts", "twilio", "http"}),
    "hosts": frozenset(LAYERS),
}

#: Imports that cross the table today, each with why it stays (importer, imported module or package).
KNOWN_CROSSINGS: Final[dict[tuple[str, str], str]] = {
    # The child names the operations it requests as the protocol declares them (declarations, no I/O, no secret).
    ("zingyconn.snippet.environment", "zingyconn.egress.protocol"): "the child requests the protocol's operations",
    # A script's schedule is checked when it is saved, by the parser that later runs it.
    ("zingyconn.catalog", "zingyconn.tasks.schedule"): "a script's cron schedule is checked before it is saved",
    # The enqueue rate limit is the same shared token bucket as the message rate limit.
    ("zingyconn.tasks.queue", "zingyconn.egress.ratelimit"): "the enqueue rate uses the shared token buckets",
}


def layer_of(module: str) -> str | None:
    """Return the layer of a dotted module name (``None`` for a module outside the project's two packages)."""
    parts = module.split(".")
    if parts[0] == "sandbox":
        return "sandbox"
    if parts[0] != "zingyconn":
        return None
    if module in RUNTIME_MODULES:
        return "runtime"
    if parts[1] == "__main__":
        return "hosts"  # the ``python -m zingyconn`` entry point
    return parts[1] if parts[1] in SUBPACKAGES else "core"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports(path: Path) -> Iterator[str]:
    """Yield every module of the project *path* imports, at the top or inside a function (``from P import m`` as
    ``P.m`` when ``m`` is a module)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}"
                if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                or (ROOT / node.module.replace(".", "/") / alias.name / "__init__.py").exists()
                else node.module
                for alias in node.names
            ]
        else:
            continue
        yield from (name for name in names if layer_of(name) is not None)


def _crossings(path: Path) -> set[tuple[str, str]]:
    importer = _module_name(path)
    layer = layer_of(importer)
    assert layer is not None
    return {
        (importer, imported)
        for imported in _project_imports(path)
        if layer_of(imported) not in MAY_IMPORT[layer] | {layer}
    }


PROJECT_MODULES: Final = sorted(p for package in ("sandbox", "zingyconn") for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", PROJECT_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    """Every module imports only the layers its layer may import (``MAY_IMPORT``), apart from the known crossings."""
    crossings = {crossing for crossing in _crossings(path) if crossing not in KNOWN_CROSSINGS}
    assert not crossings, f"imports across the layers (see MAY_IMPORT): {sorted(crossings)}"


def test_known_crossings_still_exist() -> None:
    """A crossing that is gone leaves the allow-list, so the table cannot hide a new one under an old name."""
    found = set().union(*(_crossings(path) for path in PROJECT_MODULES))
    assert not set(KNOWN_CROSSINGS) - found


def test_architecture_page_draws_the_layer_table() -> None:
    """docs/architecture.md's table of layers says what ``MAY_IMPORT`` says."""
    section = read_section("architecture", "layers")
    drawn: dict[str, frozenset[str]] = {}
    for row in re.findall(r"^\| `(\w+)` +\|(.*)\|$", section, re.MULTILINE):
        layer, allowed = row
        drawn[layer] = frozenset(re.findall(r"`(\w+)`", allowed))
    assert drawn == {layer: allowed - {layer} for layer, allowed in MAY_IMPORT.items()}


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_package_docstring_agrees_with_the_layers(package: str) -> None:
    """What a package's docstring says it must never import is outside what ``MAY_IMPORT`` lets it import."""
    doc = __import__(f"zingyconn.{package}", fromlist=["_"]).__doc__ or ""
    forbidden = re.search(r"must never import (.*?)(?::|\.\s|\.$)", doc, re.DOTALL)
    named = set(re.findall(r"``zingyconn\.(\w+)``", forbidden.group(1))) if forbidden else set()
    assert not named & MAY_IMPORT[package]


def _tree_of(path: Path) -> Path:
    """Return the ``errors.py`` that draws the error tree of *path*: the nearest one in its package or above it."""
    for folder in path.parents:
        if (folder / "errors.py").exists():
            return folder / "errors.py"
    raise AssertionError(f"{path} is in no package with an errors.py")


@pytest.mark.parametrize("path", PROJECT_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_error_class_is_drawn_in_its_package_tree(path: Path) -> None:
    """Every ``*Error`` class appears in the tree drawn by the docstring of its package's ``errors.py``."""
    classes = [
        node.name
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        # An exception class has a base; ``RunError`` (an error as data on a run result) has none.
        if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and node.bases
    ]
    tree = _tree_of(path)
    drawn = ast.get_docstring(ast.parse(tree.read_text())) or ""
    missing = [name for name in classes if not re.search(rf"^ *[│├└─ ]*{name}\b", drawn, re.MULTILINE)]
    assert not missing, f"not drawn in the tree of {tree.relative_to(ROOT)}: {missing}"


def test_the_json_alias_is_defined_once() -> None:
    """``JSON = Any`` is spelled in one module (sandbox.environment); every other module imports it."""
    definitions = [
        str(path.relative_to(ROOT))
        for path in PROJECT_MODULES
        if re.search(r"^JSON(: TypeAlias)? = ", path.read_text(), re.MULTILINE)
    ]
    assert definitions == ["sandbox/environment.py"]


#: Loggers named other than by their module: streams that readers filter on by name.
NAMED_LOGGERS: Final = {"zingyconn.access"}


@pytest.mark.parametrize("path", PROJECT_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_loggers_are_named_by_their_module(path: Path) -> None:
    """A module's logger is ``_LOGGER: Final = logging.getLogger(__name__)`` (one spelling), or a named stream."""
    if path.name == "logs.py" and path.parent.name == "hosts":
        return  # the log stream's configuration names the libraries' loggers it routes
    source = path.read_text()
    calls = re.findall(r"logging\.getLogger\(([^)]*)\)", source)
    assert all(arg == "__name__" or arg.strip('"') in NAMED_LOGGERS for arg in calls), calls
    assigned = re.findall(r"^(\w+)(?:: Final)? = logging\.getLogger\(__name__\)$", source, re.MULTILINE)
    assert all(name == "_LOGGER" for name in assigned), assigned


#: What points at a document that is not in the repository: the project's own issue numbers, design notes, research
#: sections. (An upstream project's issue is named with its project: "RestrictedPython ... its issue #335".)
DANGLING_REFERENCE: Final = re.compile(r"\bissue \d+|\bDESIGN\.md|sandbox-lessons|research §|§ ?\d", re.IGNORECASE)


def test_nothing_points_outside_the_repository() -> None:
    """No module, page or setting refers to a design document, research note or issue number it does not hold."""
    texts = [p for tree in PROJECT_TREES for p in (ROOT / tree).rglob("*.py") if p != Path(__file__)]
    texts += [*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "pyproject.toml"]
    found = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in texts
        for match in DANGLING_REFERENCE.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not found


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


@pytest.mark.parametrize("module", ["supervisor", "pool"])
def test_sandbox_host_side_never_imports_the_child_side(module: str) -> None:
    """The host side shares constants with the zygote and its children through ``sandbox.protocol``, not their code."""
    offenders = _imported_modules(ROOT / "sandbox" / f"{module}.py") & {"sandbox.child", "sandbox.zygote"}
    assert not offenders, f"sandbox/{module}.py imports {sorted(offenders)}"


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
