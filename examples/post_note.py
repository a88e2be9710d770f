# Post a note to a third-party API through an HTTP connection, without ever holding its token.
#
# zingyConn.http("notes") is the tenant's HTTP connection named notes (in zingyconn demo: the local echo API, with a
# bearer token). The snippet names only a path and a JSON body; the host checks the path against the connection's
# allowed prefixes, adds the token and sends the request, and masks the token in whatever comes back. The echo API
# answers with what it received, so the result shows the note as the API saw it.
# Event: {"text": "...", "customer": "+1555..."} (both optional).
api = zingyConn.http("notes")
note = {"text": event.get("text") or "Called back, all sorted.", "customer": event.get("customer") or "+15558675310"}
answer = api.post("/notes", json=note)
log.info("note posted", status=answer.status_code)
if not answer.ok:
    return {"posted": False, "status": answer.status_code, "error": answer.text[:200]}
received = answer.json()
return {
    "posted": True,
    "status": answer.status_code,
    "note": received.get("json"),
    "auth": received["headers"].get("authorization"),
}
