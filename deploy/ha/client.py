"""One HTTP request on a fresh connection, answered or not: what the failover drill and the
failure drills (tests/drills) send. Every outcome is kept, a refused or reset connection and
a client timeout included, because the drills count them."""

import http.client
import json
import time
from dataclasses import dataclass


@dataclass
class Answer:
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    body: object  # the JSON answer, or its text when it is not JSON
    headers: dict[str, str]  # lower-cased names
    started: float  # time.monotonic()
    ended: float
    error: str | None = None

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    @property
    def detail(self):
        return self.body.get("detail") if isinstance(self.body, dict) else None

    @property
    def timed_out(self) -> bool:
        return self.status is None and "timed out" in (self.error or "")


def request(
    base_url: str,
    method: str,
    path: str,
    body=None,
    *,
    token: str | None = None,
    timeout: float = 10,
    host: str | None = None,
    request_id: str | None = None,
) -> Answer:
    """`method path` with `body` as JSON and `token` as a Bearer credential; `host` replaces
    the Host header (nginx's server_name); `request_id` is sent as X-Request-ID, which Lab
    puts on its log lines for the request."""
    address, port = base_url.removeprefix("http://").split(":")
    headers = {"Connection": "close"}
    if host:
        headers["Host"] = host
    if request_id:
        headers["X-Request-ID"] = request_id
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    started = time.monotonic()
    conn = http.client.HTTPConnection(address, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
        content: object = raw.decode(errors="replace")
        if reply_headers.get("content-type", "").startswith("application/json"):
            try:
                content = json.loads(raw)
            except ValueError:
                pass
        return Answer(response.status, content, reply_headers, started, time.monotonic())
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, None, {}, started, time.monotonic(), repr(exc))
    finally:
        conn.close()
