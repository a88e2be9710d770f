"""Tasks: background runs of a tenant's scripts: task rows, the Huey queue and its backend, schedules and retries.

A task is a row of the ``tasks`` table (the store); Huey (the backend, SQLite or Redis) carries only its id; the
queue runs it through the runtime it is given, retries what failed for a transient reason and enqueues the scripts
whose cron schedule is due. It builds on the core modules and must never import ``zingyconn.secrets``,
``zingyconn.egress`` or ``zingyconn.hosts``: a task reaches credentials only through that runtime.
"""
