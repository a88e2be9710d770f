"""Tests of zingyconn.twilio.profile: validation, masking, the client it builds, and the credential check."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.emulator import Emulator
from tests.servers import free_port
from zingyconn.errors import InvalidConnectionError, TwilioError, ZingyConnError
from zingyconn.twilio.profile import TwilioProfile
from zingyconn.twilio.verify import BaseUrlHttpClient, check_credentials

HEX = "0123456789abcdef"
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
API_KEY = "SK" + "fedcba9876543210" * 2
AUTH_TOKEN = "a1b2c3d4" * 4
API_SECRET = "Zx9" * 10 + "Q1"


def _hex32() -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=32, max_size=32)


@st.composite
def profiles(draw: st.DrawFn) -> TwilioProfile:
    """Arbitrary valid Twilio profiles: Auth Token ones and API key ones."""
    account_sid = "AC" + draw(_hex32())
    if draw(st.booleans()):
        return TwilioProfile(account_sid=account_sid, api_key=None, secret=draw(_hex32()))
    secret = draw(st.text(ALNUM, min_size=32, max_size=32))
    return TwilioProfile(account_sid=account_sid, api_key="SK" + draw(_hex32()), secret=secret)


@given(profiles())
def test_generated_profiles_are_valid(profile: TwilioProfile) -> None:
    """Every well-formed profile validates and round-trips through its JSON form."""
    assert profile.validate() is profile
    assert TwilioProfile.from_json(profile.to_json()) == profile


@pytest.mark.parametrize(
    ("profile", "field", "message"),
    [
        pytest.param(
            TwilioProfile("AC123", None, AUTH_TOKEN), "account_sid", "'AC' followed by 32 hex", id="short-sid"
        ),
        pytest.param(TwilioProfile(API_KEY, None, AUTH_TOKEN), "account_sid", "did you swap", id="key-as-sid"),
        pytest.param(
            TwilioProfile(ACCOUNT_SID.upper().replace("AC", "AC", 1), None, AUTH_TOKEN),
            "account_sid",
            "lowercase",
            id="uppercase-sid",
        ),
        pytest.param(TwilioProfile(ACCOUNT_SID + " ", None, AUTH_TOKEN), "account_sid", "whitespace", id="space"),
        pytest.param(TwilioProfile(ACCOUNT_SID, ACCOUNT_SID, API_SECRET), "api_key", "did you swap", id="sid-as-key"),
        pytest.param(
            TwilioProfile(ACCOUNT_SID, None, ""), "secret", "secret is required: give the Auth Token", id="no-token"
        ),
        pytest.param(TwilioProfile(ACCOUNT_SID, API_KEY, ""), "secret", "give the API Key Secret", id="no-key-secret"),
        pytest.param(
            TwilioProfile(ACCOUNT_SID, None, "Zx9" * 10 + "Q1"),
            "secret",
            "32 hex digits (32 characters",
            id="token-not-hex",
        ),
        pytest.param(
            TwilioProfile(ACCOUNT_SID, API_KEY, "short"),
            "secret",
            "32 letters and digits (5 characters",
            id="short-key-secret",
        ),
        pytest.param(TwilioProfile(ACCOUNT_SID, None, ACCOUNT_SID), "secret", "looks like a SID", id="sid-as-secret"),
    ],
)
def test_invalid_profiles_name_the_field_and_what_to_do(profile: TwilioProfile, field: str, message: str) -> None:
    """Each malformed field gets an InvalidConnectionError naming it, with where to find the right value."""
    with pytest.raises(InvalidConnectionError, match=re.escape(message)) as caught:
        profile.validate()
    assert caught.value.field == field
    assert "Twilio" in str(caught.value)


def test_validation_errors_never_echo_the_secret() -> None:
    """A wrong secret is described by its length, never shown."""
    secret = "not-a-token-but-very-secret-1234"
    with pytest.raises(InvalidConnectionError) as caught:
        TwilioProfile(ACCOUNT_SID, None, secret).validate()
    assert secret not in str(caught.value)


@given(profiles())
def test_repr_and_masked_never_show_the_secret(profile: TwilioProfile) -> None:
    """repr() and masked() hide the secret entirely and shorten the SIDs."""
    assume(profile.secret not in profile.account_sid + str(profile.api_key))
    shown = repr(profile) + repr(profile.masked())
    assert profile.secret not in shown
    assert profile.masked()["secret"] == "********"
    assert profile.masked()["account_sid"] == profile.account_sid[:4] + "…" + profile.account_sid[-4:]
    assert profile.secrets() == (profile.secret,)


def test_auth_token_profile_builds_an_account_client() -> None:
    """Without an API key the client authenticates as Client(account_sid, auth_token)."""
    client = TwilioProfile(ACCOUNT_SID, None, AUTH_TOKEN).build_client()
    assert (client.username, client.password, client.account_sid) == (ACCOUNT_SID, AUTH_TOKEN, ACCOUNT_SID)


def test_api_key_profile_builds_a_key_client() -> None:
    """With an API key the client is Client(api_key, secret, account_sid)."""
    profile = TwilioProfile(ACCOUNT_SID, API_KEY, API_SECRET)
    client = profile.build_client()
    assert (client.username, client.password, client.account_sid) == (API_KEY, API_SECRET, ACCOUNT_SID)
    assert profile.username == API_KEY


def test_check_credentials_lists_one_message_with_the_auth_token(emulator: Emulator) -> None:
    """The credential check is a single GET of the Messages list with PageSize=1."""
    profile = TwilioProfile(emulator.account_sid, None, emulator.auth_token)
    assert "Auth Token" in check_credentials(profile, base_url=emulator.base_url)
    assert [(r.method, r.path) for r in emulator.requests] == [("GET", emulator.messages_path)]


def test_check_credentials_works_with_an_api_key(emulator: Emulator) -> None:
    """API key credentials authenticate as the key."""
    profile = TwilioProfile(emulator.account_sid, emulator.api_key, emulator.api_secret)
    assert "API key" in check_credentials(profile, base_url=emulator.base_url)


def test_check_credentials_reports_rejected_credentials(emulator: Emulator) -> None:
    """Wrong credentials give a TwilioError with Twilio's status and code, and what to do."""
    profile = TwilioProfile(emulator.account_sid, None, "0" * 32)
    with pytest.raises(TwilioError, match="HTTP 401") as caught:
        check_credentials(profile, base_url=emulator.base_url, what="connection 'primary'")
    assert caught.value.status == 401
    assert "connection 'primary'" in str(caught.value)
    assert "0" * 32 not in str(caught.value)


def test_check_credentials_reports_an_unreachable_server() -> None:
    """Nothing listening gives a ZingyConnError naming the URL tried."""
    base_url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ZingyConnError, match=f"Could not reach {base_url}"):
        check_credentials(TwilioProfile(ACCOUNT_SID, None, AUTH_TOKEN), base_url=base_url)


def test_base_url_client_leaves_other_hosts_alone(emulator: Emulator) -> None:
    """Only *.twilio.com URLs are rewritten; the path and query are kept."""
    client = BaseUrlHttpClient(emulator.base_url)
    response = client.request(
        "GET",
        f"https://api.twilio.com{emulator.messages_path}",
        params={"PageSize": 1},
        auth=(emulator.account_sid, emulator.auth_token),
    )
    assert response.status_code == 200
    assert emulator.requests[-1].path == emulator.messages_path
