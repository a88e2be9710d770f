"""What the host tells a Twilio client in a run's context, named without importing twilio.

Kept apart from :mod:`zingyconn.twilio.client` (which subclasses twilio's classes, so it imports ``twilio.rest``)
so that the runtime can name it without importing twilio. The channel operations themselves are declared, with
every other operation a child may request, in :mod:`zingyconn.egress.protocol`.
"""

from __future__ import annotations

from typing import Final

#: The run context key under which the host passes the tenant's connection directory: name -> ``username`` and
#: ``account_sid`` (never a secret), so that ``zingyConn.twilio(name)`` needs no request for a known name.
DIRECTORY_CONTEXT_KEY: Final = "connections"
