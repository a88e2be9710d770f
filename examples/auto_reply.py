# Inbound-SMS auto-reply (webhook hook).
#
# Point a Twilio number's "A message comes in" webhook at /hooks/{tenant}/auto-reply. Twilio posts the
# message as a form (From, To, Body, ...); this snippet answers with TwiML, which the webhook host returns as
# text/xml, and Twilio sends the reply. No API call is made: the reply rides on the webhook response.
# Try it: zingyconn run examples/auto_reply.py --event '{"form": {"From": "+15558675310", "Body": "hi"}}'
from twilio.twiml.messaging_response import MessagingResponse

form = event.get("form") or {}
sender = form.get("From", "there")
body = (form.get("Body") or "").strip()
log.info("inbound sms", sender=sender, length=len(body))

reply = MessagingResponse()
reply.message(f"Thanks {sender}, we got your message: {body[:100]!r}. We'll be in touch soon.")
return reply
