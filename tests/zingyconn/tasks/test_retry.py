"""Retries by cause: Twilio's 429/5xx and lost connections are retried with jittered backoff; the rest is not."""

from __future__ import annotations

from typing import Any

import pytest

from zingyconn.tasks.retry import Backoff, is_transient

SNIPPET_ERROR = {"type": "SnippetError", "message": "HTTP 429 error", "exception": "TwilioRestException"}
POST = {"method": "POST", "host": "api.twilio.com", "path": "/2010-04-01/Accounts/AC1/Messages.json"}


def _denied(message: str, outcome: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The error and egress of a run that ended on a request the broker recorded with *outcome*."""
    record: dict[str, Any] = {**POST, "status": None, "error": f"EgressDeniedError: {message}", "outcome": outcome}
    if outcome in {"no_answer", "timed_out", "platform_fault"}:
        record["retryable"] = True
    return {"type": "EgressDeniedError", "message": message}, [record]


@pytest.mark.parametrize(
    ("error", "egress", "transient"),
    [
        pytest.param(SNIPPET_ERROR, [{**POST, "status": 429}], True, id="429"),
        pytest.param(SNIPPET_ERROR, [{**POST, "status": 503}], True, id="503"),
        pytest.param(SNIPPET_ERROR, [{**POST, "status": 201}], False, id="error-after-success"),
        pytest.param(SNIPPET_ERROR, [{**POST, "status": 400}], False, id="400"),
        pytest.param(SNIPPET_ERROR, [], False, id="no-egress"),
        pytest.param(*_denied("The request failed: ConnectError.", "no_answer"), True, id="connection-failed"),
        pytest.param(*_denied("The request timed out after 3.0 s.", "timed_out"), True, id="timeout"),
        pytest.param(*_denied("The platform could not record this send.", "platform_fault"), True, id="store-down"),
        pytest.param(*_denied("Host 'evil.example' is not allowed.", "refused"), False, id="refused"),
        pytest.param(
            *_denied("The request failed: it timed out.", "refused"), False, id="refusal-worded-like-a-failure"
        ),
        pytest.param(
            {"type": "TimeLimitExceededError", "message": "10 s"}, [{**POST, "status": 429}], False, id="limit"
        ),
        pytest.param({"type": "QuotaExceededError", "message": "50"}, [{**POST, "status": 201}], False, id="quota"),
        pytest.param({"type": "WorkerCrashedError", "message": "zygote died"}, [], True, id="crash"),
        pytest.param(None, [{**POST, "status": 429}], False, id="success"),
    ],
)
def test_is_transient_by_cause(error: dict[str, Any] | None, egress: list[dict[str, Any]], transient: bool) -> None:
    """Only failures a later attempt may cure are retried."""
    assert is_transient(error, egress) is transient


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    """Attempt n waits between half and all of base * factor**(n-1), never more than the cap."""
    backoff = Backoff(base_seconds=2.0, factor=4.0, cap_seconds=60.0)
    assert backoff.delay(1, rand=lambda: 1.0) == 2.0
    assert backoff.delay(1, rand=lambda: 0.0) == 1.0
    assert backoff.delay(3, rand=lambda: 1.0) == 32.0
    assert backoff.delay(9, rand=lambda: 1.0) == 60.0
