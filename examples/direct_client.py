# Build a Twilio client yourself with twilio.Client(sid, token).
#
# For credentials that are not stored as a connection (e.g. a sub-account the app created), a snippet may build
# the client directly. It is the same brokered client as zingyConn.twilio(): requests still go through the host's
# egress broker (Twilio hosts only), and the token you pass is masked (****) in output, logs and errors.
# Payload: {"account_sid": "AC...", "auth_token": "...", "to": "+15558675310"}.
import twilio

client = twilio.Client(event["account_sid"], event["auth_token"])
message = client.messages.create(to=event["to"], from_="+15005550006", body="Sent with my own credentials")
print("token in use:", event["auth_token"])  # shows as **** in the output
return {"sid": message.sid, "status": message.status}
