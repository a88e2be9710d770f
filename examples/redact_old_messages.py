# Redact messages older than N days (background task).
#
# Privacy policies often say "we keep message text for N days". This task lists messages sent before the cut-off
# and redacts each body (an update with Body="", which Twilio keeps as an empty body). It only touches messages
# whose body is not already empty, so re-running it is harmless. Payload: {"days": 30, "connection": "main"}.
import datetime

days = int(event.get("days", 30))
twilio = zingyConn.twilio(event.get("connection", "main"))
cutoff = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)

redacted = []
for message in twilio.messages.list(date_sent_before=cutoff, limit=200):
    if message.body and message.status not in ("queued", "sending", "accepted", "scheduled"):
        message.update(body="")
        redacted.append(message.sid)
log.info("redacted", count=len(redacted), days=days)
return {"redacted": redacted, "cutoff": cutoff.isoformat()}
