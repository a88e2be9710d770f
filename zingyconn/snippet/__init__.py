"""The snippet's side: the ``zingyConn`` object, the ``twilio`` façades and the environment of each sandboxed run.

Everything here runs inside the untrusted child, which the sandbox zygote forks after importing this package, and
holds no secret. It must never import ``zingyconn.secrets``, ``zingyconn.egress`` (but for ``egress.protocol``, the
declarations of the operations a child may request), ``zingyconn.tasks``, ``zingyconn.hosts``, the database or the
runtime: nothing that ever held a key belongs in a snippet's process.
"""
