"""The local echo API answers every request back and records it; it steers status and redirects on request."""

from __future__ import annotations

import httpx

from tests.servers import uvicorn_in_thread
from zingyconn.http.echo import MAX_BODY_BYTES, EchoRecorder, create_app


def test_echoes_and_records_what_arrived() -> None:
    """Method, path, query, headers (credentials included) and the JSON body come back and are recorded."""
    recorder = EchoRecorder()
    with uvicorn_in_thread(create_app(recorder), name="echo") as port, httpx.Client() as client:
        base = f"http://127.0.0.1:{port}"
        answer = client.post(f"{base}/notes?x=1", json={"text": "hi"}, headers={"Authorization": "Bearer t0ken"})
        listed = client.get(f"{base}/_echo/requests").json()

    assert answer.status_code == 200
    echoed = answer.json()
    assert (echoed["method"], echoed["path"], echoed["query"]) == ("POST", "/notes", {"x": "1"})
    assert echoed["headers"]["authorization"] == "Bearer t0ken"
    assert echoed["json"] == {"text": "hi"}
    assert [r.path for r in recorder.requests] == ["/notes"]
    assert listed == [echoed]


def test_status_redirect_and_size_cap() -> None:
    """/status/N answers N, /redirect?to=U answers 302 to U, and a body over the cap is refused unread."""
    recorder = EchoRecorder()
    with uvicorn_in_thread(create_app(recorder), name="echo") as port, httpx.Client() as client:
        base = f"http://127.0.0.1:{port}"
        failed = client.get(f"{base}/status/503")
        moved = client.get(f"{base}/redirect", params={"to": "http://example.test/x"})
        big = client.post(f"{base}/big", content=b"x" * (MAX_BODY_BYTES + 1))

    assert failed.status_code == 503
    assert (moved.status_code, moved.headers["location"]) == (302, "http://example.test/x")
    assert big.status_code == 413
    assert [r.path for r in recorder.requests] == ["/status/503", "/redirect"]
