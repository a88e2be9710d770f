# Status-callback logger (webhook hook).
#
# Set StatusCallback=https://your-host/hooks/{tenant}/status-log when sending; Twilio then posts each status
# change (queued -> sent -> delivered, or failed with an ErrorCode). This hook logs every transition and flags
# failures, so the run history becomes a delivery log. Returning None answers with an empty TwiML <Response/>.
form = event.get("form") or {}
status = form.get("MessageStatus") or form.get("SmsStatus") or "unknown"
fields = {"sid": form.get("MessageSid"), "to": form.get("To"), "status": status}
if status in ("failed", "undelivered"):
    log.error("delivery failed", error_code=form.get("ErrorCode"), **fields)
else:
    log.info("delivery status", **fields)
return None
