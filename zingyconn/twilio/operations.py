"""The channel operations of the Twilio connection type: what a brokered client asks the host, by name.

Kept apart from :mod:`zingyconn.twilio.client` (which subclasses twilio's classes, so it imports ``twilio.rest``)
so that the host side, the broker and the runtime, can name the operations without importing twilio.
"""

from __future__ import annotations

from typing import Final

#: Channel operations the broker answers (``payload`` shapes in :mod:`zingyconn.egress.broker`).
OP_CONNECT: Final = "twilio.connect"
OP_CREDENTIALS: Final = "twilio.credentials"
OP_HTTP: Final = "twilio.http"

#: The run context key under which the host passes the tenant's connection directory: name -> ``username`` and
#: ``account_sid`` (never a secret), so that ``zingyConn.twilio(name)`` needs no request for a known name.
DIRECTORY_CONTEXT_KEY: Final = "connections"
