"""HTTP connections: any HTTP API called from a snippet with a credential the snippet never holds.

The second connection type (:mod:`zingyconn.http.connection_type`): its profile, the host-side sender, the child-side
client and the local echo API that stands in for a real one in tests and in the demo. It builds on the core modules,
``zingyconn.secrets`` (masking) and ``zingyconn.egress`` (the pinned transport, the token buckets), and must never
import ``zingyconn.twilio``, ``zingyconn.snippet``, ``zingyconn.tasks`` or ``zingyconn.hosts``.
"""
