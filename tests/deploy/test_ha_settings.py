"""Lab's settings take libpq's multi-host DATABASE_URL of the Patroni cluster (deploy/ha)."""

import concurrent.futures
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import environ
import psycopg
import pytest
from django.db import OperationalError, connection

from lab.postgresql.base import (
    DatabaseWrapper,
    _wait_deadline,
    request_finished,
    request_started,
)
from tests.conftest import requires_postgres
from tests.drills.harness import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_settings__multi_host_url__keeps_every_host_and_the_session_attrs():
    # Given the DATABASE_URL `make ha-up` prints
    url = "postgres://postgres@127.0.0.1:5440,127.0.0.1:5441/lab?target_session_attrs=read-write"
    # When the settings parse it
    database = environ.Env.db_url_config(url)
    # Then libpq gets both hosts, in order, and connects only to the one that takes writes
    assert database["HOST"] == "127.0.0.1,127.0.0.1"
    assert database["PORT"] == "5440,5441"
    assert database["OPTIONS"]["target_session_attrs"] == "read-write"
    assert database["NAME"] == "lab"


@pytest.mark.django_db
def test_settings__multi_host_url_whose_first_host_is_down__lab_uses_the_next():
    requires_postgres()
    # Given a DATABASE_URL whose first host answers nothing and whose second is the database
    settings = connection.settings_dict
    dead = free_port()
    url = (
        f"postgres://{settings['USER']}@127.0.0.1:{dead},{settings['HOST']}:{settings['PORT']}"
        f"/{settings['NAME']}?target_session_attrs=read-write"
    )
    # When Lab's settings connect with it (a process of its own, as gunicorn would)
    probe = (
        "import django; django.setup(); from django.db import connection; "
        "from decide.memory.listener import listener_connection_params; import psycopg; "
        "c = connection.cursor(); c.execute('SELECT inet_server_port()'); "
        "print(c.fetchone()[0]); "
        "p = psycopg.connect(**listener_connection_params()); "
        "print(p.execute('SELECT inet_server_port()').fetchone()[0])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_NAME"}
    env.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="config.settings")
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    # Then both Django's connection and the known-unit listener's reach the second host
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [str(settings["PORT"])] * 2


class _LateServer:
    """A port that refuses connections until `opens_after` seconds have passed, then
    forwards each one to PostgreSQL: a primary that appears during a handover."""

    def __init__(self, target: tuple[str, int], opens_after: float):
        self.port = free_port()
        self.target = target
        self.opens_after = opens_after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _serve(self):
        if self._stop.wait(self.opens_after):
            return
        with socket.create_server(("127.0.0.1", self.port)) as server:
            server.settimeout(0.1)
            while not self._stop.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(self.target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _wrapper(port: int, wait_seconds: float, **options) -> DatabaseWrapper:
    settings = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": str(port)}
    settings["RECONNECT_WAIT_SECONDS"] = wait_seconds
    settings["OPTIONS"] = {**settings["OPTIONS"], "target_session_attrs": "read-write", **options}
    return DatabaseWrapper(settings, alias=f"reconnect-{port}")


@pytest.fixture(autouse=True)
def _worker_state_reset():
    """Each test starts as a fresh worker: no request under way, no wait given up."""
    yield
    request_finished()
    DatabaseWrapper._gave_up = False


def _seconds_to_fail(database: DatabaseWrapper) -> float:
    """How long Lab takes to give up connecting (the API then answers 503)."""
    started = time.monotonic()
    with pytest.raises(OperationalError):
        database.ensure_connection()
    return time.monotonic() - started


@pytest.mark.django_db
def test_connect__no_primary_for_a_second__waits_for_it_within_the_bound():
    requires_postgres()
    # Given a database that accepts no connection for the first second (a switchover)
    upstream = (connection.settings_dict["HOST"], int(connection.settings_dict["PORT"]))
    with _LateServer(upstream, opens_after=1.0) as late:
        database = _wrapper(late.port, wait_seconds=4.0)
        started = time.monotonic()
        # When Lab needs a connection at once
        with database.cursor() as cursor:
            cursor.execute("SELECT 1")
            answer = cursor.fetchone()[0]
        waited = time.monotonic() - started
        database.close()
    # Then it gets one as soon as the server accepts, without an error
    assert answer == 1
    assert 0.9 <= waited < 4.0


@pytest.mark.django_db
def test_connect__no_primary_longer_than_the_bound__fails_after_it_then_at_once():
    requires_postgres()
    # Given a database that accepts no connection at all, and a wait of half a second
    database = _wrapper(free_port(), wait_seconds=0.5)
    try:
        # When Lab needs a connection
        first = _seconds_to_fail(database)
        # Then it gives up after the bound (503 + Retry-After in the API)
        assert 0.4 <= first < 2.0
        # And the worker's next request does not wait again while there is still no primary
        assert _seconds_to_fail(database) < 0.3
    finally:
        DatabaseWrapper._gave_up = False


@pytest.mark.django_db
def test_connect__request_queued_at_the_front__waits_only_what_is_left_of_the_bound():
    requires_postgres()
    # Given no primary, a wait of 3 s, and a request nginx received 2.5 s ago (it queued
    # behind workers that were waiting for a primary)
    database = _wrapper(free_port(), wait_seconds=3.0)
    request_started(f"t={time.time() - 2.5:.3f}")
    try:
        # When the request needs a connection
        # Then it waits what is left of the 3 s since the front received it, not 3 s more
        assert 0.2 <= _seconds_to_fail(database) < 1.5
        # And a second connection in the same request (its statement failed) waits no more
        database.close()
        DatabaseWrapper._gave_up = False
        assert _seconds_to_fail(database) < 0.3
    finally:
        request_finished()
        DatabaseWrapper._gave_up = False


@pytest.mark.django_db
def test_connect__request_that_queued_the_whole_bound__tries_once_and_the_next_waits_again():
    requires_postgres()
    # Given a database that opens after a second, and a request nginx received 4 s ago
    upstream = (connection.settings_dict["HOST"], int(connection.settings_dict["PORT"]))
    with _LateServer(upstream, opens_after=1.0) as late:
        database = _wrapper(late.port, wait_seconds=3.0)
        try:
            request_started(f"t={time.time() - 4:.3f}")
            # When it needs a connection: one attempt, at once (503 well within the client's
            # timeout rather than 3 s more)
            assert _seconds_to_fail(database) < 0.3
            # Then the worker's next request, which has its time, still waits for the primary
            request_finished()
            request_started(None)
            with database.cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone()[0] == 1
            database.close()
        finally:
            request_finished()
            DatabaseWrapper._gave_up = False


@pytest.mark.django_db
def test_connect__attempt_that_hangs__gives_up_at_the_bound_not_at_connect_timeout():
    requires_postgres()
    # Given a server that takes connections and never answers (a standby being promoted on a
    # machine too busy to start its backend), a wait of 0.6 s and a 20 s connect_timeout,
    # which psycopg would otherwise wait out
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        database = _wrapper(silent.getsockname()[1], wait_seconds=0.6, connect_timeout=20)
        # When Lab needs a connection, then the attempt under way ends with the wait, not
        # 20 s later (the fixture forgets the worker's "gave up" afterwards); the bound
        # leaves a busy machine several seconds to schedule the attempt's end
        assert _seconds_to_fail(database) < 6.0


@pytest.mark.django_db
@pytest.mark.parametrize("what", ["database", "role"])
def test_connect__database_or_role_missing__fails_at_once_with_the_servers_reason(what):
    requires_postgres()
    # Given a server that answers, a wait of 10 s, and a database (or a role) it does not have
    database = _wrapper(int(connection.settings_dict["PORT"]), wait_seconds=10.0)
    key = "NAME" if what == "database" else "USER"
    database.settings_dict[key] = f"lab_missing_{os.getpid()}"
    started = time.monotonic()
    # When Lab needs a connection
    with pytest.raises(OperationalError) as failed:
        database.ensure_connection()
    # Then no wait cures it: the server's own reason comes back at once (well within the
    # wait, on a busy machine too), and the worker's next request still waits for a primary
    assert time.monotonic() - started < 5
    assert f'{what} "lab_missing_{os.getpid()}" does not exist' in str(failed.value)
    assert DatabaseWrapper._gave_up is False


@pytest.mark.django_db
def test_connect__wait_ends_during_an_attempt__says_what_the_attempts_before_it_met():
    requires_postgres()
    # Given a port that refuses for a moment and then hangs (a server starting on a machine
    # too busy to answer), and a wait of 3 s (the port opens well within it, busy or not)
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        port = silent.getsockname()[1]
        silent.close()
        database = _wrapper(port, wait_seconds=3.0)

        def hang_after(seconds):
            time.sleep(seconds)
            return socket.create_server(("127.0.0.1", port), backlog=64)

        opener = concurrent.futures.ThreadPoolExecutor(1)
        hanging = opener.submit(hang_after, 0.3)
        try:
            # When Lab needs a connection
            with pytest.raises(OperationalError) as failed:
                database.ensure_connection()
        finally:
            hanging.result().close()
            opener.shutdown()
    # Then the error says the wait ended, and what the attempts before the last one met
    assert "the wait for a server that accepts writes ended; before it:" in str(failed.value)
    assert "refused" in str(failed.value)


@pytest.mark.django_db
def test_connect__attempt_outside_a_wait__keeps_psycopgs_connect_timeout():
    requires_postgres()
    # Given the same silent server and no wait (DATABASE_RECONNECT_WAIT_SECONDS=0)
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        settings = {**connection.settings_dict, "HOST": "127.0.0.1"}
        settings.update(PORT=str(silent.getsockname()[1]), RECONNECT_WAIT_SECONDS=0)
        settings["OPTIONS"] = {**settings["OPTIONS"], "connect_timeout": 2}
        database = DatabaseWrapper(settings, alias="no-wait")
        # When Lab needs a connection
        # Then libpq's timeout applies as it always did (no deadline of a wait)
        assert _seconds_to_fail(database) >= 1.9


def test_request_started__front_clock_far_off__the_worker_clock_is_used():
    # Given X-Request-Start values from a clock that disagrees with this host's, or garbage
    for header in (f"t={time.time() + 30:.3f}", f"t={time.time() - 3600:.3f}", "t=soon", ""):
        # When a request starts with it
        request_started(header)
        # Then the wait counts from now: the whole bound is left
        left = _wait_deadline(3.0) - time.monotonic()
        request_finished()
        assert 2.9 < left <= 3.0, header


def test_settings__reconnect_wait__is_on_the_primary_and_well_under_the_timeouts():
    # Given the shipped settings on PostgreSQL
    database = environ.Env.db_url_config("postgres://postgres@127.0.0.1:5432/lab")
    assert database["ENGINE"] == "django.db.backends.postgresql"
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != settings.POSTGRESQL_ENGINE:
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    # Then the primary's connections wait for a primary, a few seconds at most
    wait = settings.DATABASES["default"]["RECONNECT_WAIT_SECONDS"]
    assert 0 < wait <= 5


@pytest.mark.django_db(transaction=True)
def test_decide_read__kept_connection_ended_by_the_server__read_again_on_a_new_one():
    requires_postgres()
    from decide import store
    from decide.auth import ClientCredential, InvalidClientKey

    # Given the worker's kept connection, ended by the server since its last request
    # (a switchover ends the old primary's sessions)
    credential = ClientCredential("nosuchprefix", "lab_ck_nosuchprefix_secret")
    with pytest.raises(InvalidClientKey):
        store.check_client_key(credential)
    old_pid = connection.connection.info.backend_pid
    with psycopg.connect(**connection.get_connection_params() | {"autocommit": True}) as admin:
        # With a timeout it returns once the session is gone, not when it is signalled: a
        # busy machine could otherwise run the next read on it first.
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", [old_pid])
    # When decide reads on it
    # Then the read runs on a new connection (the key is unknown: its answer, not a 503)
    with pytest.raises(InvalidClientKey):
        store.check_client_key(credential)
    assert connection.connection.info.backend_pid != old_pid
