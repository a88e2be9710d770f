"""Hosts: the entry points (CLI, webhook/API server, task worker, admin console, demo) and their composition root.

Hosts parse input, call the core and render its answers; errors become exit codes and HTTP shapes only here. They may
import any package of ``zingyconn``; no package outside ``zingyconn.hosts`` may import them.
"""
