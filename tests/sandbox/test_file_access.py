"""The zygote's Landlock ruleset, seen from a run: world-readable files outside Python are closed, modules are not.

The reads go through a test-only environment (native ``open``, as a language escape would have). Every path the
tests expect to be refused is readable by the child's uid without Landlock, so they fail if the ruleset is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
import tempfile
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Limits, Sandbox
from sandbox.file_access import landlock_abi, readable_paths
from tests.sandbox.hooks import ENVIRONMENT
from tests.sandbox.test_bombs import assert_still_works

LIMITS = Limits(wall_seconds=5, cpu_seconds=5)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One warm sandbox with the test hooks for the module; skipped where the kernel has no Landlock."""
    with Sandbox(environment=ENVIRONMENT) as sandbox:
        if sandbox.hardening["file_access"] != "active":
            pytest.skip(f"file_access is {sandbox.hardening['file_access']}")
        yield sandbox


@pytest.fixture
def world_readable_file() -> Iterator[str]:
    """A file any uid may read, in /tmp (where another tenant's or the host's temporary files would be)."""
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="zingyconn-landlock-") as file:
        file.write(b"not for snippets")
        file.flush()
        os.chmod(file.name, 0o644)
        yield file.name


def test_world_readable_files_outside_python_cannot_be_opened(sandbox: Sandbox, world_readable_file: str) -> None:
    """The host's command line, other processes' /proc files, /etc and /tmp: EACCES, though the uid could read them."""
    paths = [f"/proc/{os.getpid()}/cmdline", "/proc/1/cmdline", "/proc/self/status", "/etc/passwd", world_readable_file]

    result = sandbox.run("return [read_file(path) for path in event['paths']]", event={"paths": paths}, limits=LIMITS)

    assert result.ok, result.error
    assert result.value == ["EACCES"] * len(paths)
    assert_still_works(sandbox)


def test_libraries_time_zones_and_random_stay_readable(sandbox: Sandbox) -> None:
    """The shared libraries, the time zone database (a zone no run loaded before) and /dev/urandom stay open."""
    paths = ["/etc/ld.so.cache", ctypes.util.find_library("c") or "libc.so.6", "/dev/urandom"]
    paths[1] = next(str(p) for p in Path("/usr/lib").rglob(paths[1]) if p.is_file())

    result = sandbox.run("return [read_file(path) for path in event['paths']]", event={"paths": paths}, limits=LIMITS)
    zone = sandbox.run("from zoneinfo import ZoneInfo\nreturn str(ZoneInfo('Pacific/Chatham'))", limits=LIMITS)

    assert (result.ok, result.value) == (True, ["ok"] * len(paths)), result.error
    assert (zone.ok, zone.value) == (True, "Pacific/Chatham"), zone.error


def test_a_module_beneath_sys_path_is_imported_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module the zygote did not preload, in a world-readable directory on the host's sys.path, imports in a run.

    (This machine's Python lives under /root, which no child uid may enter: a directory of the test's own stands in.)
    """
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="zingyconn-modules-") as directory:
        os.chmod(directory, 0o755)
        module = Path(directory, "landlock_lazy_module.py")
        module.write_text("ANSWER = 42\n")
        module.chmod(0o644)
        monkeypatch.syspath_prepend(directory)  # the zygote starts with the host's sys.path
        with Sandbox(environment=ENVIRONMENT) as fresh:
            if fresh.hardening["file_access"] != "active":
                pytest.skip(f"file_access is {fresh.hardening['file_access']}")
            result = fresh.run("return import_module('landlock_lazy_module')", limits=LIMITS)

    assert (result.ok, result.value) == (True, str(module)), result.error


def test_readable_paths_are_sys_path_time_zones_and_libraries() -> None:
    """Each existing sys.path entry and time zone directory is covered; nothing as broad as / or /proc is."""
    paths = readable_paths()

    for entry in (*filter(None, sys.path), *zoneinfo.TZPATH):
        if os.path.exists(entry):
            assert os.path.realpath(entry) in paths
    assert not {"/", "/proc", "/etc", "/tmp", "/home", "/root"} & set(paths) or "/tmp" in sys.path


def test_a_kernel_without_landlock_is_an_os_error_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSYS from landlock_create_ruleset becomes a message naming what is missing (the step is then unavailable)."""

    def no_landlock(*args: object) -> int:
        ctypes.set_errno(errno.ENOSYS)
        return -1

    monkeypatch.setattr("sandbox.file_access._syscall", no_landlock)
    with pytest.raises(OSError, match="this kernel has no Landlock"):
        landlock_abi()
