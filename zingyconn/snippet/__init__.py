"""The snippet's side: the ``zingyConn`` object, the ``twilio`` façades and the environment of each sandboxed run.

Everything here runs inside the untrusted child, which the sandbox zygote forks after importing this package, and
holds no secret. It must never import ``zingyconn.secrets``, ``zingyconn.egress``, ``zingyconn.tasks``,
``zingyconn.hosts``, the database or the runtime: nothing that ever held a key belongs in a snippet's process.
"""

from typing import Final

#: The host operation behind ``zingyConn.enqueue`` (answered by :class:`zingyconn.tasks.queue.TaskQueue`). Named
#: here rather than in the environment module so that hosts can name it without importing twilio.
OP_ENQUEUE: Final = "tasks.enqueue"
