# Hand a browser a Twilio Video access token, minted by the host.
#
# A web page that joins a Video room needs an access token signed with an API key's secret. This hook mints one on
# the host with zingyConn.twilio(name).access_token(): the snippet never sees the secret, and the token it returns
# grants one room for fifteen minutes. The connection and the default room are tenant variables
# (zingyconn vars set VIDEO_CONNECTION video --tenant T; VIDEO_ROOM likewise), so the snippet holds no configuration.
# Request: GET /hooks/T/video-token?identity=alice&room=support-42 (both optional).
query = event.get("query") or {}
room = query.get("room") or zingyConn.vars.get("VIDEO_ROOM", "lobby")
identity = query.get("identity") or "guest"
client = zingyConn.twilio(zingyConn.vars.get("VIDEO_CONNECTION", "video"))
token = client.access_token(identity=identity, grants=[{"type": "video", "room": room}], ttl=15 * 60)
return {"identity": identity, "room": room, "token": token}
