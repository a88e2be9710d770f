"""Secrets: the master keyring, the sealed connection store, API tokens and the masking of secrets in output.

Everything that ever holds a key or a decrypted credential lives here, and only the host process loads it. It
builds on the core modules (config, database, schema, errors, names; connection types through their registry,
``zingyconn.connection_types``) and must never import ``zingyconn.egress``, ``zingyconn.twilio``, ``zingyconn.tasks``,
``zingyconn.snippet`` or ``zingyconn.hosts``; nothing a sandboxed child loads may import it.
"""
