"""Lab through the distribution's PgBouncer (1.18), as docs/scaling.md §4 says to run it.

A throwaway PgBouncer on a free port, in front of the shared PostgreSQL, with a database of
this module's own (migrated and seeded with `seed_drill`); real gunicorn behind it:
(a) session pooling with Lab's defaults, (b) transaction pooling with
DATABASE_PREPARE_THRESHOLD=none and `ignore_startup_parameters = options`. Then what §4 says
breaks: transaction pooling with preparation on, where two clients' prepared statements
meet on the same server connection.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from tests.conftest import requires_postgres
from tests.drills.harness import (
    LabServer,
    Seed,
    call,
    free_port,
    manage,
    run_as_postgres_user,
    service_env,
    unavailable,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
DATABASE_SUFFIX = "_pgbouncer"
WORKERS = 3
# Transaction pooling shares fewer server connections than gunicorn workers. Session
# pooling cannot: each worker keeps its connection (CONN_MAX_AGE), and so holds a server
# connection for as long; a worker beyond the pool waits for one (query_wait_timeout).
POOL_SIZE = {"session": WORKERS, "transaction": 2}
THREADS = 4
UNITS_PER_THREAD = 15


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


def _server() -> tuple[str, int, str]:
    database = settings.DATABASES["default"]
    host = database["HOST"] or "127.0.0.1"
    return host, int(database["PORT"] or 5432), database["USER"] or "postgres"


def _url(host: str, port: int, user: str, name: str) -> str:
    return f"postgres://{user}@{host}:{port}/{name}"


class PgBouncer:
    """pgbouncer in the foreground on 127.0.0.1:`port`, routing `database` to PostgreSQL."""

    def __init__(self, home: Path, mode: str, database: str, pool_size: int | None = None):
        self.home = home
        self.mode = mode
        self.pool_size = pool_size or POOL_SIZE[mode]
        self.database = database
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        host, port, user = _server()
        ini = self.home / "pgbouncer.ini"
        users = self.home / "users.txt"
        users.write_text(f'"{user}" ""\n')
        ini.write_text(
            "[databases]\n"
            f"{self.database} = host={host} port={port} dbname={self.database} user={user}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\nadmin_users = {user}\n"
            f"pool_mode = {self.mode}\ndefault_pool_size = {self.pool_size}\n"
            "max_client_conn = 200\n"
            # Lab sends its statement_timeout as a startup `options` (config/settings.py).
            "ignore_startup_parameters = options\n"
            f"logfile = {self.home / 'pgbouncer.log'}\n"
        )
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root.
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.home)], check=True)
        self.process = subprocess.Popen(
            run_as_postgres_user([_pgbouncer_binary(), str(ini)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def listening() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"pgbouncer exited:\n{self.log_tail()}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, 20, "pgbouncer to listen")

    def url(self) -> str:
        _, _, user = _server()
        return _url("127.0.0.1", self.port, user, self.database)

    def show(self, what: str) -> list[dict]:
        """The admin console's SHOW `what` (psql: the console speaks the simple protocol)."""
        _, _, user = _server()
        run = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", "pgbouncer",
             "-A", "-F", "\t", "-P", "footer=off", "-c", f"SHOW {what}"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        header, *rows = run.stdout.strip().splitlines()
        names = header.split("\t")
        return [dict(zip(names, row.split("\t"), strict=True)) for row in rows]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        log = self.home / "pgbouncer.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def lab_database() -> Iterator[tuple[str, Seed]]:
    """A database of this module's own on the shared PostgreSQL, migrated and seeded."""
    requires_postgres()
    if _pgbouncer_binary() is None:
        unavailable("pgbouncer is not installed (apt-get install pgbouncer)")
    if shutil.which("psql") is None:
        unavailable("psql is not installed")
    host, port, user = _server()
    name = settings.DATABASES["default"]["TEST"]["NAME"] + DATABASE_SUFFIX
    admin = _url(host, port, user, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = service_env(DATABASE_URL=_url(host, port, user, name))
        manage("migrate", "--no-input", env=env)
        seed = Seed(**json.loads(manage("seed_drill", env=env).splitlines()[-1]))
        yield name, seed
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lab-pgbouncer-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _stored(database: str, product: str, units: list[str]) -> dict[tuple[str, str], list[str]]:
    """(unit, experiment) -> the variants stored for it, read on PostgreSQL itself."""
    host, port, user = _server()
    with psycopg.connect(_url(host, port, user, database)) as conn:
        rows = conn.execute(
            "SELECT u.key, e.key, v.key FROM lab_assignment a "
            "JOIN lab_unit u ON u.id = a.unit_id JOIN lab_experiment e ON e.id = a.experiment_id "
            "JOIN lab_variant v ON v.id = a.variant_id JOIN lab_product p ON p.id = u.product_id "
            "WHERE p.key = %s AND u.key = ANY(%s)",
            [product, units],
        ).fetchall()
    stored: dict[tuple[str, str], list[str]] = {}
    for unit, experiment, variant in rows:
        stored.setdefault((unit, experiment), []).append(variant)
    return stored


def _decide_through(lab: LabServer, seed: Seed, prefix: str) -> tuple[dict, list]:
    """New units from several threads at once, then each unit again and in a batch: every
    answer kept as {(unit, experiment): variant}, and every answer that was not a 200."""
    answered: dict[tuple[str, str], set[str]] = {}
    failures: list = []
    lock = threading.Lock()

    def keep(reply) -> None:
        with lock:
            if reply.status != 200:
                failures.append(reply)
                return
            decisions = reply.body.get("decisions", [reply.body])
            for decision in decisions:
                for experiment, variant in decision["variants"].items():
                    answered.setdefault((decision["unit"], experiment), set()).add(variant)

    def run(thread: int) -> None:
        for i in range(UNITS_PER_THREAD):
            unit = {"unit": f"{prefix}-{thread}-{i}"}
            keep(call(lab.base_url, "POST", "/api/v1/decide", unit, token=seed.client_key))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    units = [f"{prefix}-{t}-{i}" for t in range(THREADS) for i in range(UNITS_PER_THREAD)]
    for unit in units[::3]:
        keep(call(lab.base_url, "POST", "/api/v1/decide", {"unit": unit}, token=seed.client_key))
    keep(call(lab.base_url, "POST", "/api/v1/decide/batch", {"units": units[:20]},
              token=seed.client_key))  # fmt: skip
    return answered, failures


@pytest.mark.parametrize(
    ("mode", "prepare_threshold"),
    [("session", None), ("transaction", "none")],
    ids=["session-pooling", "transaction-pooling-preparation-off"],
)
def test_pgbouncer__decide_through_it__every_answer_stored_once_as_answered(
    lab_database, home, mode, prepare_threshold
):
    database, seed = lab_database
    host, port, user = _server()
    # Given Lab's gunicorn whose DATABASE_URL is a PgBouncer 1.18 in front of PostgreSQL
    # (the known-unit listener on PostgreSQL itself: no LISTEN through transaction pooling)
    bouncer = PgBouncer(home / "pgbouncer", mode, database)
    (home / "pgbouncer").mkdir()
    bouncer.start()
    settings_ = {
        "DATABASE_URL": bouncer.url(),
        "DECIDE_KNOWN_UNITS_LISTEN_URL": _url(host, port, user, database),
    }
    if prepare_threshold is not None:
        settings_["DATABASE_PREPARE_THRESHOLD"] = prepare_threshold
    (home / "lab").mkdir()
    lab = LabServer(home / "lab", service_env(**settings_), workers=WORKERS)
    try:
        lab.start()
        # When decide is asked for new units from several clients at once, then again
        answered, failures = _decide_through(lab, seed, f"{mode}-{time.monotonic_ns()}")
        stats = {row["database"]: row for row in bouncer.show("STATS")}
        pools = [row for row in bouncer.show("POOLS") if row["database"] == database]
    finally:
        lab.stop()
        bouncer.stop()
    report = f"{failures[:3]}\n{lab.log_tail()}\n{bouncer.log_tail()}"

    # Then every answer is a 200, and each (unit, experiment) is stored once, as answered
    assert failures == [], report
    assert len(answered) == THREADS * UNITS_PER_THREAD * len(seed.experiments), report
    assert all(len(variants) == 1 for variants in answered.values()), report
    units = sorted({unit for unit, _ in answered})
    stored = _stored(database, seed.product, units)
    assert stored == {pair: sorted(variants) for pair, variants in answered.items()}, report
    # And the decisions went through PgBouncer, in the pool mode asked for
    assert int(stats[database]["total_xact_count"]) >= len(units), stats
    assert pools and pools[0]["pool_mode"] == mode, pools


def _decide_new_units(lab: LabServer, seed: Seed, prefix: str) -> list[int | None]:
    """Three new units, then each again: the hot path's read runs at least three times on
    the worker's connection, prepared on the server from its second (psycopg's threshold)."""
    units = [f"{prefix}-{i}" for i in range(3)] * 2
    return [
        call(lab.base_url, "POST", "/api/v1/decide", {"unit": u}, token=seed.client_key).status
        for u in units
    ]


@pytest.mark.parametrize("prepare_threshold", ["2", "none"])
def test_pgbouncer__transaction_pooling__preparation_on_breaks_the_second_client(
    lab_database, home, prepare_threshold
):
    database, seed = lab_database
    host, port, user = _server()
    # Given a transaction-pooling PgBouncer 1.18 with one server connection to share, and
    # two Lab servers of one worker each connected through it
    (home / "pgbouncer").mkdir()
    bouncer = PgBouncer(home / "pgbouncer", "transaction", database, pool_size=1)
    bouncer.start()
    labs = []
    try:
        for name in ("a", "b"):
            (home / name).mkdir()
            env = service_env(
                DATABASE_URL=bouncer.url(),
                DATABASE_PREPARE_THRESHOLD=prepare_threshold,
                DECIDE_KNOWN_UNITS_LISTEN_URL=_url(host, port, user, database),
            )
            labs.append(LabServer(home / name, env, workers=1))
            labs[-1].start()
        # When the first decides new units, then the second does the same
        first = _decide_new_units(labs[0], seed, f"p{prepare_threshold}-a")
        second = _decide_new_units(labs[1], seed, f"p{prepare_threshold}-b")
        log = labs[1].log_tail(200)
    finally:
        for lab in labs:
            lab.stop()
        bouncer.stop()
    assert first == [200] * 6, log
    if prepare_threshold == "none":
        # Then with preparation off both are served
        assert second == [200] * 6, log
    else:
        # Then with preparation on (Lab's default) the second's prepared statement meets the
        # first's, under the same name, on the one server connection: its decide fails
        assert second != [200] * 6, log
        assert "prepared statement" in log and "already exists" in log, log
