"""Twilio: connection profiles, the brokered client, connection commands and the local emulator.

The first connection type: it builds on the core modules and ``zingyconn.egress`` (the send ledger), and must never
import ``zingyconn.secrets``, ``zingyconn.tasks``, ``zingyconn.snippet`` or ``zingyconn.hosts``.
"""

from typing import Final

#: The ``type`` column of a Twilio connection. Here, not in :mod:`zingyconn.twilio.profile`, so that registering the
#: type (every run does) does not import the profile module; it loads when a Twilio connection is opened.
CONNECTION_TYPE: Final = "twilio"

#: The modules a snippet may import on top of the standard-library allowlist (``zingyconn.snippet.environment`` builds a
#: façade for each; a test keeps the two in step). Kept here, away from the heavy snippet module, so the catalog can
#: check imports before saving a snippet without importing twilio.rest.
SNIPPET_MODULES: Final = (
    "twilio",
    "twilio.rest",
    "twilio.twiml",
    "twilio.twiml.messaging_response",
    "twilio.twiml.voice_response",
    "twilio.base.exceptions",
)
