"""Twilio as a connection type: the registry's entry (:mod:`zingyconn.connection_types`) for ``type = "twilio"``.

Light on purpose: the write rules and the quotas are plain Python; the profile loads with the first Twilio connection
opened; the client, the commands, the credential check and the access tokens are named by path, so registering Twilio
imports neither ``twilio.rest``, ``twilio.jwt`` nor ``phonenumbers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from zingyconn.connection_types import ConnectionType
from zingyconn.egress.protocol import OP_ACCESS_TOKEN
from zingyconn.twilio import CONNECTION_TYPE as TYPE_NAME
from zingyconn.twilio import SNIPPET_MODULES
from zingyconn.twilio.billing import OTHER_WRITES, TWILIO_WRITES, quota_rates, quota_variable
from zingyconn.twilio.operations import DIRECTORY_CONTEXT_KEY

if TYPE_CHECKING:
    from zingyconn.twilio.profile import TwilioProfile


def load_profile(data: Mapping[str, Any]) -> TwilioProfile:
    """Rebuild a Twilio profile (:meth:`TwilioProfile.from_json`); its module loads with the first one opened."""
    from zingyconn.twilio.profile import TwilioProfile

    return TwilioProfile.from_json(data)


CONNECTION_TYPE: Final = ConnectionType(
    name=TYPE_NAME,
    load_profile=load_profile,
    writes=TWILIO_WRITES,
    quota_rates=quota_rates,
    quota_variable=quota_variable,
    other_writes=OTHER_WRITES,
    host_client="zingyconn.twilio.client:connection_client",
    commands="zingyconn.twilio.commands:ConnectionCommands",
    verify="zingyconn.twilio.verify:check_credentials",
    directory_context_key=DIRECTORY_CONTEXT_KEY,
    snippet_modules=SNIPPET_MODULES,
    run_operations={OP_ACCESS_TOKEN: "zingyconn.twilio.access_tokens:RunAccessTokens"},
)
