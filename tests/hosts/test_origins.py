"""Hook responses are inert in a browser; the console can live on its own origin (``serve --console-port``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import defusedxml.ElementTree
import httpx
import pytest
from defusedxml import DefusedXmlException
from hypothesis import given
from hypothesis import strategies as st

from tests.servers import free_port, wait_for_port
from zingyconn.hosts.content import HOOK_CSP, MAX_TWIML_BYTES, is_twiml

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Thanks!</Message></Response>'


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(TWIML, id="declaration"),
        pytest.param("<Response/>", id="bare"),
        pytest.param("  <Response><Say voice='alice'>hi &amp; bye</Say></Response>", id="attributes-entities"),
    ],
)
def test_twiml_documents_are_twiml(text: str) -> None:
    """A Response-rooted document without namespaces or DTD is TwiML (served as text/xml)."""
    assert is_twiml(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><script/></html>', id="xhtml"),
        pytest.param('<Response xmlns="http://www.w3.org/1999/xhtml"/>', id="response-in-xhtml-namespace"),
        pytest.param('<Response xmlns:h="http://www.w3.org/1999/xhtml"><h:script/></Response>', id="xhtml-child"),
        pytest.param('<Response><a xmlns:x="urn:x" x:href="y"/></Response>', id="namespaced-attribute"),
        pytest.param('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script/></svg>', id="svg"),
        pytest.param('<?xml version="1.0"?><?xml-stylesheet href="x.xsl"?><Response/>', id="stylesheet"),
        pytest.param(
            '<?xml version="1.0"?><!DOCTYPE Response [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response>&x;</Response>',
            id="xxe",
        ),
        pytest.param(
            '<!DOCTYPE Response [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><Response>&b;</Response>',
            id="entity-expansion",
        ),
        pytest.param("<!DOCTYPE Response><Response/>", id="doctype"),
        pytest.param("<Response>&nbsp;</Response>", id="undefined-entity"),
        pytest.param("<x:Response xmlns:x='urn:x'/>", id="prefixed-root"),
        pytest.param("<Response/><Response/>", id="two-roots"),
        pytest.param("<Response><Message>unclosed</Response>", id="malformed"),
        pytest.param("<Response>" + "x" * MAX_TWIML_BYTES + "</Response>", id="too-large"),
        pytest.param("plain text", id="text"),
    ],
)
def test_anything_else_xml_ish_is_not_twiml(text: str) -> None:
    """XHTML, SVG, namespaces, stylesheets, DTDs (XXE, entity bombs) and malformed XML are plain text."""
    assert not is_twiml(text)


#: What the property test below builds documents from: names, attributes and contents with and without
#: namespaces, entities and DTDs, each one that TwiML allows or one that rules it out.
NAMES = ["Response", "Response", "Message", "Say", "h:script", "x:Response"]
ATTRIBUTES = ["", " a='1'", " xmlns:h='urn:h' h:href='z'", " xmlns='urn:y'", " xmlns=''", " xmlns:h='urn:h'",
              " xmlns:x='urn:x'", " h:href='z'"]  # fmt: skip
#: Mostly what TwiML may hold, so that most documents parse and the namespace rule decides.
TEXTS = ["hi", "hi", "&amp;", "&#60;", "<![CDATA[<b>]]>", "<!-- c -->", "&x;", "<?pi x?>"]
PROLOGS = ["", "", "<?xml version='1.0'?>", "<?xml version='1.0'?><!DOCTYPE Response>",
           "<?xml version='1.0'?><!DOCTYPE Response [<!ENTITY x 'y'>]>"]  # fmt: skip
TRAILERS = ["", "", "", "<Response/>", "<!-- end -->"]


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def build(name: str, attributes: list[str], inner: list[str]) -> str:
        opening = f"<{name}{''.join(attributes)}"
        return f"{opening}>{''.join(inner)}</{name}>" if inner else f"{opening}/>"

    return st.builds(build, st.sampled_from(NAMES), st.lists(st.sampled_from(ATTRIBUTES), max_size=2),
                     st.lists(children, max_size=3))  # fmt: skip


DOCUMENTS = st.builds(
    lambda prolog, root, trailer: prolog + root + trailer,
    st.sampled_from(PROLOGS),
    _element(st.recursive(st.sampled_from(TEXTS), _element, max_leaves=6)),
    st.sampled_from(TRAILERS),
)


def _defusedxml_says_twiml(text: str) -> bool:
    """What is_twiml decided with defusedxml's ElementTree: the parse, then the root and namespace rule."""
    try:
        root = defusedxml.ElementTree.fromstring(text, forbid_dtd=True)
    except (DefusedXmlException, SyntaxError, ValueError):
        return False
    names = [name for element in root.iter() for name in (element.tag, *element.attrib)]
    return root.tag == "Response" and not any(name.startswith("{") for name in names)


@given(DOCUMENTS)
def test_the_twiml_check_agrees_with_defusedxml(text: str) -> None:
    """A document is TwiML exactly when defusedxml parses it into a Response without namespaces (and no PI)."""
    assert is_twiml(text) == ("<?" not in text[5:] and _defusedxml_says_twiml(text))


def test_console_on_its_own_port_is_a_separate_origin(tmp_path: Path) -> None:
    """With --console-port the console answers only there (with its CSP) and hooks only on --port."""
    env = {**os.environ, "ZINGYCONN_DATA_DIR": str(tmp_path / "data"), "ZINGYCONN_ADMIN_TOKEN": "operator-token"}
    env.pop("ZINGYCONN_DB_URL", None)
    snippet = tmp_path / "reply.py"
    snippet.write_text("return 'hello'\n")
    cli = [sys.executable, "-m", "zingyconn"]
    subprocess.run([*cli, "hooks", "add", "hi", "--tenant", "acme", "--file", str(snippet)], env=env, check=True)
    port, console_port = free_port(), free_port()
    process = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--console-port", str(console_port), "--no-tasks", "--no-access-log"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout_seconds=60)
        hooks, console = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{console_port}"
        hook = httpx.post(f"{hooks}/hooks/acme/hi", timeout=30)
        hook_on_console = httpx.post(f"{console}/hooks/acme/hi", timeout=30)
        login = httpx.get(f"{console}/console/login", timeout=30)
        login_on_hooks = httpx.get(f"{hooks}/console/login", timeout=30)
        health = [httpx.get(f"{base}/healthz", timeout=30).status_code for base in (hooks, console)]
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)

    assert (hook.status_code, hook.text) == (200, "hello")
    assert (hook.headers["content-security-policy"], hook.headers["x-content-type-options"]) == (HOOK_CSP, "nosniff")
    assert (login.status_code, "script-src 'self'" in login.headers["content-security-policy"]) == (200, True)
    assert login.headers["x-frame-options"] == "DENY"
    assert (hook_on_console.status_code, login_on_hooks.status_code, health) == (404, 404, [200, 200])
    assert b"Traceback" not in stderr


def test_console_port_must_differ_from_the_hooks_port(tmp_path: Path) -> None:
    """The same address for both is refused before anything starts (the console would share the hooks' origin)."""
    env = {**os.environ, "ZINGYCONN_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "zingyconn", "serve", "--port", "8123", "--console-port", "8123"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "--console-port" in result.stderr
    assert "Traceback" not in result.stderr
