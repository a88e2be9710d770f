"""Packaging keeps its promises: the wheel carries every file the package reads, the constraints file pins every
dependency within its bounds, and a backend whose optional client is missing stops with an error naming the extra."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from zingyconn.config import Settings
from zingyconn.database import create_engine
from zingyconn.errors import ConfigurationError
from zingyconn.hosts.cli import main
from zingyconn.tasks.backend import create_huey

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: Files the packages read at run time besides their modules: templates, static files (and the bundled editor's
#: licences), the demo's snippets.
DATA_SUFFIXES = {".html", ".css", ".js", ".typed", ".txt"}


def _pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("==", 1) for line in lines if "==" in line and not line.startswith("#")]
    return {canonicalize_name(name): version.strip() for name, version in pairs}


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    listed = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return [Requirement(text) for text in listed if not text.startswith(project["name"])]


@pytest.mark.parametrize("package", ["sandbox", "zingyconn"])
def test_package_data_covers_every_data_file(package: str) -> None:
    """Every template, static file and example snippet under a package matches one of its package-data globs
    (setuptools' own rule: globs relative to the package directory), so a wheel carries it."""
    directory = ROOT / package
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"][package]
    shipped = {path for pattern in patterns for path in directory.glob(pattern)}
    data = {path for path in directory.rglob("*") if path.suffix in DATA_SUFFIXES and path.is_file()}
    if package == "zingyconn":
        examples = set((directory / "examples").glob("*.py"))
        assert examples, "zingyconn/examples (a link to examples/) has no snippets"
        data |= examples
    assert sorted(map(str, data - shipped)) == []


def test_constraints_pin_every_dependency_within_its_bounds() -> None:
    """constraints.txt pins each dependency and extra of pyproject.toml at a version its specifier allows."""
    pins = _pins()
    unpinned = [str(r) for r in _requirements() if canonicalize_name(r.name) not in pins]
    outside = [f"{r} (pinned {pins[canonicalize_name(r.name)]})" for r in _requirements()
               if canonicalize_name(r.name) in pins and pins[canonicalize_name(r.name)] not in r.specifier]  # fmt: skip
    assert unpinned == []
    assert outside == []


def test_backend_clients_are_extras() -> None:
    """The embedded default installs lean: PostgreSQL's and Redis's clients are extras, not dependencies."""
    names = {Requirement(text).name for text in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert not {"psycopg", "redis"} & names
    assert [Requirement(text).name for text in extras["postgres"]] == ["psycopg"]
    assert [Requirement(text).name for text in extras["redis"]] == ["redis"]


def test_postgres_store_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL URL with psycopg not installed is a ConfigurationError naming zingyconn[postgres]."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what Python does for a module that is not installed
    with pytest.raises(ConfigurationError, match=re.escape("pip install 'zingyconn[postgres]'")):
        create_engine("postgresql+psycopg://zingy:secret@127.0.0.1:1/zingyconn")


def test_redis_queue_without_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A Redis queue URL with the redis client not installed is a ConfigurationError naming zingyconn[redis]."""
    monkeypatch.setitem(sys.modules, "redis", None)
    settings = Settings.from_env({"ZINGYCONN_DATA_DIR": str(tmp_path), "ZINGYCONN_QUEUE_URL": "redis://127.0.0.1:1/0"})
    with pytest.raises(ConfigurationError, match=re.escape("pip install 'zingyconn[redis]'")):
        create_huey(settings)


def test_cli_without_psycopg_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI turns the missing extra into one line on stderr and exit code 2, without a traceback or password."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    env = {"ZINGYCONN_DATA_DIR": str(tmp_path), "ZINGYCONN_DB_URL": "postgresql+psycopg://zingy:secret@127.0.0.1:1/z"}
    result = CliRunner().invoke(main, ["connections", "list"], env=env)
    assert result.exit_code == 2, result.output
    assert "zingyconn[postgres]" in result.output
    assert "secret" not in result.output
    assert "Traceback" not in result.output
