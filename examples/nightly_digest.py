# Nightly digest (background task, e.g. cron "0 7 * * *").
#
# Lists yesterday's messages on the "main" connection and texts a one-line summary to the number in the
# payload. The send uses the task run's idempotency key, so a retry after a crash never texts the summary twice.
# Payload: {"to": "+15558675310", "from": "+15005550006", "connection": "main"}; a cron run has no "to", so the
# summary goes to DIGEST_TO.
import datetime

DIGEST_TO = "+15558675310"  # who gets the digest when the payload does not say (cron runs)

twilio = zingyConn.twilio(event.get("connection", "main"))
yesterday = datetime.datetime.now(datetime.timezone.utc).date() - datetime.timedelta(days=1)  # Twilio dates are UTC
messages = twilio.messages.list(date_sent=datetime.datetime.combine(yesterday, datetime.time()), limit=1000)

inbound = [m for m in messages if m.direction == "inbound"]
outbound = [m for m in messages if m.direction != "inbound"]
failed = [m for m in outbound if m.status in ("failed", "undelivered")]
summary = (
    f"Digest for {yesterday.isoformat()}: {len(messages)} messages, "
    f"{len(inbound)} in, {len(outbound)} out, {len(failed)} failed."
)
log.info("digest", total=len(messages), failed=len(failed))
sent = twilio.messages.create(to=event.get("to") or DIGEST_TO, from_=event.get("from", "+15005550006"), body=summary)
return {"summary": summary, "sid": sent.sid}
