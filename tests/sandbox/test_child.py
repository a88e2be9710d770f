"""The child's handling of a run order, apart from the process around it."""

from __future__ import annotations

import base64

from sandbox.child import order_snippet
from sandbox.compiler import compile_snippet


def _order_text(source: str) -> str:
    return base64.b64encode(compile_snippet(source).to_bytes()).decode()


def test_an_instance_unmarshals_its_snippet_once() -> None:
    """The same snippet in consecutive orders is the same compiled object; another snippet is unmarshalled anew."""
    text = _order_text("return 1")
    first = order_snippet(text)
    assert order_snippet(text[:10] + text[10:]) is first  # an equal text, as a new order decodes it
    other = order_snippet(_order_text("return 2"))
    assert other is not first
    assert other.source == "return 2"
    assert order_snippet(text) is not first  # only the last one is kept
    assert order_snippet(text).source == "return 1"
