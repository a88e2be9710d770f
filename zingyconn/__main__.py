"""``python -m zingyconn``: the same as the ``zingyconn`` command."""

from zingyconn.hosts.cli import main

main()
