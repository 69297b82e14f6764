"""The production front (`make serve-production`): nginx in front of gunicorn's workers.

These tests run the command's own launcher (deploy/serve.py --front nginx) against a
database of their own, and talk to it over real sockets: the slow-client drill, the body
limit, keep-alive, the API docs through the front, and a clean stop on SIGTERM and Ctrl-C.
The drill's control runs the same trickle against bare gunicorn, where it does stall decide:
that is why gunicorn must not face clients (docs/operations.md, "The production front").

Why this module is long: its tests share one front (nginx and gunicorn) started for the
module; a second module would start a second one.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from deploy import front as nginx_front
from tests.browser import render_dom
from tests.e2e.processes import children, free_port, pid_alive, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WORKERS = 2
DRILL_SECONDS = 30
# "Well under a second": 19 decides in 20 answer within half a second and none takes a
# second (without the front they wait for a worker: 30 s and more). The margin is for a
# shared 2-core machine, where the same decides take up to 0.1-0.3 s without any trickle.
DECIDE_P95_SECONDS = 0.5
DECIDE_MAX_SECONDS = 1.0


@dataclass
class Front:
    """One `deploy/serve.py --front nginx` and what a test needs to talk to it."""

    port: int
    run_dir: Path
    log: Path
    env: dict[str, str]
    process: subprocess.Popen | None = None
    client_key: str = ""
    descendants: set[int] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "deploy/serve.py",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--front",
                    "nginx",
                    "--workers",
                    str(WORKERS),
                    "--run-dir",
                    str(self.run_dir),
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"serve.py exited {self.process.returncode}:\n{self.tail()}")
            return "Lab is serving on" in self.log.read_text(errors="replace")

        wait_until(ready, 120, "make serve-production to say it serves")
        # The launcher's children (gunicorn master, nginx master) and theirs (workers).
        direct = children(self.process.pid)
        self.descendants = direct | {pid for parent in direct for pid in children(parent)}

    def stop(self, sig: signal.Signals) -> int:
        self.process.send_signal(sig)
        return self.process.wait(60)

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def decide(base_url: str, key: str, unit: str, timeout: float = 10) -> tuple[int, dict, float]:
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/api/v1/decide",
            body=json.dumps({"unit": unit}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = json.loads(response.read() or b"null")
        return response.status, body, time.monotonic() - started
    finally:
        conn.close()


@pytest.fixture(scope="module")
def database_env() -> Iterator[dict[str, str]]:
    """The environment of a Lab with a database of its own (PostgreSQL when DATABASE_URL
    names one, else a SQLite file), migrated and seeded with one product."""
    folder = Path(tempfile.mkdtemp(prefix="lab-front-"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS", "TEST_DATABASE_NAME")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
        ACCESS_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    base = os.environ.get("DATABASE_URL", "")
    name = f"lab_front_e2e_{os.getpid()}"
    admin_url = None
    if base.startswith(("postgres://", "postgresql://")):
        import psycopg

        parts = urlsplit(base)
        admin_url = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        env["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{name}"))
    else:
        env["DATABASE_URL"] = f"sqlite:///{folder / 'front.sqlite3'}"
    try:
        # Migrated here, not only by the front's start: the bare-gunicorn control runs without it.
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=300,
        )
        yield env
    finally:
        if admin_url:
            import psycopg

            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(folder, ignore_errors=True)


def new_front(env: dict[str, str]) -> Front:
    if nginx_front.nginx_binary() is None:
        if IN_CI:
            pytest.fail("CI=true but nginx is not installed (.ci/run installs it)")
        pytest.skip("nginx is not installed (make serve-production installs it)")
    home = Path(tempfile.mkdtemp(prefix="lab-front-run-"))
    return Front(port=free_port(), run_dir=home / "run", log=home / "serve.log", env=env)


def seed_product(env: dict[str, str]) -> str:
    return seed_tenant(env)["client_key"]


def seed_tenant(env: dict[str, str]) -> dict[str, str]:
    """A user with an API token and a product with one experiment and a client key."""
    suffix = f"{os.getpid()}-{time.monotonic_ns()}"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "e2e" / "seed.py"),
            "seed",
            json.dumps(
                {
                    "username": f"front-{suffix}",
                    "product": f"front-{suffix}"[:64],
                    "experiments": [{"key": "etch", "variants": [["short", 1], ["long", 1]]}],
                }
            ),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def front(database_env) -> Iterator[Front]:
    running = new_front(database_env)
    running.start()
    running.client_key = seed_product(database_env)
    yield running
    # Stopping is part of the contract: SIGTERM stops nginx and gunicorn, and nothing is left.
    status = running.stop(signal.SIGTERM)
    assert status == 0, running.tail()
    wait_until(lambda: not any(map(pid_alive, running.descendants)), 30, "no process left behind")
    shutil.rmtree(running.log.parent, ignore_errors=True)


# --- Slow clients


class Trickler:
    """Connections that send one byte per second and never finish their request: in the
    header (`part="header"`) or, after complete headers, in the body (`part="body"`).
    A connection the server closes is reopened at once, as an attacker would."""

    def __init__(self, base_url: str, part: str, connections: int, key: str = "x"):
        parts = urlsplit(base_url)
        self.address = (parts.hostname, parts.port)
        self.part = part
        self.connections = connections
        self.key = key
        self.stop = threading.Event()
        self.opened = 0
        self.closed_by_server = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(connections)
        ]

    def _prefix(self) -> bytes:
        if self.part == "header":
            return b"POST /api/v1/decide HTTP/1.1\r\nHost: localhost\r\n"
        return (
            "POST /api/v1/decide HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {self.key}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n"
        ).encode()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(self.address, timeout=5) as sock:
                    with self._lock:
                        self.opened += 1
                    sock.sendall(self._prefix())
                    filler = b"X-Slow: " if self.part == "header" else b'{"unit": "'
                    sock.sendall(filler[:1])
                    while not self.stop.wait(1.0):
                        # An answer (nginx's 408) or a close ends this connection.
                        sock.settimeout(0.001)
                        try:
                            if sock.recv(1024) == b"":
                                raise ConnectionResetError
                            raise ConnectionResetError
                        except TimeoutError:
                            pass
                        sock.settimeout(5)
                        sock.sendall(b"a")
                        with self._lock:
                            self.bytes_sent += 1
            except OSError:
                with self._lock:
                    self.closed_by_server += 1
                self.stop.wait(0.2)

    def __enter__(self) -> "Trickler":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)


def decide_while(front_url: str, key: str, seconds: float) -> list[tuple[int, float]]:
    """Decides, one at a time and a quarter of a second apart, for `seconds`."""
    answers = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        status, _, elapsed = decide(front_url, key, f"drill-{i}")
        answers.append((status, elapsed))
        i += 1
        time.sleep(0.25)
    return answers


def test_front__slow_clients_hold_twice_the_workers__decide_still_answers_at_once(front):
    # Given a Lab whose workers have each served a decide (connections open, config cached)
    warm = decide_while(front.base_url, front.client_key, 3)
    assert {status for status, _ in warm} == {200}
    # and 2 × workers connections trickling headers and 2 × workers trickling a body, one
    # byte per second, for 30 s (both at once)
    with (
        Trickler(front.base_url, "header", 2 * WORKERS) as headers,
        Trickler(front.base_url, "body", 2 * WORKERS, key=front.client_key) as bodies,
    ):
        time.sleep(1)
        # When a normal client decides meanwhile
        answers = decide_while(front.base_url, front.client_key, DRILL_SECONDS)

    # Then every decide answered, in well under a second
    statuses = {status for status, _ in answers}
    assert statuses == {200}, answers
    assert len(answers) >= DRILL_SECONDS * 2, len(answers)
    timings = sorted(elapsed for _, elapsed in answers)
    p95 = timings[int(0.95 * (len(timings) - 1))]
    summary = f"{len(timings)} decides: median {timings[len(timings) // 2]:.3f} s, p95 {p95:.3f} s"
    summary += f", slowest {timings[-1]:.3f} s"
    print(summary)
    assert p95 < DECIDE_P95_SECONDS, summary
    assert timings[-1] < DECIDE_MAX_SECONDS, summary
    # and the tricklers really were there: bodies kept their connections all along; nginx
    # cut the headers that took longer than client_header_timeout (10 s), and they came back
    assert bodies.bytes_sent >= 2 * WORKERS * (DRILL_SECONDS - 5)
    assert bodies.opened == 2 * WORKERS, bodies.opened
    assert headers.closed_by_server >= 2 * WORKERS, headers.closed_by_server
    assert headers.bytes_sent >= 2 * WORKERS * 5
    # and no gunicorn worker was held until its timeout
    assert "WORKER TIMEOUT" not in front.log.read_text(errors="replace")


def test_bare_gunicorn__same_trickle__stalls_decide(database_env):
    """The control: without the front, a trickling connection holds a worker, and a normal
    decide waits for it (here: past a 3 s timeout).

    One worker, so that the outcome does not depend on how the kernel spreads connections
    among workers: with two, all the trickling connections sometimes went to one worker and
    the other answered at once. A gthread worker hands a connection to its request thread as
    soon as bytes arrive, and the thread then reads the request to its end, byte by byte."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="lab-bare-") as home:
        env = {**database_env, "PROMETHEUS_MULTIPROC_DIR": home, "GUNICORN_THREADS": "1"}
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"),
                *("-w", "1", "-b", f"127.0.0.1:{port}", "config.wsgi:application"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base_url = f"http://127.0.0.1:{port}"
        key = seed_product(database_env)
        try:
            wait_until(lambda: _answers(base_url, key), 60, "bare gunicorn to answer")
            with Trickler(base_url, "header", 1) as trickle:
                wait_until(lambda: trickle.bytes_sent >= 1, 30, "the trickle to start")
                try:
                    status, _, elapsed = decide(base_url, key, "control", timeout=3)
                except TimeoutError:
                    status, elapsed = None, 3.0
                held = trickle.closed_by_server == 0
        finally:
            process.terminate()
            process.wait(30)
    assert held, "gunicorn closed the trickling connection"
    assert status is None or elapsed > 2, (status, elapsed)


def _answers(base_url: str, key: str) -> bool:
    try:
        return decide(base_url, key, "warm-up", timeout=2)[0] == 200
    except OSError:
        return False


# --- What the front does besides


def _raw(front: Front, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", front.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_front__body_over_lab_limit__413_json_before_gunicorn(front):
    limit = 8 * 1024 * 1024
    # Given headers announcing one byte more than DATA_UPLOAD_MAX_MEMORY_SIZE, and no body
    answer = _raw(
        front,
        (
            "POST /api/v1/decide/batch HTTP/1.1\r\nHost: localhost\r\n"
            f"Content-Type: application/json\r\nContent-Length: {limit + 1}\r\n"
            "Connection: close\r\n\r\n"
        ).encode(),
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    # Then nginx refuses it at once, with a JSON detail like Lab's own 413
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"application/json" in head
    assert json.loads(body)["detail"] == f"request body larger than {limit} bytes"


# The request head's limits (docs/contract.md, "Limits"): nginx refuses beyond them, in JSON;
# gunicorn's own limits are above them, so everything nginx lets through reaches Lab.
REQUEST_LINE_LIMIT = 8190
HEADER_LINE_LIMIT = 8190


def _get(front: Front, request_line: bytes, headers: bytes = b"") -> tuple[bytes, bytes]:
    answer = _raw(
        front, request_line + b"\r\nHost: localhost\r\n" + headers + b"Connection: close\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def _request_line(length: int) -> bytes:
    """`GET /healthz?pad=aaa... HTTP/1.1`, exactly `length` bytes (without its CRLF)."""
    fixed = len(b"GET /healthz?pad= HTTP/1.1")
    return b"GET /healthz?pad=" + b"a" * (length - fixed) + b" HTTP/1.1"


def _header_line(length: int) -> bytes:
    return b"X-Pad: " + b"a" * (length - len(b"X-Pad: ")) + b"\r\n"


def test_front__request_line_at_limit__served_by_lab(front):
    # Given a request line of exactly the documented limit (gunicorn's default refuses half)
    head, body = _get(front, _request_line(REQUEST_LINE_LIMIT))
    # Then Lab answers it
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body) == {"status": "ok"}


def test_front__request_line_over_limit__414_json(front):
    # Given a request line one byte over the limit
    head, body = _get(front, _request_line(REQUEST_LINE_LIMIT + 1))
    # Then the front refuses it with a JSON detail, not an HTML page
    assert head.startswith(b"HTTP/1.1 414"), head
    assert b"application/json" in head
    assert json.loads(body)["detail"] == (
        f"request line (method, path and query) longer than {REQUEST_LINE_LIMIT} bytes"
    )


def test_front__headers_within_limits__served_by_lab(front):
    # Given a header line of exactly the limit and 200 more header lines (gunicorn's default
    # refuses a header line over 8190 bytes with the CRLF, and more than 100 lines)
    many = b"".join(b"X-Extra-%d: %d\r\n" % (n, n) for n in range(200))
    head, body = _get(front, b"GET /healthz HTTP/1.1", _header_line(HEADER_LINE_LIMIT) + many)
    # Then Lab answers it
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body) == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(_header_line(HEADER_LINE_LIMIT + 1), id="one-header-line-over-8190-bytes"),
        pytest.param(_header_line(8000) * 5, id="headers-over-32-KiB-in-all"),
    ],
)
def test_front__headers_over_limit__431_json(front, headers):
    head, body = _get(front, b"GET /healthz HTTP/1.1", headers)
    # Then the front refuses them with 431 and a JSON detail (nginx alone would say 400)
    assert head.startswith(b"HTTP/1.1 431"), head
    assert b"application/json" in head
    assert json.loads(body)["detail"] == (
        f"request header line longer than {HEADER_LINE_LIMIT} bytes, "
        "or headers longer than 32768 bytes in all"
    )


def test_front__keep_alive__two_requests_on_one_connection(front):
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    try:
        conn.request("GET", "/healthz", headers={"Host": "localhost"})
        first = conn.getresponse()
        first.read()
        local = conn.sock.getsockname()
        conn.request("GET", "/healthz", headers={"Host": "localhost"})
        second = conn.getresponse()
        second.read()
        assert conn.sock is not None and conn.sock.getsockname() == local
    finally:
        conn.close()
    assert (first.status, second.status) == (200, 200)
    assert first.getheader("Connection", "keep-alive").lower() != "close"


def test_front__decide_answers_through_nginx(front):
    status, body, _ = decide(front.base_url, front.client_key, "SN-front")

    assert status == 200
    assert body["variants"]["etch"] in ("short", "long")


def test_front__api_docs_and_their_assets__render_through_nginx(front):
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    try:
        conn.request(
            "GET",
            "/static/ninja/swagger-ui-bundle.js",
            headers={"Host": "localhost", "Accept-Encoding": "gzip"},
        )
        asset = conn.getresponse()
        asset.read()
    finally:
        conn.close()
    assert asset.status == 200
    assert asset.getheader("Content-Encoding") == "gzip"

    dom = render_dom(f"{front.base_url}/api/v1/docs")
    assert 'data-path="/api/v1/decide"' in dom


def _call(base_url: str, method: str, path: str, headers: dict[str, str], body=None):
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        payload = json.dumps(body) if body is not None else None
        conn.request(
            method, path, body=payload, headers={"Content-Type": "application/json", **headers}
        )
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_front__key_over_its_rate__429_json_with_retry_after_and_other_keys_still_served(
    database_env,
):
    # Given the front with low limits, and two tenants
    env = {
        **database_env,
        "LAB_DECIDE_RATE": "2",
        "LAB_DECIDE_BURST": "3",
        "LAB_ADMIN_RATE": "1",
        "LAB_ADMIN_BURST": "2",
        "CORS_ALLOWED_ORIGINS": "https://line.example",
    }
    limited = new_front(env)
    limited.start()
    try:
        flooder, quiet = seed_tenant(env), seed_tenant(env)

        # When one tenant sends decides, OFREP evaluations and admin calls far above its rate
        def flood(method, path, headers, body=None, times=12):
            return [_call(limited.base_url, method, path, headers, body) for _ in range(times)]

        bearer = {
            "Authorization": f"Bearer {flooder['client_key']}",
            "Origin": "https://line.example",
        }
        decides = flood("POST", "/api/v1/decide", bearer, {"unit": "u-1"})
        by_header = flood(
            "POST",
            "/ofrep/v1/evaluate/flags/etch",
            {"X-API-Key": flooder["client_key"]},
            {"context": {"targetingKey": "u-1"}},
        )
        admin_path = f"/api/admin/v1/products/{flooder['product']}"
        admin = flood("GET", admin_path, {"Authorization": f"Bearer {flooder['api_token']}"})

        # Then beyond its burst it gets 429s, each JSON with a detail and a Retry-After
        for replies in (decides, by_header, admin):
            statuses = [status for status, _, _ in replies]
            assert statuses.count(429) >= 6, statuses
            assert set(statuses) <= {200, 429}, statuses
            for status, headers, body in replies:
                if status == 429:
                    assert headers["Retry-After"] == "1"
                    assert headers["Content-Type"] == "application/json"
                    assert "retry" in json.loads(body)["detail"]
        # And a browser's client on an allowed origin can read the 429 and its Retry-After,
        # as it reads Lab's own answers
        for status, headers, _ in decides:
            headers = {name.lower(): value for name, value in headers.items()}
            assert headers.get("access-control-allow-origin") == "https://line.example", status
            assert "retry-after" in headers["access-control-expose-headers"], status
        # (never on the admin API, which answers no CORS request)
        admin_from_page = flood(
            "GET",
            admin_path,
            {"Authorization": f"Bearer {flooder['api_token']}", "Origin": "https://line.example"},
            times=3,
        )
        assert [status for status, _, _ in admin_from_page] == [429] * 3
        for _, headers, _ in admin_from_page:
            assert "access-control-allow-origin" not in {name.lower() for name in headers}
        # And another tenant, at once, is served as usual on both APIs
        quiet_bearer = {"Authorization": f"Bearer {quiet['client_key']}"}
        status, _, _ = _call(
            limited.base_url, "POST", "/api/v1/decide", quiet_bearer, {"unit": "u-1"}
        )
        assert status == 200
        quiet_admin = {"Authorization": f"Bearer {quiet['api_token']}"}
        status, _, _ = _call(
            limited.base_url, "GET", f"/api/admin/v1/products/{quiet['product']}", quiet_admin
        )
        assert status == 200
    finally:
        limited.stop(signal.SIGTERM)
        shutil.rmtree(limited.log.parent, ignore_errors=True)


def test_serve_production__ctrl_c__stops_nginx_and_gunicorn(database_env):
    # Given a second instance of the production front
    running = new_front(database_env)
    running.start()
    nginx_pid = int((running.run_dir / "nginx.pid").read_text())
    assert nginx_pid in running.descendants
    assert len(running.descendants) >= 2 + WORKERS  # nginx, gunicorn and its workers

    # When it gets Ctrl-C (SIGINT)
    status = running.stop(signal.SIGINT)

    # Then it exits cleanly, every process it started is gone, and the port is free again
    assert status == 0, running.tail()
    wait_until(lambda: not any(map(pid_alive, running.descendants)), 30, "no process left behind")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", running.port))
    shutil.rmtree(running.log.parent, ignore_errors=True)
