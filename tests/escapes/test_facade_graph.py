"""No module, frame, code object, builtins or real globals is reachable from any stdlib façade (depth 6)."""

from __future__ import annotations

import builtins
import codecs
import json
import types

import pytest

from sandbox.imports import STDLIB_MODULES, Importer, stdlib_facades
from tests.escapes.graph import assert_no_escape_reachable, reachable_escapes


@pytest.mark.parametrize("name", sorted(STDLIB_MODULES))
def test_stdlib_facade_reaches_no_escape(name: str) -> None:
    """Walking the façade's public attributes through the guard to depth 6 finds nothing dangerous."""
    visited = assert_no_escape_reachable(stdlib_facades()[name], depth=6)
    assert visited >= 2


def test_package_facade_reaches_no_escape() -> None:
    """The ``urllib`` package object that ``import urllib.parse`` binds is as clean as its parts."""
    assert_no_escape_reachable(Importer()("urllib.parse"), depth=6)


def test_walker_finds_a_module_one_hop_away() -> None:
    """The walker really reports escapes (so a clean walk means something)."""
    leaky = types.SimpleNamespace(codec=codecs, safe=1)
    escapes, _ = reachable_escapes(leaky, depth=2)
    assert escapes == ["root.codec -> module 'codecs'"]


def test_walker_finds_builtins_and_globals_behind_containers() -> None:
    """Builtins and a module's globals are reported when a read-only mapping exposes them."""
    leaky = types.SimpleNamespace(table=types.MappingProxyType({"b": builtins.__dict__, "g": vars(json)}))
    escapes, _ = reachable_escapes(leaky, depth=3)
    assert sorted(escapes) == ["root.table.['b'] -> builtins", "root.table.['g'] -> a module's globals"]


def test_walker_respects_hidden_attributes() -> None:
    """Attributes an environment hides are not walked (so H5's client policy can be checked with the same walk)."""

    class Holder:
        def __init__(self) -> None:
            self.secret = codecs

    assert reachable_escapes(Holder(), depth=2)[0] == ["root.secret -> module 'codecs'"]
    assert reachable_escapes(Holder(), depth=2, hidden={Holder: frozenset({"secret"})})[0] == []
