"""What a snippet sees: ``zingyConn``, the ``twilio`` façades, and the walls around the Twilio client objects.

The sandbox zygote imports this module once (``Sandbox(environment="zingyconn.snippet.environment:environment")``),
so ``twilio.rest`` and the TwiML modules are loaded before any fork; each child calls :func:`environment` once
for its run. Everything here runs inside the untrusted process and holds no secret: connection clients carry a
placeholder password, and every request goes to the host's egress broker over the run's channel.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

import twilio
import twilio.base.exceptions
import twilio.rest
import twilio.twiml
import twilio.twiml.messaging_response
import twilio.twiml.voice_response
from twilio.base.client_base import ClientBase
from twilio.base.domain import Domain
from twilio.base.instance_context import InstanceContext
from twilio.base.instance_resource import InstanceResource
from twilio.base.list_resource import ListResource
from twilio.base.page import Page
from twilio.base.version import Version
from twilio.http import HttpClient
from twilio.rest.api.v2010.account.message import MessageContext, MessageInstance, MessageList
from twilio.twiml import TwiML

from sandbox.environment import JSON, Environment, LazyModule, RunContext, WarmUpRun
from sandbox.imports import make_facade
from zingyconn.egress.protocol import OP_CONNECT, OP_ENQUEUE, OP_HTTP, VARIABLES_CONTEXT_KEY
from zingyconn.http import DIRECTORY_CONTEXT_KEY as HTTP_DIRECTORY_CONTEXT_KEY
from zingyconn.http.client import HttpApi
from zingyconn.http.client import connection_client as http_connection_client
from zingyconn.twilio.client import BrokeredClient, Channel, client_class, connection_client
from zingyconn.twilio.operations import DIRECTORY_CONTEXT_KEY

#: The name snippets use for the platform object (the one camelCase name in the code base).
SNIPPET_GLOBAL: Final = "zingyConn"


#: Twilio products imported by the zygote before it forks. Messages live in ``api``; Messaging Services and
#: Lookups (number checks) are what messaging snippets reach for next. Every other product is imported on first
#: use inside the child: not preloading all ~40 products halves the zygote (82 -> 42 MiB) and with it the cost
#: of every fork. Where the sandbox uid cannot read site-packages (a root-only virtualenv), such an import fails
#: with a clear ImportError in the snippet instead.
PRELOADED_PRODUCTS: Final = ("twilio.rest.api", "twilio.rest.messaging", "twilio.rest.lookups")


def preload_twilio_domains() -> int:
    """Import the :data:`PRELOADED_PRODUCTS` packages of ``twilio.rest``; return how many."""
    for name in PRELOADED_PRODUCTS:
        importlib.import_module(name)
    return len(PRELOADED_PRODUCTS)


preload_twilio_domains()


def _public(*classes: type) -> set[str]:
    return {name for cls in classes for name in dir(cls) if not name.startswith("_")}


def _async_names(*classes: type) -> set[str]:
    return {name for name in _public(*classes) if name.endswith("_async") or "_async" in name}


# Threat: the twilio objects carry the transport and the credentials in public attributes:
# ``client.password``/``auth``/``http_client``, ``domain.twilio`` back to the client, ``client.request(url)`` and
# ``list.get_page(url)`` that send Basic auth to any absolute URL, ``edge``/``region`` spliced into the host
# name, ``base_url`` that re-targets a domain, ``*_async`` coroutines whose frames hold library globals. In a
# snippet they are all refused by the attribute guard; the broker re-checks every URL anyway.
_CLIENT_HIDDEN: Final = frozenset(
    {
        "password",
        "auth",
        "http_client",
        "credential_provider",
        "request",
        "get_auth",
        "get_hostname",
        "get_headers",
        "copy_non_none_values",
        "edge",
        "region",
        "user_agent_extensions",
    }
    | _async_names(ClientBase)
)
_DOMAIN_HIDDEN: Final = frozenset(_public(Domain) | {"twilio", "base_url", "domain"})
_VERSION_HIDDEN: Final = frozenset(_public(Version) | {"domain", "version"})
_RESOURCE_HIDDEN: Final = frozenset(
    {"get_page", "get_page_async"} | _async_names(MessageList, MessageContext, MessageInstance)
)
_PAGE_HIDDEN: Final = frozenset({"process_response", "load_page", "next_page_async", "previous_page_async"})

HIDDEN_ATTRIBUTES: Final[Mapping[type, frozenset[str]]] = {
    ClientBase: _CLIENT_HIDDEN,
    Domain: _DOMAIN_HIDDEN,
    Version: _VERSION_HIDDEN,
    ListResource: _RESOURCE_HIDDEN,
    InstanceContext: _RESOURCE_HIDDEN,
    InstanceResource: _RESOURCE_HIDDEN,
    Page: _PAGE_HIDDEN,
    HttpClient: frozenset(_public(HttpClient) | {"logger", "session", "proxy", "timeout"}),
}


def twiml_to_xml(response: TwiML) -> str:
    """Convert a TwiML object (``MessagingResponse``, ``VoiceResponse``) to its XML document."""
    return str(response.to_xml())


def _json_value(value: Any) -> JSON:
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def resource_to_dict(instance: InstanceResource) -> dict[str, JSON]:
    """Convert a twilio resource instance (e.g. ``MessageInstance``) to a dict of its fields.

    Field names are Twilio's JSON names (``from``, not the Python ``from_``); dates become ISO 8601 strings.
    """
    return {
        ("from" if name == "from_" else name): _json_value(value)
        for name, value in vars(instance).items()
        if not name.startswith("_")
    }


RESULT_CONVERTERS: Final = {TwiML: twiml_to_xml, InstanceResource: resource_to_dict}


class TenantVars(Mapping[str, str]):
    """``zingyConn.vars``: the tenant's variables, read-only (``vars["NAME"]``, ``vars.get("NAME", default)``, ``in``).

    A missing name raises a ``KeyError`` that says how to set it; the values are plain strings the host passed with
    the run (never secrets).
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(
                f"No tenant variable named {name!r}; set it with 'zingyconn vars set {name} VALUE --tenant TENANT', "
                "or read it with zingyConn.vars.get(name, default)."
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<zingyConn.vars: {len(self._values)} variables>"


def tenant_vars(context: Mapping[str, Any]) -> TenantVars:
    """Return the tenant variables the host put in the run *context* (none if absent or not of that shape)."""
    entries = context.get(VARIABLES_CONTEXT_KEY)
    if not isinstance(entries, dict):
        return TenantVars({})
    return TenantVars({name: value for name, value in entries.items() if isinstance(value, str)})


class RunClientClass:
    """The run's ``twilio.rest.Client`` class, made on first use: a run that sends nothing never makes one.

    A class costs about as much to make as the rest of a small run's set-up, and most webhook replies (TwiML) never
    touch it. There is still exactly one per run, shared by the façades and ``zingyConn.twilio()`` (so
    ``isinstance(zingyConn.twilio(name), twilio.rest.Client)`` holds), and never one shared between runs.
    """

    __slots__ = ("_channel", "_class")

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._class: type[BrokeredClient] | None = None

    def get(self) -> type[BrokeredClient]:
        """Return the run's class, making it now if this is the first use."""
        if self._class is None:
            self._class = client_class(self._channel)
        return self._class

    def facade(self, module: object) -> object:
        """Return the façade of *module* (``twilio`` or ``twilio.rest``): only ``Client``, the run's class."""
        return make_facade(module, [], overrides={"Client": self.get()})


class ZingyConn:
    """The ``zingyConn`` object of a snippet: the platform's capabilities for this run.

    Extension point: each capability is a method that sends its own operation over the run's channel (as
    :meth:`twilio` sends ``twilio.connect``); the host answers it in the run's request handler. Nothing else
    belongs here: an attribute of this object is reachable by every snippet.
    """

    __slots__ = ("_channel", "_client_class", "_context", "_directory", "_vars")

    def __init__(
        self, channel: Channel, client_class: RunClientClass, context: Mapping[str, Any] | None = None
    ) -> None:
        self._channel = channel
        self._client_class = client_class
        # The run context is read on the first twilio() call, not here: a spare child builds this object before
        # its order (and so the context) arrives (see sandbox.child.OrderContext).
        self._context = context
        self._directory: Mapping[str, Mapping[str, str]] | None = None
        self._vars: TenantVars | None = None

    def twilio(self, name: str) -> BrokeredClient:
        """Return a ``twilio.rest.Client`` for this tenant's connection *name*.

        Raises:
            LookupError: There is no connection of that name (other names are never listed).
        """
        if self._directory is None and self._context is not None:
            self._directory = connection_directory(self._context)
        return connection_client(self._channel, name, cls=self._client_class.get(), directory=self._directory)

    def http(self, name: str) -> HttpApi:
        """Return the client of this tenant's HTTP connection *name* (``api.post("/notes", json=...)``).

        The host adds the connection's credential to each request and refuses what the connection does not allow.

        Raises:
            LookupError: There is no HTTP connection of that name (other names are never listed).
        """
        entries = (self._context or {}).get(HTTP_DIRECTORY_CONTEXT_KEY)
        return http_connection_client(self._channel, name, directory=entries if isinstance(entries, dict) else None)

    @property
    def vars(self) -> TenantVars:
        """The tenant's variables (``zingyConn.vars["SUPPORT_NUMBER"]``): a read-only mapping of strings."""
        if self._vars is None:
            self._vars = tenant_vars(self._context or {})
        return self._vars

    def enqueue(self, script: str, payload: JSON = None) -> str:
        """Queue a run of this tenant's background-task *script* with *payload* (JSON) as its ``event``.

        Returns:
            The task id.

        Raises:
            TypeError: *script* is not a string.
            EgressDeniedError: No such script, a payload that is too large, or a host that runs no tasks.
        """
        if type(script) is not str:
            raise TypeError(f"A script name must be a string, not {type(script).__name__}.")
        answer = self._channel.request(OP_ENQUEUE, {"script": script, "payload": payload})
        return str(answer["task_id"])

    def __repr__(self) -> str:
        return "<zingyConn>"


@functools.cache
def static_facades() -> Mapping[str, object]:
    """Return the run-independent twilio façades (built once, in the zygote, before any fork)."""
    return {
        "twilio.twiml": make_facade(twilio.twiml, ["TwiML", "TwiMLException", "GenericNode"]),
        "twilio.twiml.messaging_response": make_facade(twilio.twiml.messaging_response),
        "twilio.twiml.voice_response": make_facade(twilio.twiml.voice_response),
        "twilio.base.exceptions": make_facade(
            twilio.base.exceptions, ["TwilioException", "TwilioRestException", "TwilioServiceException"]
        ),
    }


def connection_directory(context: Mapping[str, Any]) -> dict[str, dict[str, str]] | None:
    """Return the connection directory the host put in the run *context*, or None (then every name is asked for).

    The directory maps each of the tenant's connection names to its ``username`` and ``account_sid`` (never a
    secret); anything not of that shape is ignored, and the names are then looked up over the channel.
    """
    entries = context.get(DIRECTORY_CONTEXT_KEY)
    if not isinstance(entries, dict):
        return None
    directory: dict[str, dict[str, str]] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in _DIRECTORY_FIELDS):
            return None
        directory[name] = {key: entry[key] for key in _DIRECTORY_FIELDS}
    return directory


_DIRECTORY_FIELDS: Final = ("username", "account_sid")


def environment(run: RunContext) -> Environment:
    """Return the snippet environment of one run: ``zingyConn``, the twilio façades, hidden attributes, converters."""
    client = RunClientClass(run.host)
    modules: dict[str, object] = {
        # ``twilio.Client`` is an alias of the brokered ``twilio.rest.Client``, bound to this run; both façades are
        # built when the run first imports them.
        "twilio": LazyModule(functools.partial(client.facade, twilio)),
        "twilio.rest": LazyModule(functools.partial(client.facade, twilio.rest)),
        **static_facades(),
    }
    return Environment(
        names={SNIPPET_GLOBAL: ZingyConn(run.host, client, run.context)},
        modules=modules,
        hidden_attributes=HIDDEN_ATTRIBUTES,
        result_converters=RESULT_CONVERTERS,
    )


_WARM_UP_ACCOUNT: Final = "AC" + "0" * 32
_WARM_UP_MESSAGE: Final = {
    "account_sid": _WARM_UP_ACCOUNT,
    "api_version": "2010-04-01",
    "body": "warm-up",
    "date_created": "Thu, 01 Jan 2026 00:00:00 +0000",
    "date_sent": None,
    "date_updated": "Thu, 01 Jan 2026 00:00:00 +0000",
    "direction": "outbound-api",
    "error_code": None,
    "error_message": None,
    "from": "+15005550006",
    "messaging_service_sid": None,
    "num_media": "0",
    "num_segments": "1",
    "price": None,
    "price_unit": "USD",
    "sid": "SM" + "0" * 32,
    "status": "queued",
    "subresource_uris": {"media": f"/2010-04-01/Accounts/{_WARM_UP_ACCOUNT}/Messages/SM{'0' * 32}/Media.json"},
    "to": "+15005550006",
    "uri": f"/2010-04-01/Accounts/{_WARM_UP_ACCOUNT}/Messages/SM{'0' * 32}.json",
}

#: Typical runs the zygote and every spare child make ahead of demand (see :mod:`sandbox.environment`): a TwiML
#: reply, and a message sent with a connection client. They take a send's page faults and twilio's lazily built
#: state off the latency of the runs that follow; the canned answers mean no host or network is involved.
WARM_UP_RUNS: Final = (
    WarmUpRun(
        source=(
            "from twilio.twiml.messaging_response import MessagingResponse\n"
            "reply = MessagingResponse()\n"
            "reply.message('You said: ' + event['body'].strip())\n"
            "return reply\n"
        ),
        event={"body": " warm-up "},
    ),
    WarmUpRun(
        source=(
            "client = zingyConn.twilio('warm-up')\n"
            "return client.messages.create(to='+15005550006', from_='+15005550006', body='warm-up')\n"
        ),
        answers={
            OP_CONNECT: {"found": True, "account_sid": _WARM_UP_ACCOUNT, "username": _WARM_UP_ACCOUNT},
            OP_HTTP: {
                "status": 201,
                "text": json.dumps(_WARM_UP_MESSAGE),
                "headers": {"content-type": "application/json"},
            },
        },
    ),
)
