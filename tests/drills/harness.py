"""The failure drills' harness: throwaway PostgreSQL, Redis and gunicorn, HTTP and load.

Every drill starts its own PostgreSQL cluster (initdb into a temporary folder), its own
redis-server and its own gunicorn, each on a free loopback port, so stopping, restarting or
locking them touches nothing else on the machine. The cluster is initialised, migrated and
seeded once per session (`seed_drill`) and copied for each drill: a copy starts in a
fraction of a second, a fresh `initdb` plus `migrate` takes several.

Locally a drill skips when PostgreSQL's server binaries or redis-server are missing; under
CI=true it fails instead.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.ha.client import Answer, request

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DRILL_DATABASE = "lab_drill_e2e"
GUNICORN_WORKERS = 2


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def tail(path: Path, lines: int) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


# --- PostgreSQL


def run_as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its binaries as the `postgres` user then."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def give_to_postgres_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


class PostgresServer:
    """A PostgreSQL cluster in `home`, listening on 127.0.0.1:`port` only."""

    def __init__(self, bindir: Path, home: Path, port: int):
        self.bindir = bindir
        self.home = home
        self.datadir = home / "data"
        self.port = port

    def url(self, database: str = DRILL_DATABASE) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, binary: str, *args: str, check: bool = True) -> int:
        command = run_as_postgres_user([str(self.bindir / binary), *args])
        return subprocess.run(command, check=check, capture_output=True, timeout=120).returncode

    def _pg_ctl(self, *args: str, check: bool = True) -> int:
        return self._run("pg_ctl", "-D", str(self.datadir), *args, check=check)

    def initdb(self) -> None:
        self._run(
            "initdb",
            *("-D", str(self.datadir), "-U", "postgres", "--auth=trust"),
            *("--encoding=UTF8", "--no-locale", "--no-sync"),
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 "
            # Durability is not what the drills test; a crash loses nothing they check.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=50"
        )
        log = str(self.home / "postgres.log")
        self._pg_ctl("-w", "-t", "30", "-l", log, "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-t", "30", "-m", mode, "stop")

    def running(self) -> bool:
        return self._pg_ctl("status", check=False) == 0

    def connect(self, **kwargs):
        import psycopg

        return psycopg.connect(self.url(), connect_timeout=5, **kwargs)

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.home / "postgres.log", lines)


def manage(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def service_env(**overrides: str) -> dict[str, str]:
    """The environment of Lab's processes: the caller's, pointed at throwaway services."""
    unset = ("REDIS_URL", "TEST_DATABASE_NAME", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONUNBUFFERED="1",
        ACCESS_LOG_LEVEL="WARNING",
    )
    env.update(overrides)
    return env


@dataclass(frozen=True)
class Seed:
    admin_token: str
    client_key: str
    product: str
    experiments: dict[str, list[str]]


@dataclass(frozen=True)
class ClusterTemplate:
    bindir: Path
    home: Path
    seed: Seed


# --- Redis


class RedisServer:
    def __init__(self, port: int, logfile: Path):
        self.port = port
        self.logfile = logfile
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.logfile, "ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self.ping, 10, f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


# --- HTTP


# What the failover drill sends and keeps (deploy/ha/client.py): one request on a fresh
# connection, either an HTTP answer or a recorded error.
Reply = Answer


def call(
    base_url: str,
    method: str,
    path: str,
    body=None,
    *,
    token: str | None = None,
    timeout: float = 10,
) -> Reply:
    return request(base_url, method, path, body, token=token, timeout=timeout)


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text as {(sample name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_metrics(base_url: str) -> dict[tuple[str, tuple], float]:
    reply = call(base_url, "GET", "/metrics", timeout=5)
    assert reply.status == 200, reply
    return parse_metrics(reply.body)


def metric_total(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


# --- gunicorn


class LabServer:
    """`gunicorn -c gunicorn.conf.py -w 2` against the throwaway services."""

    def __init__(self, home: Path, env: dict[str, str], workers: int = GUNICORN_WORKERS):
        self.home = home
        self.port = free_port()
        self.workers = workers
        self.logfile = home / "gunicorn.log"
        self.multiproc_dir = home / "prometheus"
        self.multiproc_dir.mkdir()
        self.env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(self.multiproc_dir)}
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.logfile, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    "gunicorn.conf.py",
                    "-w",
                    str(self.workers),
                    "-b",
                    f"127.0.0.1:{self.port}",
                    "config.wsgi:application",
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"gunicorn exited {self.process.returncode}:\n{self.log_tail()}"
                )
            return call(self.base_url, "GET", "/healthz", timeout=1).status == 200

        wait_until(up, 30, "gunicorn to answer /healthz")
        wait_until(lambda: len(self.worker_pids()) == self.workers, 30, "every gunicorn worker")

    def worker_pids(self) -> set[int]:
        """The master's live children, read from /proc (Linux)."""
        pids = set()
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                text = Path(stat).read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            state, ppid = text.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == self.process.pid and state != "Z":
                pids.add(int(Path(stat).parent.name))
        return pids

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.logfile, lines)


# --- Load


@dataclass
class Load:
    """Threads sending requests until stopped; every reply is kept, in order of start.

    Bounded in count (`threads`) and time (`max_seconds`, whatever the drill does); each
    thread pauses `pause` seconds between requests so the load stays moderate on a shared
    machine. `make_request(thread, i)` returns (method, path, body).
    """

    base_url: str
    token: str
    make_request: Callable[[int, int], tuple[str, str, dict | None]]
    threads: int = 4
    pause: float = 0.005
    max_seconds: float = 30
    timeout: float = 10
    replies: list[tuple[tuple[str, str, dict | None], Reply]] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _run(self, thread: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            request = self.make_request(thread, i)
            method, path, body = request
            reply = call(self.base_url, method, path, body, token=self.token, timeout=self.timeout)
            with self._lock:
                self.replies.append((request, reply))
            i += 1
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self) -> "Load":
        for thread in range(self.threads):
            worker = threading.Thread(target=self._run, args=(thread,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)

    def since(self, moment: float) -> list[tuple[tuple, Reply]]:
        with self._lock:
            return [(req, rep) for req, rep in self.replies if rep.started >= moment]

    def count(self) -> int:
        with self._lock:
            return len(self.replies)


def describe(replies: list[tuple[tuple, Reply]], limit: int = 5) -> str:
    return "\n".join(
        f"{req[0]} {req[1]} {req[2]} -> {rep.status} {rep.body or rep.error}"
        for req, rep in replies[:limit]
    )


# --- Decide and what it stored


def decide_request(unit: str) -> tuple[str, str, dict]:
    return ("POST", "/api/v1/decide", {"unit": unit})


def batch_request(units: list[str]) -> tuple[str, str, dict]:
    return ("POST", "/api/v1/decide/batch", {"units": units})


def ofrep_request(unit: str, flag: str) -> tuple[str, str, dict]:
    return ("POST", f"/ofrep/v1/evaluate/flags/{flag}", {"context": {"targetingKey": unit}})


def answered_variants(request: tuple, reply: Reply) -> dict[str, dict[str, str | None]]:
    """unit -> {experiment: variant} from a 200 answer of decide or decide/batch."""
    if request[1].endswith("/batch"):
        return {d["unit"]: d["variants"] for d in reply.body["decisions"]}
    return {reply.body["unit"]: reply.body["variants"]}


def stored_assignments(postgres: PostgresServer, units: list[str]) -> dict[str, dict[str, str]]:
    """unit -> {experiment: variant} as stored, read straight from the database."""
    from lab.models import Assignment, Experiment, Unit, Variant

    sql = (
        f"SELECT u.key, e.key, v.key FROM {Assignment._meta.db_table} a "
        f"JOIN {Unit._meta.db_table} u ON u.id = a.unit_id "
        f"JOIN {Experiment._meta.db_table} e ON e.id = a.experiment_id "
        f"JOIN {Variant._meta.db_table} v ON v.id = a.variant_id "
        "WHERE u.key = ANY(%s)"
    )
    stored: dict[str, dict[str, str]] = {}
    with postgres.connect() as conn:
        for unit, experiment, variant in conn.execute(sql, [units]):
            assert experiment not in stored.get(unit, {}), f"two assignments of {unit}/{experiment}"
            stored.setdefault(unit, {})[experiment] = variant
    return stored


def duplicate_rows(postgres: PostgresServer) -> list[tuple]:
    """(experiment, unit) pairs stored more than once, and unit keys stored twice."""
    from lab.models import Assignment, Unit

    with postgres.connect() as conn:
        pairs = conn.execute(
            f"SELECT experiment_id, unit_id, count(*) FROM {Assignment._meta.db_table} "
            "GROUP BY experiment_id, unit_id HAVING count(*) > 1"
        ).fetchall()
        units = conn.execute(
            f"SELECT product_id, key, count(*) FROM {Unit._meta.db_table} "
            "GROUP BY product_id, key HAVING count(*) > 1"
        ).fetchall()
    return pairs + units
