"""The snippet environment of a run: what it builds, and when (in-process, as the child runs it)."""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

from sandbox import Limits, RunContext, RunResult, compile_snippet
from sandbox.executor import execute
from zingyconn.egress.protocol import OP_CONNECT
from zingyconn.snippet.environment import environment
from zingyconn.twilio.client import BrokeredClient

ACCOUNT_SID = "AC" + "0" * 32


class _Host:
    """Answers a connection lookup as the broker does; any other request is a test failure."""

    def request(self, op: str, payload: Mapping[str, Any]) -> Any:
        assert op == OP_CONNECT, op
        return {"found": True, "account_sid": ACCOUNT_SID, "username": ACCOUNT_SID}


def _run_counting_client_classes(source: str) -> tuple[RunResult, int]:
    """Run *source* in a fresh environment; return its result and how many client classes it made."""
    gc.collect()
    gc.disable()  # a class is cyclic garbage: it stays in __subclasses__ until a collection, so none is missed
    try:
        before = len(BrokeredClient.__subclasses__())
        run_environment = environment(RunContext(host=_Host(), context={}))
        result = execute(compile_snippet(source), event=None, environment=run_environment, limits=Limits())
        return result, len(BrokeredClient.__subclasses__()) - before
    finally:
        gc.enable()


def test_a_run_that_uses_no_client_makes_no_client_class() -> None:
    """A TwiML reply never builds the run's twilio.rest.Client class (nor the façades that expose it)."""
    source = "from twilio.twiml.messaging_response import MessagingResponse\nreturn MessagingResponse()"
    result, made = _run_counting_client_classes(source)
    assert result.value == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    assert made == 0


def test_zingyconn_and_the_facades_share_the_runs_one_client_class() -> None:
    """zingyConn.twilio() clients are instances of the run's twilio.rest.Client, which twilio.Client aliases."""
    source = (
        "import twilio.rest\n"
        "client = zingyConn.twilio('main')\n"
        "return [isinstance(client, twilio.rest.Client), type(client) is twilio.rest.Client,"
        " twilio.Client is twilio.rest.Client]"
    )
    result, made = _run_counting_client_classes(source)
    assert result.value == [True, True, True], result.error
    assert made == 1
