"""Egress: the host side of every request a snippet's child makes, and the only place credentials meet the network.

The broker answers the child's channel operations; the URL policy decides where a request may go; the transport
sends it to a pinned, public address; rate limits and the send ledger meter and de-duplicate sends; the protocol
module lists every host operation a child may request, and who answers it. It builds on the
core modules (connection types through their registry, ``zingyconn.connection_types``) and ``zingyconn.secrets``, and
must never import ``zingyconn.twilio``, ``zingyconn.tasks``, ``zingyconn.snippet`` (code that runs in the child) or
``zingyconn.hosts``.
"""
