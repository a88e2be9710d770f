"""HTTP APIs as a connection type: the registry's entry (:mod:`zingyconn.connection_types`) for ``type = "http"``.

Light on purpose: the quota is plain Python; the profile loads with the first HTTP connection opened; the host-side
sender (``httpcore``) and the child-side client are named by path and load when a run or ``connections test`` uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from zingyconn.connection_types import ConnectionType
from zingyconn.egress.protocol import OP_HTTP_REQUEST
from zingyconn.http import CONNECTION_TYPE as TYPE_NAME
from zingyconn.http import DIRECTORY_CONTEXT_KEY
from zingyconn.http.rules import HTTP_BUCKET, HTTP_WRITES, quota_rates, quota_variable

if TYPE_CHECKING:
    from zingyconn.http.profile import HttpProfile


def load_profile(data: Mapping[str, Any]) -> HttpProfile:
    """Rebuild an HTTP profile (:meth:`HttpProfile.from_json`); its module loads with the first one opened."""
    from zingyconn.http.profile import HttpProfile

    return HttpProfile.from_json(data)


CONNECTION_TYPE: Final = ConnectionType(
    name=TYPE_NAME,
    load_profile=load_profile,
    writes=HTTP_WRITES,
    quota_rates=quota_rates,
    quota_variable=quota_variable,
    other_writes=HTTP_BUCKET,
    host_client="zingyconn.http.client:connection_client",
    commands=None,
    verify="zingyconn.http.broker:check_connection",
    directory_context_key=DIRECTORY_CONTEXT_KEY,
    run_operations={OP_HTTP_REQUEST: "zingyconn.http.broker:RunHttpRequests"},
)
