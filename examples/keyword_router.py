# Keyword router (webhook hook): STOP / HELP / INFO, anything else gets a menu.
#
# Carriers and Twilio handle STOP themselves (Advanced Opt-Out); this hook records the opt-out for the app and
# answers HELP and INFO with canned replies. Keywords are matched on the first word, case-insensitively, the way
# Twilio's own opt-out handling matches them.
# Try it: zingyconn run examples/keyword_router.py --event '{"form": {"From": "+15558675310", "Body": "help me"}}'
from twilio.twiml.messaging_response import MessagingResponse

REPLIES = {
    "HELP": "Reply INFO for opening hours, STOP to unsubscribe. Msg&data rates may apply.",
    "INFO": "We are open Mon-Fri 9:00-17:00. Visit https://example.com for more.",
}
OPT_OUT = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}

form = event.get("form") or {}
words = (form.get("Body") or "").strip().split()
keyword = words[0].upper() if words else ""

reply = MessagingResponse()
if keyword in OPT_OUT:
    log.warning("opt-out", sender=form.get("From"))
    return {"opted_out": form.get("From")}  # Twilio sends the carrier-mandated STOP reply itself
reply.message(REPLIES.get(keyword, "Sorry, I did not understand. Reply HELP or INFO."))
log.info("keyword", keyword=keyword or "(none)")
return reply
