"""End-to-end fixtures: a real multi-worker gunicorn over a fresh, migrated database.

The server runs `gunicorn -c gunicorn.conf.py config.wsgi:application` (the production command)
on a free port. Its database is its own: with DATABASE_URL set (PostgreSQL), a database
`lab_e2e_<pid>` created here and dropped afterwards; otherwise a temporary SQLite file. It
uses REDIS_URL when set (the test session's Redis db: every test flushes it first, see
tests/conftest.py, and only the server writes to it during an e2e test).

Objects are created in the server's database by `Server.orm(...)`, which runs
tests/e2e/seed.py in a process configured like the server.

`page_host` serves static pages from another origin than the server's (another port); the
server allows that origin in CORS_ALLOWED_ORIGINS, as an operator would for a web front end.
"""

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
START_TIMEOUT_SECONDS = 60


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    base_url: str
    env: dict[str, str]
    log_path: Path
    workers: int = WORKERS
    vendor: str = "sqlite"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def post(self, path: str, body, key: str | None = None, **headers) -> requests.Response:
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # A new connection per call: the sync workers close it after each response anyway,
        # and each call may land on another worker.
        return requests.post(self.url(path), json=body, headers=headers, timeout=30)

    def get(self, path: str, **headers) -> requests.Response:
        return requests.get(self.url(path), headers=headers, timeout=30)

    def admin(self, method: str, path: str, token: str, body=None) -> requests.Response:
        """An admin API call (`path` under /api/admin/v1) with an API token."""
        return requests.request(
            method,
            self.url(f"/api/admin/v1{path}"),
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def decide(self, key: str, unit: str, **filters) -> dict:
        response = self.post("/api/v1/decide", {"unit": unit, **filters}, key)
        assert response.status_code == 200, response.text
        return response.json()["variants"]

    def orm(self, action: str, **arguments) -> dict:
        """Run an action of tests/e2e/seed.py against the server's database."""
        completed = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "e2e" / "seed.py"),
                action,
                json.dumps(arguments),
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        return json.loads(completed.stdout.strip().splitlines()[-1])

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """One scrape of /metrics: {(sample name, sorted labels): value}."""
        response = self.get("/metrics")
        assert response.status_code == 200
        samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def in_parallel(self, calls, threads: int = 16) -> list:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(lambda call: call(), calls))

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _postgres_database(name: str | None = None) -> Iterator[tuple[str, str]]:
    import psycopg

    base = os.environ["DATABASE_URL"]
    name = name or f"lab_e2e_{os.getpid()}"
    parts = urlsplit(base)
    admin_url = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}")), "postgresql"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _sqlite_database(folder: Path) -> Iterator[tuple[str, str]]:
    yield f"sqlite:///{folder / 'e2e.sqlite3'}", "sqlite"


def server_env(database_url: str) -> dict[str, str]:
    """The environment of a server process on `database_url` (and this run's Redis)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
        ACCESS_LOG_LEVEL="WARNING",
    )
    return env


def migrate(env: dict[str, str]) -> None:
    completed = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


@contextmanager
def gunicorn(env: dict[str, str], folder: Path, vendor: str) -> Iterator[Server]:
    """The production command, `gunicorn -c gunicorn.conf.py`, on a free port."""
    port = _free_port()
    log_path = folder / f"gunicorn-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "gunicorn.conf.py",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(WORKERS),
                "config.wsgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = Server(f"http://127.0.0.1:{port}", env, log_path, vendor=vendor)
    try:
        _wait_until_up(running, process)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class PageHost:
    """A static file server for test pages: `folder` is served at http://127.0.0.1:`port`/."""

    folder: Path
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="session")
def page_host() -> Iterator[PageHost]:
    folder = Path(tempfile.mkdtemp(prefix="lab-e2e-pages-"))
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield PageHost(folder, httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def server(page_host) -> Iterator[Server]:
    folder = Path(tempfile.mkdtemp(prefix="lab-e2e-"))
    postgres = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
    databases = _postgres_database() if postgres else _sqlite_database(folder)
    database_url, vendor = next(databases)
    try:
        env = server_env(database_url)
        env["CORS_ALLOWED_ORIGINS"] = page_host.origin
        migrate(env)
        with gunicorn(env, folder, vendor) as running:
            yield running
    finally:
        databases.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_up(server: Server, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited ({process.returncode}):\n{server.log_tail()}")
        try:
            if server.get("/healthz").status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not answer /healthz:\n{server.log_tail()}")


@pytest.fixture
def seeded(server) -> dict:
    """A fresh product (own tenant, client key, admin token) with three experiments."""
    suffix = f"{os.getpid()}-{time.monotonic_ns()}"
    return server.orm(
        "seed",
        username=f"e2e-{suffix}",
        product=f"p-{suffix}"[:64],
        experiments=[
            {"key": "etch", "variants": [["short", 1], ["long", 1]]},
            {"key": "anneal", "variants": [["a", 1], ["b", 1], ["c", 1]]},
            {"key": "litho", "variants": [["x", 1], ["y", 3]], "coverage": 0.5},
        ],
    )
