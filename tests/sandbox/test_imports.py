"""Imports: the allowlist, façades instead of modules, ``fromlist`` checked, packages composed."""

from __future__ import annotations

import json
import types

import pytest

from sandbox.environment import LazyModule
from sandbox.imports import STDLIB_MODULES, Facade, Importer, check_imports, make_facade, stdlib_facades


def test_every_allowed_module_has_a_facade() -> None:
    """Each module of the allowlist is handed out as a Facade, never a module."""
    facades = stdlib_facades()
    assert sorted(facades) == sorted(STDLIB_MODULES)
    assert all(isinstance(f, Facade) for f in facades.values())


def test_facade_exposes_public_names_but_no_modules() -> None:
    """A façade has the module's public functions and classes and none of its module-valued attributes."""
    facade = make_facade(json)
    assert facade.dumps is json.dumps
    assert sorted(dir(facade)) == sorted(json.__all__)
    with pytest.raises(AttributeError, match="module 'json' has no attribute 'codecs' in snippets"):
        _ = facade.codecs


def test_facade_is_read_only() -> None:
    """Assigning or deleting a façade attribute raises TypeError."""
    facade = make_facade(json)
    with pytest.raises(TypeError, match="Changing attribute 'dumps' of module 'json'"):
        facade.dumps = len
    with pytest.raises(TypeError, match="Deleting attribute 'dumps'"):
        del facade.dumps


def test_facade_freezes_mutable_constants() -> None:
    """Lists, sets and dicts in a module become tuple, frozenset and a read-only mapping."""
    module = types.SimpleNamespace(__name__="m", items=[1], tags={"a"}, table={"k": 1})
    facade = make_facade(module, ["items", "tags", "table"])
    assert (facade.items, facade.tags) == ((1,), frozenset({"a"}))
    assert isinstance(facade.table, types.MappingProxyType)


def test_facade_overrides_and_explicit_names_are_checked() -> None:
    """Overrides replace values; asking for a private name or a module-valued name is a host error."""
    facade = make_facade(json, [], overrides={"Client": dict})
    assert facade.Client is dict
    with pytest.raises(ValueError, match="names starting with '_' stay private"):
        make_facade(json, ["_default_encoder"])
    with pytest.raises(ValueError, match="it is module 'codecs'"):
        make_facade(json, ["codecs"])


def test_string_facade_has_no_formatter() -> None:
    """``string`` exposes its constants, capwords and Template, not Formatter (CVE-2023-41039, CVE-2026-76825)."""
    facade = stdlib_facades()["string"]
    assert facade.ascii_lowercase == "abcdefghijklmnopqrstuvwxyz"
    assert not hasattr(facade, "Formatter")


def test_import_of_a_disallowed_module_names_the_allowed_ones() -> None:
    """The ImportError names the module and lists every allowed module."""
    importer = Importer()
    with pytest.raises(ImportError) as info:
        importer("os")
    assert (
        str(info.value) == f"Import of 'os' is not allowed in snippets. Allowed modules: {', '.join(importer.allowed)}."
    )
    assert "json" in importer.allowed


def test_dotted_import_binds_a_package_with_the_submodule() -> None:
    """``import urllib.parse`` returns a ``urllib`` package whose ``parse`` is the façade."""
    importer = Importer()
    package = importer("urllib.parse")
    assert package.parse is stdlib_facades()["urllib.parse"]  # type: ignore[attr-defined]  # a façade
    assert importer("urllib.parse", fromlist=("quote",)) is stdlib_facades()["urllib.parse"]


def test_fromlist_is_checked() -> None:
    """``from m import name`` fails for names the façade does not expose."""
    importer = Importer()
    with pytest.raises(ImportError, match="cannot import name 'decoder' from 'json' in snippets"):
        importer("json", fromlist=("decoder",))
    with pytest.raises(ImportError, match="cannot import name '_default_encoder'"):
        importer("json", fromlist=("_default_encoder",))


def test_relative_import_is_refused() -> None:
    """A non-zero level is refused even if the compiler let it through."""
    with pytest.raises(ImportError, match="Relative imports"):
        Importer()("json", level=1)


def test_environment_modules_add_to_the_allowlist() -> None:
    """Environment.modules become importable next to the stdlib, composing packages by dotted name."""
    twiml = make_facade(types.SimpleNamespace(__name__="vendor.twiml", Response=dict), ["Response"])
    importer = Importer({"vendor": make_facade(json, ["dumps"], label="vendor"), "vendor.twiml": twiml})
    assert "vendor.twiml" in importer.allowed
    vendor = importer("vendor.twiml")
    assert vendor.twiml is twiml  # type: ignore[attr-defined]  # a package façade
    assert vendor.dumps is json.dumps  # type: ignore[attr-defined]
    assert importer("vendor.twiml", fromlist=("Response",)).Response is dict  # type: ignore[attr-defined]


def test_environment_modules_must_be_facades() -> None:
    """A real module in Environment.modules is a host bug, refused up front."""
    with pytest.raises(ValueError, match="must be a façade, not module 'json'"):
        Importer({"json2": json})


def test_lazy_module_is_built_on_the_runs_first_import_once() -> None:
    """A LazyModule is built when a run first imports it, once per run, and never by a run that does not import it."""
    built: list[Facade] = []

    def build() -> Facade:
        built.append(make_facade(json, ["dumps"], label="vendor"))
        return built[-1]

    modules = {"vendor": LazyModule(build)}
    importer = Importer(modules)
    assert built == []
    assert importer("vendor") is built[0]
    assert importer("vendor", fromlist=("dumps",)) is built[0]
    assert len(built) == 1
    Importer(modules)("vendor")  # the next run builds its own
    assert len(built) == 2
    assert built[1] is not built[0]


def test_lazy_module_is_checked_when_built() -> None:
    """A LazyModule that builds a real module is refused at the import, as a module given directly is up front."""
    importer = Importer({"json2": LazyModule(lambda: json)})
    with pytest.raises(ValueError, match="must be a façade, not module 'json'"):
        importer("json2")


def test_public_classes_include_those_of_lazy_modules() -> None:
    """What type(x) may hand out as itself counts the classes of modules the run has not imported yet."""

    class Widget:
        pass

    importer = Importer({"vendor": LazyModule(lambda: make_facade(types.SimpleNamespace(Widget=Widget), label="v"))})
    assert Widget in importer.public_classes()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param("import os\nreturn 1", ["Line 1: Import of 'os'"], id="plain-import"),
        pytest.param("x = 1\nfrom subprocess import run", ["Line 2: Import of 'subprocess'"], id="from-import"),
        pytest.param("import json, requests.sessions", ["Line 1: Import of 'requests.sessions'"], id="one-of-several"),
        pytest.param("def f():\n    import socket\nreturn f", ["Line 2: Import of 'socket'"], id="nested-in-function"),
        pytest.param("import json\nimport urllib.parse\nfrom urllib import parse\nreturn 1", [], id="allowed-ones"),
    ],
)
def test_check_imports_reports_what_the_importer_would_refuse(source: str, expected: list[str]) -> None:
    """check_imports names the line and module of every import the run-time importer would refuse."""
    errors = check_imports(source, list(STDLIB_MODULES))
    assert [error.split(" is not allowed")[0] for error in errors] == expected
    assert all("Allowed modules: base64, collections" in error for error in errors)
