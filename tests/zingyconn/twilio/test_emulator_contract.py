"""The emulator against the OpenAPI contract: random create/list input never yields 5xx, only resources or errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts.refresh_twilio_spec import NOTE_FIELD, extract
from tests.emulator import (
    MAGIC_SENDER,
    RECIPIENT,
    SPEC_PATH,
    Emulator,
    ResponseRecord,
    check_response,
    running_emulator,
)

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
phone = st.one_of(
    st.sampled_from([RECIPIENT, MAGIC_SENDER, "+15005550001", "+15005550007", "+15005550009", "+15005551004"]),
    st.from_regex(r"\+[0-9]{1,16}", fullmatch=True),
    st.from_regex(r"whatsapp:\+1[0-9]{10}", fullmatch=True),
    text,
)
url = st.one_of(st.sampled_from(["https://example.com/a.png", "http://127.0.0.1:1/cb", "ftp://x/y"]), text)
timestamp = st.one_of(
    st.sampled_from(["2026-01-01T01:00:00Z", "2026-01-01", "2027-01-01T00:00:00+02:00"]),
    st.datetimes().map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")),
    text,
)
CREATE_FIELDS = {
    "To": phone,
    "From": phone,
    "Body": st.one_of(text, st.text(max_size=2000)),
    "MessagingServiceSid": st.one_of(st.just("MG" + "c" * 32), text),
    "StatusCallback": url,
    "ScheduleType": st.one_of(st.just("fixed"), text),
    "SendAt": timestamp,
    "ContentSid": st.just("HX" + "0" * 32),
    "ValidityPeriod": st.one_of(st.integers(-5, 40000).map(str), text),
    "ProvideFeedback": st.sampled_from(["true", "false", "maybe"]),
}
create_form = st.tuples(
    st.dictionaries(st.sampled_from(sorted(CREATE_FIELDS)), st.just(None)).flatmap(
        lambda chosen: st.fixed_dictionaries({name: CREATE_FIELDS[name] for name in chosen})
    ),
    st.lists(url, max_size=12),
).map(lambda parts: [*parts[0].items(), *(("MediaUrl", media) for media in parts[1])])
list_query = st.fixed_dictionaries(
    {},
    optional={
        "To": phone,
        "From": phone,
        "DateSent": timestamp,
        "DateSent<": timestamp,
        "DateSent>": timestamp,
        "PageSize": st.one_of(st.integers(-2, 1200).map(str), text),
        "Page": st.one_of(st.integers(-2, 5).map(str), text),
        "PageToken": st.one_of(st.just("PA" + "0" * 32), text),
    },
)


@pytest.fixture(scope="module")
def shared() -> Iterator[Emulator]:
    """One emulator for the property tests (Hypothesis runs many examples per test)."""
    with running_emulator() as running:
        yield running


@pytest.fixture(scope="module")
def http(shared: Emulator) -> Iterator[httpx.Client]:
    """One keep-alive HTTP client with the account's credentials (fast: no new connection per example)."""
    with httpx.Client(base_url=shared.base_url, auth=(shared.account_sid, shared.auth_token)) as client:
        yield client


def _checked(emulator: Emulator, response: httpx.Response, method: str) -> None:
    assert response.status_code < 500, response.text
    assert response.status_code in {200, 201, 400}, response.text
    check_response(ResponseRecord(method, response.request.url.path, response.status_code, response.content))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(form=create_form)
def test_random_creates_answer_a_valid_message_or_a_twilio_error(
    shared: Emulator, http: httpx.Client, form: list[tuple[str, str]]
) -> None:
    """Whatever the create form, the answer is a 201 Message matching the spec or a Twilio-shaped 400 error."""
    response = http.post(
        shared.messages_path,
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    _checked(shared, response, "POST")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=list_query, advance=st.sampled_from([0, 1, 3600]))
def test_random_lists_answer_a_valid_page_or_a_twilio_error(
    shared: Emulator, http: httpx.Client, query: dict[str, str], advance: int
) -> None:
    """Whatever the list query, the answer is a 200 page matching the spec or a Twilio-shaped 400 error."""
    shared.state.advance(advance)
    response = http.get(shared.messages_path, params=query)

    _checked(shared, response, "GET")


def test_every_response_of_the_property_tests_was_checked(shared: Emulator) -> None:
    """All responses recorded by the server side also pass the contract (including any the tests did not see)."""
    assert shared.responses
    for response in shared.responses:
        check_response(response)


def test_contract_extract_is_what_the_refresh_script_keeps() -> None:
    """The Messages extract holds the paths the emulator implements and exactly the schemas they reference: what
    ``scripts/refresh_twilio_spec.py`` writes from Twilio's whole spec (nothing missing, nothing left over)."""
    document = json.loads(SPEC_PATH.read_text(encoding="utf-8"))

    assert extract(document, note=document["info"][NOTE_FIELD]) == document
    assert "MIT licence" in document["info"][NOTE_FIELD]
    assert (SPEC_PATH.parent / "TWILIO_OAI_LICENSE").read_text(encoding="utf-8").startswith("MIT License")


def test_the_contract_check_rejects_a_wrong_body() -> None:
    """The contract check is not vacuous: a message with a numeric num_segments or a bad date fails it."""
    good = {"sid": "SM" + "0" * 32, "num_segments": "1", "date_created": "Thu, 01 Jan 2026 00:00:00 +0000"}
    path = "/2010-04-01/Accounts/AC" + "0" * 32 + "/Messages/SM" + "0" * 32 + ".json"
    full = dict.fromkeys(("date_sent", "date_updated")) | good
    check_response(ResponseRecord("GET", path, 200, json.dumps(full).encode()))
    for bad in ({"num_segments": 1}, {"date_created": "2026-01-01T00:00:00Z"}, {"status": "exploded"}):
        with pytest.raises(Exception):  # noqa: B017, PT011  # jsonschema ValidationError or AssertionError
            check_response(ResponseRecord("GET", path, 200, json.dumps(full | bad).encode()))
    with pytest.raises(AssertionError):
        check_response(ResponseRecord("GET", path, 400, b'{"code": 1, "message": "x", "status": 400}'))


def _examples(method: str, template: str, status: str) -> dict[str, Any]:
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    content = spec["paths"][template][method]["responses"][status]["content"]["application/json"]
    return {name: example["value"] for name, example in content["examples"].items()}


def test_created_message_has_exactly_the_fields_of_twilios_example(shared: Emulator, http: httpx.Client) -> None:
    """A created message carries the same field names as the spec's ``create`` example, no more, no fewer."""
    example = _examples("post", "/2010-04-01/Accounts/{AccountSid}/Messages.json", "201")["create"]
    response = http.post(shared.messages_path, data={"To": RECIPIENT, "From": MAGIC_SENDER, "Body": "x"})

    assert set(response.json()) == set(example)


@pytest.mark.parametrize(
    "example",
    sorted(_examples("get", "/2010-04-01/Accounts/{AccountSid}/Messages.json", "200")),
)
def test_list_queries_of_the_spec_examples_are_understood(shared: Emulator, http: httpx.Client, example: str) -> None:
    """Each example's ``uri`` (its filters, in each date format Twilio shows) is answered 200 with the same paging."""
    value = _examples("get", "/2010-04-01/Accounts/{AccountSid}/Messages.json", "200")[example]
    query = value["uri"].partition("?")[2]

    response = http.get(f"{shared.messages_path}?{query}")

    assert response.status_code == 200, response.text
    assert response.json()["uri"].partition("?")[2] == query
    assert set(response.json()) == set(value)
