"""HTTP connections: any HTTP API called from a snippet with a credential the snippet never holds.

The second connection type (:mod:`zingyconn.http.connection_type`): its profile, the host-side sender, the child-side
client and the local echo API that stands in for a real one in tests and in the demo. It builds on the core modules,
``zingyconn.secrets`` (masking) and ``zingyconn.egress`` (the pinned transport, the token buckets), and must never
import ``zingyconn.twilio``, ``zingyconn.snippet``, ``zingyconn.tasks`` or ``zingyconn.hosts``.
"""

from typing import Final

#: The ``type`` column of an HTTP connection. Here, not in :mod:`zingyconn.http.profile`, so that registering the type
#: (every run does) does not import the profile module; it loads when an HTTP connection is opened.
CONNECTION_TYPE: Final = "http"

#: The run context key under which the host passes the tenant's HTTP connection directory: name -> ``base_url``
#: (never a secret), so that ``zingyConn.http(name)`` needs no request for a known name.
DIRECTORY_CONTEXT_KEY: Final = "http_connections"
