"""`make serve` (deploy/serve.py --demo): ready means ready.

What it prints can be pasted the moment it appears; a busy port or a missing PostgreSQL
database stops it before it prints any key, with a message that says what to do.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.e2e.processes import children, free_port, pid_alive, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def serve_env(database_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS", "TEST_DATABASE_NAME")
    }
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        LOG_LEVEL="WARNING",
        ACCESS_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "deploy/serve.py",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--demo",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_make_serve__printed_curls__answer_the_moment_they_appear(tmp_path):
    # Given `make serve` on a fresh embedded database, with no SECRET_KEY set (as a new user
    # runs it): it makes a key file of its own
    env = serve_env(f"sqlite:///{tmp_path / 'lab.sqlite3'}")
    del env["SECRET_KEY"]
    key_file = tmp_path / ".secret_key"
    env["SECRET_KEY_FILE"] = str(key_file)
    port = free_port()
    log = tmp_path / "serve.log"
    process = serve(port, env, log)
    try:
        # When its admin token line appears (the last thing it prints before serving)
        wait_until(
            lambda: (
                process.poll() is None and "Lab is serving on" in log.read_text(errors="replace")
            ),
            120,
            "make serve to print its curls",
        )
        text = log.read_text(errors="replace")
        # Then the decide curl answers at once, with the printed client key
        client_key = re.search(r"Client key: (\S+)", text).group(1)
        token = re.search(r"Admin API token: (\S+)", text).group(1)
        decide = requests.post(
            f"http://127.0.0.1:{port}/api/v1/decide",
            json={"unit": "SN-0001"},
            headers={"Authorization": f"Bearer {client_key}"},
            timeout=2,
        )
        assert decide.status_code == 200, decide.text
        assert decide.json()["variants"]
        products = requests.get(
            f"http://127.0.0.1:{port}/api/admin/v1/products",
            headers={"Authorization": f"Bearer {token}"},
            timeout=2,
        )
        assert products.status_code == 200, products.text
        # and the curls name the address it serves on
        assert f"http://127.0.0.1:{port}/api/v1/decide" in text
        # and its export line, pasted in a shell, sets the variables the pages' examples use
        export = re.search(r"^export LAB=.*$", text, re.MULTILINE).group(0)
        shell = subprocess.run(
            [
                "bash",
                "-c",
                f"{export}\ncurl -sf -X POST $LAB/api/v1/decide -H "
                '"Authorization: Bearer $LAB_CLIENT_KEY" -H "Content-Type: application/json" '
                '-d \'{"unit": "SN-0001"}\' && curl -sf $LAB/api/admin/v1/products '
                '-H "Authorization: Bearer $TOKEN"',
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shell.returncode == 0, shell.stderr
        assert '"unit":"SN-0001"' in shell.stdout and '"demo-widget"' in shell.stdout
        # and the key it made is random, kept, and readable by its owner only
        assert len(key_file.read_text().strip()) >= 50
        assert key_file.stat().st_mode & 0o777 == 0o600
        started = children(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        status = process.wait(60)
    assert status == 0, log.read_text(errors="replace")[-3000:]
    wait_until(lambda: not any(map(pid_alive, started)), 30, "gunicorn to stop")


def serve_refused(env: dict[str, str], port: int | None = None) -> str:
    """Run deploy/serve.py --demo expecting it to refuse to start: what it printed."""
    completed = subprocess.run(
        [sys.executable, "deploy/serve.py", "--bind", f"127.0.0.1:{port or free_port()}", "--demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    return output


def postgres_url() -> str:
    """The suite's PostgreSQL server (DATABASE_URL), or skip (a failure under CI)."""
    base = os.environ.get("DATABASE_URL", "")
    if not base.startswith(("postgres://", "postgresql://")):
        from tests.conftest import requires_postgres

        requires_postgres()
    return base


def test_make_serve__port_busy__fails_fast_before_printing_a_key(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = serve_env(f"sqlite:///{tmp_path / 'lab.sqlite3'}")
        started = time.monotonic()
        output = serve_refused(env, port)
    assert f"Cannot listen on 127.0.0.1:{port}" in output
    assert "Client key" not in output and "Admin API token" not in output
    assert not (tmp_path / "lab.sqlite3").exists()  # nothing was written either
    assert time.monotonic() - started < 10


def test_make_serve__postgres_database_missing__says_how_to_create_it(tmp_path):
    parts = urlsplit(postgres_url())
    missing = f"lab_missing_{os.getpid()}"
    output = serve_refused(serve_env(urlunsplit(parts._replace(path=f"/{missing}"))))
    host, pg_port = parts.hostname, parts.port or 5432
    assert f"createdb -h {host} -p {pg_port}" in output and missing in output, output
    assert "Client key" not in output


class SlowRelay:
    """A TCP relay to PostgreSQL that holds its first connection's bytes for `delay` seconds:
    a server too busy to answer within a request's wait (DATABASE_RECONNECT_WAIT_SECONDS).
    Later connections go through at once, so that psycopg's own connect_timeout, should a
    busy machine make the first attempt outlast it, is not met again by the next one."""

    def __init__(self, target: tuple[str, int], delay: float):
        self.target = target
        self.delays = [delay]
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with contextlib.suppress(IndexError):
            time.sleep(self.delays.pop())
        with client, socket.create_connection(self.target) as server:
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
            self._pipe(client, server)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


def test_make_serve__busy_postgres_database_missing__waits_for_its_answer(tmp_path):
    """A server that takes longer than a request's 3-s wait to answer still gets asked to
    the end at the start: the message is the createdb one, not "cannot connect"."""
    parts = urlsplit(postgres_url())
    relay = SlowRelay((parts.hostname, parts.port or 5432), delay=3.5)
    try:
        missing = f"lab_missing_{os.getpid()}"
        netloc = parts.netloc.rsplit("@", 1)
        netloc[-1] = f"127.0.0.1:{relay.port}"
        output = serve_refused(
            serve_env(urlunsplit(parts._replace(netloc="@".join(netloc), path=f"/{missing}")))
        )
    finally:
        relay.close()
    assert f"createdb -h 127.0.0.1 -p {relay.port}" in output and missing in output, output


def serve_on(bind: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "deploy/serve.py", "--bind", bind, "--workers", "1"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def serving(bind: str, tmp_path: Path):
    """Start deploy/serve.py on `bind` with ALLOWED_HOSTS unset; (process, its output)."""
    env = serve_env(f"sqlite:///{tmp_path / 'lab.sqlite3'}")
    env.pop("ALLOWED_HOSTS", None)
    log = tmp_path / "serve.log"
    process = serve_on(bind, env, log)
    wait_until(
        lambda: process.poll() is not None or "Lab is serving on" in log.read_text("utf-8"),
        120,
        "serve.py to serve",
    )
    assert process.poll() is None, log.read_text(errors="replace")[-3000:]
    return process, log.read_text(errors="replace")


def stop_serving(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0


def test_serve__bound_to_one_address__answers_requests_sent_to_it(tmp_path):
    # Given Lab served on a loopback address other than 127.0.0.1, ALLOWED_HOSTS unset
    port = free_port()
    process, _ = serving(f"127.0.0.2:{port}", tmp_path)
    try:
        # When a client sends a request to that address (its Host header names it)
        answer = requests.get(f"http://127.0.0.2:{port}/healthz", timeout=5)
        # Then Lab answers it instead of refusing the Host with a 400
        assert answer.status_code == 200, answer.text
    finally:
        stop_serving(process)


def test_serve__bound_to_every_address__says_which_hosts_it_answers(tmp_path):
    # Given Lab served on 0.0.0.0 (as `make serve-production BIND=0.0.0.0:8080`)
    port = free_port()
    process, output = serving(f"0.0.0.0:{port}", tmp_path)
    try:
        # Then it says, before it serves, which Host names it answers and how to add others
        note = next(line for line in output.splitlines() if line.startswith("Note: "))
        assert "localhost, 127.0.0.1" in note and "ALLOWED_HOSTS=" in note, note
        # and that is what it does: another name gets a 400
        other = requests.get(
            f"http://127.0.0.1:{port}/healthz", headers={"Host": "lab.example.com"}, timeout=5
        )
        assert other.status_code == 400 and "Host" in other.json()["detail"]
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        stop_serving(process)
