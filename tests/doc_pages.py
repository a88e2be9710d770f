"""The documentation pages the doc tests read: ``README.md`` and the topic pages under ``docs/``.

A page marks the parts tests check with ``<!-- section: NAME -->``; a section runs to the next marker or the page's
end, so a test keeps checking the same text wherever the page that holds it moves.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def read_page(name: str) -> str:
    """Return the text of ``docs/NAME.md`` (or of ``README.md`` for ``"README"``)."""
    path = ROOT / "README.md" if name == "README" else DOCS / f"{name}.md"
    return path.read_text(encoding="utf-8")


def read_section(page: str, name: str) -> str:
    """Return the ``<!-- section: NAME -->`` part of a page, from its marker to the next marker or the page's end."""
    text = read_page(page)
    marker = f"<!-- section: {name} -->"
    assert marker in text, f"{page} has no {marker!r}"
    start = text.index(marker)
    end = text.find("<!-- section:", start + 1)
    return text[start : end if end != -1 else None]


def read_all_pages() -> str:
    """Return the README and every topic page, joined: what a reader of the documentation can find."""
    return "\n".join([read_page("README"), *(path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md")))])
