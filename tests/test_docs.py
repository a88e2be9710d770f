"""The documentation builds: ``mkdocs build --strict`` passes (no broken link, anchor or page left out of the nav),
and the README stays a short entry point whose links all reach a file of the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_pages import ROOT, read_page

#: The README is the entry point, not the manual: past this, text belongs on a topic page under docs/.
README_MAX_BYTES = 12 * 1024


@pytest.mark.slow
def test_mkdocs_builds_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` succeeds: every page is in the nav and every link and anchor resolves."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_readme_is_short() -> None:
    """The README stays an entry point; the details live on the topic pages."""
    assert len(read_page("README").encode()) <= README_MAX_BYTES


def test_readme_links_reach_files() -> None:
    """Every relative link of the README names a file of the repository (the docs site does not check the README)."""
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", read_page("README"))
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert targets
    assert missing == []
