"""What a hook's response may be served as, and the headers that keep it inert in a browser.

A hook's body is written by a tenant, so whoever opens its URL in a browser sees content a (possibly hostile)
tenant chose. Two defences, each enough on its own for the XSS it names:

- **Headers on every response of the hook origin** (:data:`HOOK_HEADERS`): ``nosniff`` stops a browser from
  guessing HTML out of ``text/plain``; ``Content-Security-Policy: sandbox`` gives the document an opaque origin
  with scripts, forms and plugins disabled, and ``default-src 'none'`` stops it loading anything (no stylesheet, no
  XSLT, no image beacon). Even a document that *is* rendered as markup runs nothing and reaches no cookie.
- **Only TwiML is served as XML** (:func:`is_twiml`): ``text/xml`` is what Twilio needs, and XML is where a
  browser renders active content (XHTML, SVG, an ``xml-stylesheet``). A string is TwiML only when it parses as XML
  without a DTD or entities (no XXE, no entity expansion: the parser stops at a DTD, entity declaration or external
  reference, the handlers ``defusedxml`` sets) and its root element is ``Response`` with no namespace anywhere.
  Anything else is ``text/plain``.
"""

from __future__ import annotations

from typing import Final, NoReturn
from xml.etree import ElementTree
from xml.etree.ElementTree import Element
from xml.parsers import expat

import defusedxml.ElementTree

#: Stops a browser from running a tenant's markup in any origin (see the module docstring).
HOOK_CSP: Final = "sandbox; default-src 'none'"
#: Sent on every response that is not the console's: the console sends its own, stricter-for-it, policy.
HOOK_HEADERS: Final = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": HOOK_CSP}

#: The content types a hook's string result is served as.
XML_TYPE: Final = "text/xml; charset=utf-8"
TEXT_TYPE: Final = "text/plain; charset=utf-8"

#: Longest string checked as TwiML. Twilio caps a TwiML response at 64 KiB; a longer XML-looking string is plain
#: text without being parsed, so the check's cost is bounded whatever a snippet returns.
MAX_TWIML_BYTES: Final = 64 * 1024


def is_twiml(text: str) -> bool:
    """Return whether *text* is a TwiML document: well-formed XML, no DTD, root ``Response``, no namespaces.

    A processing instruction other than the XML declaration (``<?xml-stylesheet ...?>``) also disqualifies it: a
    browser would fetch and apply that stylesheet.
    """
    stripped = text.lstrip()
    if not stripped.startswith(("<?xml", "<Response")) or len(stripped.encode()) > MAX_TWIML_BYTES:
        return False
    if "<?" in stripped[5:]:
        return False
    return _parses_as_twiml(stripped)


def _parses_as_twiml(text: str) -> bool:
    """Parse *text* with expat alone: well-formed, no DTD or entity, root ``Response``, no namespace anywhere.

    Not ``defusedxml.ElementTree``: it parses with ElementTree's pure-Python parser and builds a tree, more than
    twice the work on every webhook response, where the check needs neither. The refusals are the handlers
    ``defusedxml`` installs on the same expat parser; with namespace processing on, a name in a namespace arrives as
    ``uri}name`` (``}`` cannot occur in an XML name).
    """
    parser = expat.ParserCreate(namespace_separator="}")
    seen_root = False

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal seen_root
        if (not seen_root and name != "Response") or "}" in name or any("}" in key for key in attributes):
            raise expat.ExpatError("not TwiML: a namespace, or a root other than Response")
        seen_root = True

    def refuse(*_: object) -> NoReturn:
        raise expat.ExpatError("not TwiML: a DTD, an entity declaration or an external entity")

    parser.StartElementHandler = start
    # No DTD, so no entity is declared: nothing expands, and no external entity is fetched.
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(text, True)
    except (expat.ExpatError, ValueError):  # ExpatError: malformed, or refused above; ValueError: an encoding
        return False
    return True


def pretty_twiml(text: str) -> str:
    """Return TwiML *text* (already checked with :func:`is_twiml`) indented two spaces per level, for reading."""
    root: Element = defusedxml.ElementTree.fromstring(text.lstrip(), forbid_dtd=True)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode")


def media_type_of(text: str) -> str:
    """Return the content type a hook's string result is served with: XML for TwiML, else plain text."""
    return XML_TYPE if is_twiml(text) else TEXT_TYPE
