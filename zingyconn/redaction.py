"""Redaction: once a message's body is redacted at Twilio (``updateMessage`` with ``body: ""``), redact our copies.

The store keeps copies of message bodies: a webhook's event (an inbound SMS's ``Body``), a command's inputs and
output, a snippet's result, output and logs, and the send ledger's copy of the message. Redacting only at Twilio
would leave them here until the retention purges them.

A copy is found through the message's SID: in every stored JSON value of the tenant's runs and ledger keys, an
object whose SID field (``sid``, ``MessageSid``, ``SmsSid``, ``SmsMessageSid``) is the redacted message has its body
field (``body``, ``Body``) emptied, and the text of that body, wherever else it appears in the same record (the
command inputs that sent it, a printed line, a log), becomes :data:`REDACTED`. Bodies shorter than
:data:`MIN_BODY_CHARS` are emptied where they are named but not searched for elsewhere (replacing "ok" in every
string would shred unrelated text). A copy that names no SID (a snippet that printed a body it never returned with
its SID) cannot be told apart from other text; the retention purges it.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from zingyconn.schema import runs, sent_messages

#: What a redacted body's text becomes where it is quoted outside its own field.
REDACTED: Final = "[redacted]"
#: Shortest body searched for in other text of the record.
MIN_BODY_CHARS: Final = 4
#: Fields that name a message by SID: the Message resource's, and a webhook form's.
SID_FIELDS: Final = ("sid", "MessageSid", "SmsSid", "SmsMessageSid")
#: Fields that hold the message's text.
BODY_FIELDS: Final = ("body", "Body")

#: The JSON and text columns of a run that may hold a copy.
_RUN_FIELDS: Final = ("event", "result", "stdout", "logs", "error")


def redact_message(engine: Engine, tenant: str, sid: str) -> int:
    """Redact every stored copy of message *sid*'s body in *tenant*'s runs and send ledger; return rows changed.

    Each changed row is written in its own short transaction.
    """
    changed = 0
    mentions = sa.or_(*(sa.cast(runs.c[name], sa.Text).contains(sid) for name in _RUN_FIELDS))
    with engine.connect() as conn:
        run_ids = list(conn.execute(sa.select(runs.c.id).where(runs.c.tenant == tenant, mentions)).scalars())
        keys = list(
            conn.execute(
                sa.select(sent_messages.c.key).where(
                    sent_messages.c.tenant == tenant, sa.cast(sent_messages.c.message, sa.Text).contains(sid)
                )
            ).scalars()
        )
    for run_id in run_ids:
        with engine.begin() as conn:
            row = conn.execute(sa.select(*(runs.c[name] for name in _RUN_FIELDS)).where(runs.c.id == run_id)).first()
            if row is None:
                continue
            stored = dict(row._mapping)
            updates = {name: value for name, value in redact_record(stored, sid).items() if value != stored[name]}
            if updates:
                conn.execute(runs.update().where(runs.c.id == run_id).values(**updates))
                changed += 1
    for key in keys:
        where = (sent_messages.c.tenant == tenant, sent_messages.c.key == key)
        with engine.begin() as conn:
            message = conn.execute(sa.select(sent_messages.c.message).where(*where)).scalar()
            redacted_message = redact_record({"message": message}, sid)["message"]
            if redacted_message != message:
                conn.execute(sent_messages.update().where(*where).values(message=redacted_message))
                changed += 1
    return changed


def redact_record(fields: dict[str, Any], sid: str) -> dict[str, Any]:
    """Return *fields* (JSON values and strings) with the body of message *sid* emptied and its text redacted."""
    bodies: set[str] = set()
    emptied = {name: _empty_bodies(value, sid, bodies) for name, value in fields.items()}
    # The text as stored elsewhere: as is, and URL-encoded (a webhook's raw form body).
    spellings = {form for body in bodies for form in (body, quote_plus(body), quote(body))}
    quoted = sorted((text for text in spellings if len(text) >= MIN_BODY_CHARS), key=len, reverse=True)
    if not quoted:
        return emptied
    return {name: _replace_text(value, quoted) for name, value in emptied.items()}


def _empty_bodies(value: Any, sid: str, bodies: set[str]) -> Any:
    if isinstance(value, list):
        return [_empty_bodies(item, sid, bodies) for item in value]
    if not isinstance(value, dict):
        return value
    names_it = any(value.get(field) == sid for field in SID_FIELDS)
    result: dict[str, Any] = {}
    for key, item in value.items():
        if names_it and key in BODY_FIELDS and isinstance(item, str):
            if item:
                bodies.add(item)
            result[key] = ""
        else:
            result[key] = _empty_bodies(item, sid, bodies)
    return result


def _replace_text(value: Any, bodies: list[str]) -> Any:
    if isinstance(value, str):
        for body in bodies:
            value = value.replace(body, REDACTED)
        return value
    if isinstance(value, list):
        return [_replace_text(item, bodies) for item in value]
    if isinstance(value, dict):
        return {key: _replace_text(item, bodies) for key, item in value.items()}
    return value
