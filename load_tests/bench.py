"""The decide benchmark (docs/contract.md, "Performance targets"), in one command.
See load_tests/README.md.

    python load_tests/bench.py                  # the full run: about 11 minutes
    python load_tests/bench.py --quick          # a smoke run: well under a minute
    python load_tests/bench.py --soak 600       # ... plus 10 minutes of mixed load

It creates a fresh PostgreSQL database (lab_bench_<run id>), migrates and seeds it, starts
gunicorn with the production config (gunicorn.conf.py) on a free loopback port and drives it
with wrk from the same machine, then prints (and can write to RESULTS.md):

- main: throughput, p50 and p99 of each scenario (no-op ceiling, decide for a known unit,
  decide for new units, batch of 1000 new units, OFREP), repeated in rounds whose order
  alternates, as ratios to the ceiling measured in the same round; CPU seconds spent by
  the load generator, the gunicorn workers and their PostgreSQL backends;
- fixed: latency at a fixed offered rate (half of each scenario's throughput), from the
  open-loop generator load_tests/openloop.py (Debian has no wrk2);
- growth: known-unit decide against 10^4 and 10^6 assignment rows, two servers side by
  side, alternating;
- soak (--soak SECONDS): mixed load with an operator toggling a variant, sampling each
  worker's RSS every 10 s and fitting a slope;
- profile (--profile): py-spy samples the workers during a known-unit run; top functions.

Only the loopback interface is ever a target; every load loop is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
LOAD_TESTS = ROOT / "load_tests"
WRK_DIR = LOAD_TESTS / "wrk"
OPENLOOP = LOAD_TESTS / "openloop.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"
RESULTS_SECTION = "## Decide benchmark"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    script: str
    units_per_request: int = 1
    # The request one warm-up call checks before measuring (path, body).
    probe_path: str = "/api/v1/decide"


PEER_SCENARIO = Scenario(
    "unleash", "Unleash, GET /api/frontend?userId=", "unleash_frontend.lua", probe_path=""
)

SCENARIOS = {
    "noop": Scenario("noop", "no-op ceiling", "noop.lua", probe_path="/bench/noop"),
    "known": Scenario("known", "decide, known unit", "decide_known.lua"),
    "new": Scenario("new", "decide, new unit", "decide_new.lua"),
    "batch": Scenario(
        "batch", "batch of 1000, new units", "batch_new.lua", 1000, "/api/v1/decide/batch"
    ),
    "ofrep": Scenario("ofrep", "OFREP, one flag", "ofrep.lua", probe_path="/ofrep/v1/evaluate"),
}


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- CPU and memory, straight from /proc.


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def threads_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


# --- PostgreSQL and Redis.


def _with_database(base_url: str, name: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


class Database:
    """A throwaway PostgreSQL database of this run."""

    def __init__(self, base_url: str, name: str):
        import psycopg

        self._psycopg = psycopg
        self.base_url = base_url
        self.name = name
        self.url = _with_database(base_url, name)

    def _admin(self):
        return self._psycopg.connect(_with_database(self.base_url, "postgres"), autocommit=True)

    def create(self) -> None:
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self._admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def execute(self, sql: str, params=None, *, fetch: bool = True):
        with self._psycopg.connect(self.url, autocommit=True) as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if fetch else None

    def backend_pids(self) -> list[int]:
        rows = self.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.name],
        )
        return [row[0] for row in rows]

    def assignment_rows(self) -> int:
        return self.execute("SELECT count(*) FROM lab_assignment")[0][0]


def cache_prefix(database: Database) -> str:
    """The servers of one database share a cache key prefix (CACHE_KEY_PREFIX), and no
    other database's: product ids and config versions restart in every fresh database."""
    return f"bench-{database.name.removeprefix('lab_bench_')}"


def delete_cache_keys(redis_url: str, prefix: str) -> int:
    """Delete this run's keys from the benchmark's Redis db (nothing else is touched)."""
    if not redis_url:
        return 0
    import redis

    client = redis.Redis.from_url(redis_url)
    deleted = 0
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        deleted += client.delete(key)
    return deleted


# --- The service under test.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(database_url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "lab.settings"}
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def stop_process(process: subprocess.Popen | None, stop_signal: int, *, timeout: float) -> None:
    """Ask a server process to stop with `stop_signal`; kill it after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(stop_signal)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Seeded:
    client_key: str
    admin_token: str
    product: str
    known_units: int
    unit_prefix: str
    unit_digits: int
    experiments: dict[str, list[str]]
    toggle: dict[str, str]
    assignments: int

    @classmethod
    def from_json(cls, data: dict) -> Seeded:
        return cls(
            client_key=data["client_key"],
            admin_token=data["admin_token"],
            product=data["product"],
            known_units=data["known_units"]["count"],
            unit_prefix=data["known_units"]["prefix"],
            unit_digits=data["known_units"]["digits"],
            experiments=data["experiments"],
            toggle=data["toggle"],
            assignments=data["assignments_total"],
        )


def prepare_database(
    base_url: str, name: str, assignments: int, *, analyzed: bool = True
) -> tuple[Database, Seeded]:
    database = Database(base_url, name)
    log(f"database {name}: create, migrate, seed {assignments:,} assignments")
    database.create()
    manage(database.url, "migrate", "--no-input", "-v", "0")
    if not analyzed:
        # As after a restore or a bulk import with autovacuum behind: no statistics at all.
        # Autovacuum is kept off this database's tables before the seed, so it gathers none
        # during the seed or the run either.
        tables = database.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'lab%%'"
        )
        for (table,) in tables:
            database.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)', fetch=False)
    started = time.monotonic()
    output = manage(database.url, "seed_benchmark", "--assignments", str(assignments))
    seeded = Seeded.from_json(json.loads(output.strip().splitlines()[-1]))
    if analyzed:
        database.execute("VACUUM ANALYZE", fetch=False)
    else:
        with_statistics = database.execute(
            "SELECT count(DISTINCT starelid) FROM pg_statistic s JOIN pg_class c "
            "ON c.oid = s.starelid WHERE c.relname LIKE 'lab%%'"
        )[0][0]
        log(f"database {name}: not analyzed ({with_statistics} tables have statistics)")
    log(
        f"database {name}: {seeded.assignments:,} assignments, {seeded.known_units:,} known "
        f"units, seeded in {time.monotonic() - started:.1f} s"
    )
    return database, seeded


class Server:
    """gunicorn with the production config, on a free loopback port."""

    def __init__(
        self,
        *,
        label: str,
        database: Database,
        seeded: Seeded,
        redis_url: str,
        config: str,
        extra_args: list[str],
        out_dir: Path,
        extra_env: dict[str, str] | None = None,
    ):
        self.label = label
        self.extra_env = extra_env or {}
        self.database = database
        self.seeded = seeded
        self.redis_url = redis_url
        self.config = config
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = out_dir / f"gunicorn-{label}.log"
        self.metrics_dir = Path(tempfile.mkdtemp(prefix=f"lab-bench-prom-{label}-"))
        # FRONT=nginx: clients talk to nginx on the port (keep-alive), nginx to gunicorn on a
        # unix socket, as in production (load_tests/nginx/bench.conf).
        front = self.extra_env.get("FRONT", "")
        if front not in ("", "nginx"):
            raise RuntimeError(f"server {label}: FRONT={front!r} (only FRONT=nginx exists)")
        self.front = (
            NginxFront(
                label=label,
                port=self.port,
                socket_path=self.metrics_dir / "gunicorn.sock",
                out_dir=out_dir,
                workers=self.extra_env.get("FRONT_WORKERS", "1"),
            )
            if front
            else None
        )
        self.process: subprocess.Popen | None = None
        self.command: list[str] = []

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis_url,
            "LAB_BENCHMARK_ENDPOINTS": "1",
            # The access log stays off, so the benchmark measures decide, not logging.
            "ACCESS_LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "DJANGO_SETTINGS_MODULE": "lab.settings",
            "CACHE_KEY_PREFIX": cache_prefix(self.database),
            **{
                name: value.replace("{database_url}", self.database.url)
                for name, value in self.extra_env.items()
            },
        }
        config = ["-c", self.config] if self.config != "none" else []
        bind = f"unix:{self.front.socket_path}" if self.front else f"127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "gunicorn",
            *config,
            *self.extra_args,
            "--bind",
            bind,
            "lab.wsgi:application",
        ]
        if self.front:
            self.front.start()
        log(f"server {self.label}: {self.describe_command()}")
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        # LAB_ROOT=<folder> serves another checkout (e.g. a patched copy) from the same run.
        root = self.extra_env.get("LAB_ROOT", str(ROOT))
        self.process = subprocess.Popen(
            self.command, cwd=root, env=env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        else:
            raise RuntimeError(f"gunicorn did not answer /healthz in 60 s; see {self.log_path}")
        time.sleep(1.0)  # let every worker finish booting
        workers = self.workers()
        log(
            f"server {self.label}: {self.url}, master {self.process.pid}, workers {workers} "
            f"({threads_of(workers[0]) if workers else '?'} OS threads each)"
        )

    def workers(self) -> list[int]:
        return children_of(self.process.pid) if self.process else []

    def process_pids(self) -> list[int]:
        """The processes whose CPU is "server": gunicorn's master and workers, the front."""
        front = self.front.pids() if self.front else []
        return [self.process.pid, *self.workers(), *front]

    def database_pids(self) -> list[int]:
        return self.database.backend_pids()

    def scenario_env(self, nonce: str) -> dict[str, str]:
        return scenario_env(self.seeded, nonce)

    def stop(self) -> None:
        if self.front:
            self.front.stop()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log_file", None):
            self.log_file.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def describe_command(self) -> str:
        settings = [f"{k}={v}" for k, v in self.extra_env.items()]
        return " ".join([*settings, "gunicorn", *self.command[3:]])

    def describe(self) -> dict:
        workers = self.workers()
        return {
            "label": self.label,
            "command": self.describe_command(),
            "workers": len(workers),
            "threads_per_worker": threads_of(workers[0]) if workers else None,
        }


class NginxFront:
    """nginx from the distribution in front of one gunicorn (load_tests/nginx/bench.conf)."""

    TEMPLATE = LOAD_TESTS / "nginx" / "bench.conf"

    def __init__(self, *, label: str, port: int, socket_path: Path, out_dir: Path, workers: str):
        self.label = label
        self.port = port
        self.socket_path = socket_path
        self.dir = out_dir / f"nginx-{label}"
        self.workers = workers
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise RuntimeError("FRONT=nginx needs nginx: apt-get install -y nginx-light")
        self.dir.mkdir(parents=True, exist_ok=True)
        # As root, nginx's workers would run as nobody and could not open gunicorn's socket.
        user = "user root;" if os.geteuid() == 0 else ""
        text = self.TEMPLATE.read_text()
        for name, value in {
            "USER": user,
            "WORKERS": self.workers,
            "DIR": str(self.dir),
            "SOCKET": str(self.socket_path),
            "PORT": str(self.port),
        }.items():
            text = text.replace(f"@{name}@", value)
        config = self.dir / "nginx.conf"
        config.write_text(text)
        self.log_file = open(self.dir / "stderr.log", "ab")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [nginx, "-c", str(config), "-p", str(self.dir), "-e", str(self.dir / "error.log")],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        time.sleep(0.3)
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited; see {self.dir / 'error.log'}")
        log(f"front {self.label}: nginx on 127.0.0.1:{self.port} -> unix:{self.socket_path}")

    def pids(self) -> list[int]:
        return [self.process.pid, *children_of(self.process.pid)] if self.process else []

    def stop(self) -> None:
        stop_process(self.process, signal.SIGQUIT, timeout=10)
        if getattr(self, "log_file", None):
            self.log_file.close()


# --- The peer: unleash-server from npm, on Node 22 from npm, over a throwaway PostgreSQL.

UNLEASH_DIR = LOAD_TESTS / "unleash"
PEER_LABEL = "unleash"
PEER_FLAGS = {"exp-a": ["a1", "a2"], "exp-b": ["b1", "b2", "b3"], "exp-c": ["c1", "c2"]}
# The rate limits Unleash applies per minute by default (20,000: 333 req/s) would answer
# 429 to a benchmark; raised far above what one machine can send.
PEER_RATE_LIMIT = "100000000"


def peer_cache_dir(args: argparse.Namespace) -> Path:
    """Where the npm install lives between runs: keyed by the lock file's hash, so a new pin
    installs anew and an unchanged one is never downloaded again."""
    import hashlib

    lock = (UNLEASH_DIR / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock).hexdigest()[:16]
    base = Path(args.peer_cache or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lab-bench" / f"unleash-{digest}"


def peer_usable() -> str | None:
    """None when the peer can run here, else why not (npm is what it needs)."""
    if shutil.which("npm") is None:
        return "npm is not installed (apt-get install -y npm, or Node.js from nodejs.org)"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("initdb"):
        return "PostgreSQL's initdb is not installed (apt-get install -y postgresql)"
    return None


def install_peer(args: argparse.Namespace) -> Path:
    """`npm ci` of load_tests/unleash/ into the cache, once per lock file."""
    folder = peer_cache_dir(args)
    marker = folder / ".installed"
    if marker.exists():
        log(f"peer: unleash-server cached in {folder}")
        return folder
    log(f"peer: npm ci of load_tests/unleash/ into {folder} (once; a few minutes)")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(UNLEASH_DIR / name, folder / name)
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel", "error"],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"npm ci failed in {folder}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    node = folder / "node_modules" / ".bin" / "node"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if not version.startswith("v22."):
        raise RuntimeError(f"{node} is {version or 'missing'}, not Node 22")
    marker.write_text(version + "\n")
    return folder


def postgres_bin() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if found:
        return found[-1].parent
    return Path(shutil.which("initdb")).parent


class ThrowawayPostgres:
    """A PostgreSQL cluster of its own (initdb + pg_ctl) on a free port, deleted at the end.
    As root it runs as the postgres user (PostgreSQL refuses root)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.bin = postgres_bin()
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, capture_output=True, text=True, user=self.user)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.folder, self.user)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.folder / "postgres.log"), "-w", "start",
        )  # fmt: skip
        self._run(
            str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", "unleash",
        )  # fmt: skip
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/unleash"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def backend_pids(self) -> list[int]:
        pid = self.postmaster_pid()
        return [pid, *children_of(pid)] if pid else []

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                capture_output=True,
                user=self.user,
            )
        shutil.rmtree(self.folder, ignore_errors=True)


class UnleashPeer:
    """unleash-server 8 on Node 22 with three experiment flags (weighted variants over userId
    stickiness), measured with `GET /api/frontend?userId=<random>` (wrk/unleash_frontend.lua)."""

    label = PEER_LABEL

    def __init__(self, args: argparse.Namespace, out_dir: Path, known_units: int):
        self.args = args
        self.out_dir = out_dir
        self.known_units = known_units
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = f"*:*.lab-bench-admin-{secrets.token_hex(8)}"
        self.frontend_token = f"default:development.lab-bench-frontend-{secrets.token_hex(8)}"
        self.postgres = ThrowawayPostgres(Path(tempfile.mkdtemp(prefix="lab-bench-unleash-pg-")))
        self.process: subprocess.Popen | None = None
        self.version = ""

    def start(self) -> None:
        folder = install_peer(self.args)
        node = folder / "node_modules" / ".bin" / "node"
        server_js = folder / "node_modules" / "unleash-server" / "dist" / "server.js"
        package = json.loads(
            (folder / "node_modules" / "unleash-server" / "package.json").read_text()
        )
        node_version = (folder / ".installed").read_text().strip()
        self.version = f"unleash-server {package['version']}, Node {node_version}"
        self.postgres.start()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "TZ": "UTC",
            "NODE_ENV": "production",
            "DATABASE_URL": self.postgres.url,
            "DATABASE_SSL": "false",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.port),
            "LOG_LEVEL": "error",
            "INIT_ADMIN_API_TOKENS": self.admin_token,
            "INIT_FRONTEND_API_TOKENS": self.frontend_token,
            "TOKEN_AUTHENTICATION_RATE_LIMIT_PER_MINUTE": PEER_RATE_LIMIT,
            "SDK_API_RATE_LIMIT_PER_MINUTE": PEER_RATE_LIMIT,
            "CHECK_VERSION": "false",
            "SEND_TELEMETRY": "false",
            "SCARF_ANALYTICS": "false",
            "DO_NOT_TRACK": "1",
        }
        self.log_path = self.out_dir / "unleash.log"
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.command = [str(node), str(server_js)]
        log(f"peer: {self.version} on {self.url}, PostgreSQL {self.postgres.url}")
        self.process = subprocess.Popen(
            self.command, cwd=folder, env=env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        self._wait_for("/health", 120)
        self._seed()
        # The frontend API serves a copy of the flags refreshed every few seconds.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            toggles = self._frontend("user-0")
            if len(toggles) == len(PEER_FLAGS):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(
                f"Unleash's frontend API did not show the 3 flags; see {self.log_path}"
            )
        log(f"peer: seeded {', '.join(PEER_FLAGS)}; JIT warm-up {self.args.peer_warmup:g} s")
        if self.args.peer_warmup > 0:
            run_wrk(self, PEER_SCENARIO, self.args.peer_warmup, self.args)

    def _wait_for(self, path: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"unleash-server exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise RuntimeError(f"unleash-server did not answer {path} in {seconds:g} s")

    def _admin(self, method: str, path: str, body: dict | None = None) -> None:
        request = urllib.request.Request(
            f"{self.url}/api/admin{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": self.admin_token, "Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"Unleash {method} {path}: {exc.code} {exc.read()[:500]!r}") from exc

    def _seed(self) -> None:
        base = "/projects/default/features"
        for flag, variants in PEER_FLAGS.items():
            self._admin("POST", base, {"name": flag, "type": "experiment"})
            # Weights are per mille; the last variant takes the rounding remainder.
            weights = [1000 // len(variants)] * len(variants)
            weights[-1] += 1000 - sum(weights)
            self._admin(
                "POST",
                f"{base}/{flag}/environments/development/strategies",
                {
                    "name": "flexibleRollout",
                    "constraints": [],
                    "parameters": {"rollout": "100", "stickiness": "userId", "groupId": flag},
                    "variants": [
                        {
                            "name": name,
                            "weight": weight,
                            "weightType": "variable",
                            "stickiness": "userId",
                        }
                        for name, weight in zip(variants, weights, strict=True)
                    ],
                },
            )
            self._admin("POST", f"{base}/{flag}/environments/development/on")

    def _frontend(self, user: str) -> list[dict]:
        request = urllib.request.Request(
            f"{self.url}/api/frontend?userId={user}",
            headers={"Authorization": self.frontend_token},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read()).get("toggles", [])
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return []

    def probe(self) -> str | None:
        toggles = self._frontend("user-1")
        variants = [t.get("variant", {}).get("name") for t in toggles]
        if len(toggles) != 3 or any(v in (None, "disabled") for v in variants):
            return f"Unleash should give 3 flags with a variant each, got {toggles}"
        return None

    # The interface CpuMeter and run_wrk use.
    def process_pids(self) -> list[int]:
        return [self.process.pid, *children_of(self.process.pid)] if self.process else []

    def database_pids(self) -> list[int]:
        return self.postgres.backend_pids()

    def scenario_env(self, nonce: str) -> dict[str, str]:
        return {
            **os.environ,
            "UNLEASH_FRONTEND_TOKEN": self.frontend_token,
            "UNLEASH_USERS": str(self.known_units),
            "LAB_RUN_NONCE": nonce,
        }

    def describe(self) -> dict:
        return {"label": self.label, "command": self.version, "url": self.url}

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM, timeout=20)
        if getattr(self, "log_file", None):
            self.log_file.close()
        self.postgres.stop()


# --- Measuring.


class CpuMeter:
    """CPU seconds spent by the server side (gunicorn master + workers, their PostgreSQL
    backends) and by the whole machine between start() and stop()."""

    def __init__(self, server: Server):
        self.server = server

    def _snapshot(self) -> dict:
        gunicorn = self.server.process_pids()
        postgres = self.server.database_pids()
        busy, total = machine_cpu_seconds()
        return {
            "gunicorn": {pid: process_cpu_seconds(pid) for pid in gunicorn},
            "postgres": {pid: process_cpu_seconds(pid) for pid in postgres},
            "busy": busy,
            "total": total,
            "wall": time.monotonic(),
        }

    def start(self) -> None:
        self.before = self._snapshot()

    def stop(self) -> dict:
        after = self._snapshot()
        before = self.before

        def spent(kind: str) -> float:
            return sum(
                max(0.0, cpu - before[kind].get(pid, 0.0)) for pid, cpu in after[kind].items()
            )

        return {
            "wall_s": after["wall"] - before["wall"],
            "gunicorn_cpu_s": spent("gunicorn"),
            "postgres_cpu_s": spent("postgres"),
            "machine_busy_cpu_s": after["busy"] - before["busy"],
        }


def scenario_env(seeded: Seeded, nonce: str) -> dict[str, str]:
    return {
        **os.environ,
        "LAB_CLIENT_KEY": seeded.client_key,
        "LAB_KNOWN_UNITS": str(seeded.known_units),
        "LAB_UNIT_PREFIX": seeded.unit_prefix,
        "LAB_UNIT_DIGITS": str(seeded.unit_digits),
        "LAB_RUN_NONCE": nonce,
        "LAB_BATCH_SIZE": "1000",
        "LAB_OFREP_FLAG": next(iter(seeded.experiments)),
    }


_nonce_counter = 0


def new_nonce() -> str:
    global _nonce_counter
    _nonce_counter += 1
    return f"{RUN_ID}-{_nonce_counter}"


def run_measured(command: list[str], server: Server, env: dict[str, str]) -> tuple[str, dict]:
    """Run a load generator to completion; its stdout and the CPU everyone spent meanwhile."""
    meter = CpuMeter(server)
    meter.start()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = meter.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}): {stderr.decode()}")
    cpu["generator_cpu_s"] = usage.ru_utime + usage.ru_stime
    cpu["other_cpu_s"] = max(
        0.0,
        cpu["machine_busy_cpu_s"]
        - cpu["generator_cpu_s"]
        - cpu["gunicorn_cpu_s"]
        - cpu["postgres_cpu_s"],
    )
    return stdout.decode(), cpu


def run_wrk(server: Server, scenario: Scenario, seconds: float, args: argparse.Namespace) -> dict:
    command = [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_DIR / scenario.script),
        server.url,
    ]
    stdout, cpu = run_measured(command, server, server.scenario_env(new_nonce()))
    match = re.search(r"^WRK_JSON (.*)$", stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no summary from wrk:\n{stdout}")
    result = json.loads(match.group(1))
    result.update(cpu)
    result["units_per_s"] = result["rps"] * scenario.units_per_request
    return result


def run_openloop(
    server: Server, scenario: Scenario, rate: float, seconds: float, args: argparse.Namespace
) -> dict:
    command = [
        sys.executable,
        str(OPENLOOP),
        "--url",
        server.url,
        "--scenario",
        scenario.name,
        "--rate",
        f"{rate:.3f}",
        "--duration",
        str(seconds),
        "--warmup",
        str(args.warmup),
    ]
    stdout, cpu = run_measured(command, server, server.scenario_env(new_nonce()))
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(cpu)
    return result


def warm_known_units(server: Server, known: Scenario, args: argparse.Namespace) -> None:
    """Known-unit load until the workers answer nearly all of it from memory (decide.memory).

    A worker remembers the units it has decided: with random units, every worker must have
    decided every known unit once, which takes a while (the peer is warmed too, for its JIT).
    In 5-second slices, until 95% of a slice's decisions are answered from memory or
    --known-warmup seconds have passed; a server without the memory stops after one slice.
    """
    spent = 0.0
    while spent < args.known_warmup:
        seconds = min(5.0, args.known_warmup - spent)
        before = memory_lookups(server)
        run_wrk(server, known, seconds, args)
        spent += seconds
        ratio = memory_hit_ratio(before, memory_lookups(server))
        log(f"warming {server.label} on known units: {spent:.0f} s, from memory {ratio or 0:.1%}")
        if not ratio or ratio >= 0.95:
            return


def memory_lookups(server) -> dict[str, float] | None:
    """The server's `lab_known_units_total` counters (decide.memory), None for the peer."""
    if not isinstance(server, Server):
        return None
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    counts = {}
    for line in text.splitlines():
        match = re.match(r'^lab_known_units_total\{result="(\w+)"\} (\S+)$', line)
        if match:
            counts[match.group(1)] = float(match.group(2))
    return counts


def memory_hit_ratio(before: dict | None, after: dict | None) -> float | None:
    """The share of single-unit decisions answered from the workers' memory in between.
    (Before a server's first decision its counters have no samples yet: zeros.)"""
    if not after:
        return None
    before = before or {}
    hits = after.get("hit", 0) - before.get("hit", 0)
    misses = after.get("miss", 0) - before.get("miss", 0)
    return hits / (hits + misses) if hits + misses > 0 else None


def probe(server: Server, scenario: Scenario) -> str | None:
    """One request before measuring: None if it answers 200, else why the scenario is skipped."""
    seeded = server.seeded
    unit = f"{seeded.unit_prefix}{0:0{seeded.unit_digits}d}"
    path = scenario.probe_path
    if scenario.name == "batch":
        body = {"units": [unit, f"probe-{RUN_ID}"]}
    elif scenario.name == "ofrep":
        path = f"/ofrep/v1/evaluate/flags/{next(iter(seeded.experiments))}"
        body = {"context": {"targetingKey": unit}}
    else:
        body = {"unit": unit}
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {seeded.client_key}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return f"{path} answers {exc.code}"
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return f"{path}: {exc}"
    if scenario.name == "known":
        variants = payload.get("variants", {})
        if len(variants) != 3 or None in variants.values():
            return f"a known unit should get 3 variants, got {payload}"
    return None


# --- Statistics over rounds.


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def linear_fit(points: list[tuple[float, float]]) -> dict:
    """Least-squares slope with its standard error."""
    n = len(points)
    if n < 3:
        return {"slope": None, "stderr": None, "n": n}
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return {"slope": None, "stderr": None, "n": n}
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    intercept = mean_y - slope * mean_x
    residual = sum((y - (intercept + slope * x)) ** 2 for x, y in points)
    stderr = math.sqrt(residual / (n - 2) / sxx)
    return {"slope": slope, "stderr": stderr, "n": n, "intercept": intercept}


# --- Phases.


def phase_main(servers: list[Server], scenarios: list[Scenario], args, peer=None) -> dict:
    """Every scenario on every server (and the peer), in rounds; odd rounds run the order
    backwards, so a slow drift of the machine favours no one."""
    available = []
    for scenario in scenarios:
        problem = probe(servers[0], scenario)
        if problem:
            log(f"skipping {scenario.name}: {problem}")
        else:
            available.append(scenario)
    runs: dict[str, dict[str, list[dict]]] = {
        s.label: {c.name: [] for c in available} for s in servers
    }
    plan = [(server, scenario) for server in servers for scenario in available]
    if peer is not None:
        problem = peer.probe()
        if problem:
            raise RuntimeError(f"the peer does not answer as seeded: {problem}")
        runs[peer.label] = {PEER_SCENARIO.name: []}
        plan.append((peer, PEER_SCENARIO))
    known = next((s for s in available if s.name == "known"), None)
    if known is not None and args.known_warmup > 0:
        for server in servers:
            warm_known_units(server, known, args)
    for round_number in range(args.rounds):
        order = plan if round_number % 2 == 0 else list(reversed(plan))
        for server, scenario in order:
            run_wrk(server, scenario, args.warmup, args)
            before = memory_lookups(server) if scenario.name == "known" else None
            result = run_wrk(server, scenario, args.duration, args)
            if before is not None:
                result["memory_hit_ratio"] = memory_hit_ratio(before, memory_lookups(server))
            result["round"] = round_number + 1
            runs[server.label][scenario.name].append(result)
            log(
                f"round {round_number + 1} {server.label:>8} {scenario.name:>7}: "
                f"{result['rps']:8.1f} req/s  p50 {result['p50_ms']:7.2f} ms  "
                f"p99 {result['p99_ms']:7.2f} ms  errors {sum(result['errors'].values())}"
            )
    return {"scenarios": [s.name for s in available], "runs": runs}


def summarize_main(main: dict) -> dict:
    summary: dict[str, dict] = {}
    peer_runs = main["runs"].get(PEER_LABEL, {}).get(PEER_SCENARIO.name, [])
    first_lab = next((runs for label, runs in main["runs"].items() if label != PEER_LABEL), {})
    for label, by_scenario in main["runs"].items():
        rows = {}
        # The peer's ratio to the ceiling is to the first Lab server's no-op of the same round.
        ceiling = by_scenario.get("noop", first_lab.get("noop", []))
        single_new = by_scenario.get("new", [])
        for name, runs in by_scenario.items():
            row = {
                "rps": spread([r["rps"] for r in runs]),
                "units_per_s": spread([r["units_per_s"] for r in runs]),
                "p50_ms": spread([r["p50_ms"] for r in runs]),
                "p99_ms": spread([r["p99_ms"] for r in runs]),
                "errors": sum(sum(r["errors"].values()) for r in runs),
                # wrk counts answers with a status of 400 or more: non-2xx (no 3xx here).
                "non_2xx": sum(r["errors"]["status"] for r in runs),
                "requests": sum(r["requests"] for r in runs),
                "server_cores": spread(
                    [(r["gunicorn_cpu_s"] + r["postgres_cpu_s"]) / r["wall_s"] for r in runs]
                ),
                "postgres_cores": spread([r["postgres_cpu_s"] / r["wall_s"] for r in runs]),
                "memory_hit_ratio": spread([r.get("memory_hit_ratio") for r in runs]),
                "generator_cores": spread([r["generator_cpu_s"] / r["wall_s"] for r in runs]),
                "other_cores": spread([r["other_cpu_s"] / r["wall_s"] for r in runs]),
                "server_cpu_us_per_request": spread(
                    [
                        (r["gunicorn_cpu_s"] + r["postgres_cpu_s"]) / r["requests"] * 1e6
                        for r in runs
                        if r["requests"]
                    ]
                ),
            }
            if ceiling:
                row["ratio_to_ceiling"] = spread(
                    [r["rps"] / c["rps"] for r, c in zip(runs, ceiling, strict=False)]
                )
            if peer_runs and label != PEER_LABEL:
                row["ratio_to_peer"] = spread(
                    [r["rps"] / c["rps"] for r, c in zip(runs, peer_runs, strict=False)]
                )
            if name == "batch" and single_new:
                row["units_vs_single_new"] = spread(
                    [
                        r["units_per_s"] / s["units_per_s"]
                        for r, s in zip(runs, single_new, strict=False)
                    ]
                )
            rows[name] = row
        summary[label] = rows
    return summary


def phase_fixed(server: Server, scenarios: list[str], summary: dict, args) -> dict:
    """Each scenario at `rate_fraction` of its own median closed-loop throughput."""
    results = {}
    for name in scenarios:
        row = summary.get(name)
        if not row or not row["rps"]["median"]:
            continue
        rate = row["rps"]["median"] * args.rate_fraction
        if rate < 0.5:
            continue
        result = run_openloop(server, SCENARIOS[name], rate, args.fixed_duration, args)
        results[name] = result
        log(
            f"fixed {name:>6} at {rate:8.1f} req/s: achieved {result['achieved_rps']:.1f}, "
            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
            f"generator {result['generator_cpu_s'] / result['wall_s']:.2f} cores"
        )
    return results


def phase_growth(args, out_dir: Path) -> dict:
    sizes = [int(float(s)) for s in args.growth_sizes.split(",")]
    servers = []
    try:
        for index, size in enumerate(sizes):
            database, seeded = prepare_database(
                args.database_url, f"lab_bench_{RUN_ID}_g{index}", size
            )
            server = Server(
                label=f"{size:.0e}".replace("+0", "").replace("+", ""),
                database=database,
                seeded=seeded,
                redis_url=args.redis_url,
                config=args.gunicorn_config,
                extra_args=args.gunicorn_args,
                # What the table's size can change is the database's answer: with the
                # memory of known units on, 10^6 assignments (333,000 units) would instead
                # measure a working set larger than DECIDE_KNOWN_UNITS_MAX against one that
                # fits (docs/decide.md). A --server setting can turn it back on.
                extra_env={"DECIDE_KNOWN_UNITS": "false", **args.gunicorn_env},
                out_dir=out_dir,
            )
            servers.append(server)
            server.start()
        for server in servers:
            problem = probe(server, SCENARIOS["known"])
            if problem:
                log(f"skipping growth: {problem}")
                return {"skipped": problem}
        closed = {s.label: [] for s in servers}
        for round_number in range(args.rounds):
            order = servers if round_number % 2 == 0 else list(reversed(servers))
            for server in order:
                run_wrk(server, SCENARIOS["known"], args.warmup, args)
                result = run_wrk(server, SCENARIOS["known"], args.duration, args)
                closed[server.label].append(result)
                log(
                    f"growth round {round_number + 1} {server.label:>6}: {result['rps']:.1f} "
                    f"req/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
                )
        rate = args.rate_fraction * min(
            statistics.median(r["rps"] for r in runs) for runs in closed.values()
        )
        fixed = {s.label: [] for s in servers}
        for round_number in range(args.rounds):
            order = servers if round_number % 2 == 0 else list(reversed(servers))
            for server in order:
                result = run_openloop(server, SCENARIOS["known"], rate, args.fixed_duration, args)
                fixed[server.label].append(result)
                log(
                    f"growth fixed {round_number + 1} {server.label:>6} at {rate:.0f} req/s: "
                    f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
                )
        rows = {}
        for server in servers:
            rows[server.label] = {
                "assignments": server.database.assignment_rows(),
                "rps": spread([r["rps"] for r in closed[server.label]]),
                "p50_ms": spread([r["p50_ms"] for r in closed[server.label]]),
                "p99_ms": spread([r["p99_ms"] for r in closed[server.label]]),
                "fixed_rate": rate,
                "fixed_p50_ms": spread([r["p50_ms"] for r in fixed[server.label]]),
                "fixed_p99_ms": spread([r["p99_ms"] for r in fixed[server.label]]),
            }
        first, last = rows[servers[0].label], rows[servers[-1].label]
        verdict = {
            "throughput_ratio": last["rps"]["median"] / first["rps"]["median"],
            "fixed_p50_ratio": last["fixed_p50_ms"]["median"] / first["fixed_p50_ms"]["median"],
            "fixed_p99_ratio": last["fixed_p99_ms"]["median"] / first["fixed_p99_ms"]["median"],
        }
        return {"rows": rows, "verdict": verdict, "runs": {"closed": closed, "fixed": fixed}}
    finally:
        for server in servers:
            server.stop()
            if not args.keep_db:
                server.database.drop()


class Toggler(threading.Thread):
    """An operator flipping a variant between enabled and disabled through the admin API."""

    def __init__(self, server: Server, every: float):
        super().__init__(daemon=True)
        self.server = server
        self.every = every
        self.stopped = threading.Event()
        self.ok = 0
        self.failed = 0

    def run(self) -> None:
        seeded = self.server.seeded
        url = (
            f"{self.server.url}/api/admin/v1/products/{seeded.product}/experiments/"
            f"{seeded.toggle['experiment']}/variants/{seeded.toggle['variant']}"
        )
        status = "disabled"
        while not self.stopped.wait(self.every):
            request = urllib.request.Request(
                url,
                data=json.dumps({"status": status}).encode(),
                headers={
                    "Authorization": f"Bearer {seeded.admin_token}",
                    "Content-Type": "application/json",
                },
                method="PATCH",
            )
            try:
                with urllib.request.urlopen(request, timeout=10):
                    self.ok += 1
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                self.failed += 1
            status = "enabled" if status == "disabled" else "disabled"

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=15)


def phase_soak(server: Server, seconds: float, args) -> dict:
    """Mixed load for `seconds`, the worker RSS sampled every `soak_interval` seconds."""
    warmup = min(30.0, max(args.warmup, seconds / 10))
    log(f"soak: {warmup:.0f} s warm-up, then {seconds:.0f} s of mixed load")
    run_wrk(server, Scenario("mixed", "mixed", "mixed.lua"), warmup, args)
    toggler = Toggler(server, args.toggle_every)
    toggler.start()
    samples: list[dict] = []
    holder: dict = {}

    def load() -> None:
        holder["result"] = run_wrk(server, Scenario("mixed", "mixed", "mixed.lua"), seconds, args)

    thread = threading.Thread(target=load, daemon=True)
    started = time.monotonic()
    thread.start()
    while thread.is_alive():
        now = time.monotonic() - started
        for pid in server.workers():
            rss = rss_kib(pid)
            if rss is not None:
                samples.append({"t": now, "pid": pid, "rss_kib": rss})
        thread.join(timeout=args.soak_interval)
    toggler.stop()
    result = holder.get("result", {})
    per_worker = {}
    for pid in sorted({s["pid"] for s in samples}):
        points = [(s["t"] / 60, s["rss_kib"] / 1024) for s in samples if s["pid"] == pid]
        fit = linear_fit(points)
        half = [p for p in points if p[0] >= points[-1][0] / 2]
        second_half = linear_fit(half)
        minutes = points[-1][0] - points[0][0] if len(points) > 1 else 0
        mean_rss = statistics.fmean(p[1] for p in points)
        growth = (fit["slope"] or 0) * minutes
        noise = 2 * (fit["stderr"] or 0) * minutes
        per_worker[pid] = {
            "samples": len(points),
            "rss_first_mib": points[0][1],
            "rss_last_mib": points[-1][1],
            "rss_max_mib": max(p[1] for p in points),
            "slope_mib_per_min": fit["slope"],
            "slope_stderr": fit["stderr"],
            "second_half_slope_mib_per_min": second_half["slope"],
            "fitted_growth_mib": growth,
            "flat": fit["slope"] is None or growth <= max(noise, 0.01 * mean_rss, 1.0),
        }
    return {
        "seconds": seconds,
        "requests": result.get("requests"),
        "rps": result.get("rps"),
        "errors": result.get("errors"),
        "toggles_ok": toggler.ok,
        "toggles_failed": toggler.failed,
        "workers": per_worker,
        "samples": samples,
        "recycled": len(per_worker) > len(server.workers()),
    }


def phase_profile(server: Server, seconds: float, args, out_dir: Path) -> dict:
    """py-spy on every worker during a known-unit run; the top functions by own and total time."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    # Warm first: the first requests of a worker import the URLconf's modules.
    run_wrk(server, SCENARIOS[args.profile_scenario], args.warmup, args)
    native = ["--native"] if args.profile_native else ["--nonblocking"]
    profilers = []
    for pid in server.workers():
        output = out_dir / f"profile-{pid}.txt"
        profilers.append(
            (
                output,
                subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "200",
                        *native,
                        "--format",
                        "raw",
                        "--output",
                        str(output),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
            )
        )
    time.sleep(0.5)
    load = run_wrk(server, SCENARIOS[args.profile_scenario], seconds, args)
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    layers: dict[str, int] = {}
    samples = 0
    for output, profiler in profilers:
        profiler.wait(timeout=seconds + 30)
        if not output.exists():
            continue
        for line in output.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_parse_frame(frame) for frame in stack.split(";")]
            samples += count
            leaf_name, leaf_layer = frames[-1]
            own[leaf_name] = own.get(leaf_name, 0) + count
            layers[leaf_layer] = layers.get(leaf_layer, 0) + count
            # Inclusive time, for the request's own code path: gunicorn's loop and the
            # interpreter's start-up frames enclose every sample and say nothing.
            for name in {name for name, layer in frames if layer not in ("gunicorn", "python")}:
                total[name] = total.get(name, 0) + count

    def top(table: dict[str, int], limit: int) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda item: item[1], reverse=True)[:limit]
        return [(name, count / samples) for name, count in ranked]

    return {
        "scenario": args.profile_scenario,
        "samples": samples,
        "rps_while_profiled": load["rps"],
        "own": top(own, args.profile_top) if samples else [],
        "total": top(total, args.profile_top) if samples else [],
        "layers": top(layers, 20) if samples else [],
        "files": [str(output) for output, _ in profilers],
    }


def _parse_frame(frame: str) -> tuple[str, str]:
    """'function (path/to/module.py:123)' -> ('function (to/module.py)', layer).

    The layer is the top-level package the code belongs to (django, ninja, psycopg, ...,
    decide, lab), "python" for the standard library.
    """
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    if not match:
        return frame.strip(), "other"
    name, path = match.groups()
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    # py-spy names files relative to their sys.path entry ("django/db/utils.py",
    # "socket.py"); absolute paths only for what is outside it.
    if "site-packages" in parts:
        layer = parts[parts.index("site-packages") + 1]
    elif path.startswith(str(ROOT)):
        layer = Path(path).relative_to(ROOT).parts[0]
    elif len(parts) > 1 and not path.startswith(("/", "<")):
        layer = parts[0]
    else:
        layer = "python"
    layer = layer.split(".")[0]
    return f"{name} ({short})", layer


# --- Reporting.


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _span(s: dict, digits: int = 1) -> str:
    if s["median"] is None:
        return "-"
    if s["n"] == 1:
        return _fmt(s["median"], digits)
    return f"{_fmt(s['median'], digits)} ({_fmt(s['min'], digits)}–{_fmt(s['max'], digits)})"


def render_markdown(report: dict) -> str:
    lines = []
    meta = report["meta"]
    lines.append(
        f"Run {meta['run_id']} on {meta['date']}: `{meta['command']}` — {meta['machine']}; "
        f"wrk {meta['wrk_threads']} thread(s), {meta['connections']} connections; "
        f"{meta['rounds']} round(s) of {meta['duration']:g} s per scenario after "
        f"{meta['warmup']:g} s of warm-up, order alternating between rounds. "
        "Figures are the median over rounds, with (min–max)."
        + (
            ""
            if meta.get("analyzed", True)
            else " The database was **not analyzed** (no statistics, autovacuum off)."
        )
    )
    for server in report.get("servers", []):
        lines.append("")
        lines.append(
            f"Server `{server['label']}`: `{server['command']}` — {server['workers']} workers, "
            f"{server['threads_per_worker']} OS threads each."
        )
    peer = report.get("peer")
    if peer:
        lines.append("")
        lines.append(
            f"Peer `{PEER_LABEL}`: {peer['command']}, one Node process, its own PostgreSQL "
            "(initdb); 3 experiment flags (2, 3 and 2 variants, flexibleRollout 100 % over "
            f"userId stickiness), {peer['warmup_s']:g} s of JIT warm-up before the rounds."
        )
    if report.get("peer_skipped"):
        lines.append("")
        lines.append(f"Peer not measured: {report['peer_skipped']}")
    summary = report.get("main_summary", {})
    peer_rows = summary.get(PEER_LABEL, {})
    for label, rows in summary.items():
        if label == PEER_LABEL:
            continue
        lines.append("")
        lines.append(f"### Throughput, closed loop (wrk) — server `{label}`")
        lines.append("")
        lines.append(
            "| scenario | req/s | units/s | p50 ms | p99 ms | × ceiling | × Unleash "
            "| server CPU (cores) | of which PostgreSQL | wrk CPU (cores) | other CPU "
            "| server CPU µs/req | non-2xx | errors |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, row in [*rows.items(), *peer_rows.items()]:
            title = PEER_SCENARIO.title if name == PEER_SCENARIO.name else SCENARIOS[name].title
            versus_peer = (
                "1.00"
                if name == PEER_SCENARIO.name
                else _span(row["ratio_to_peer"], 2)
                if "ratio_to_peer" in row and name != "batch"
                else "-"
            )
            lines.append(
                f"| {title} | {_span(row['rps'])} | {_span(row['units_per_s'], 0)} "
                f"| {_span(row['p50_ms'], 2)} | {_span(row['p99_ms'], 2)} "
                f"| {'-' if name == 'batch' else _span(row.get('ratio_to_ceiling', _none()), 2)} "
                f"| {versus_peer} "
                f"| {_span(row['server_cores'], 2)} | {_span(row['postgres_cores'], 2)} "
                f"| {_span(row['generator_cores'], 2)} | {_span(row['other_cores'], 2)} "
                f"| {_span(row['server_cpu_us_per_request'], 0)} | {row.get('non_2xx', '-')} "
                f"| {row['errors']} |"
            )
        if "batch" in rows and "units_vs_single_new" in rows["batch"]:
            ratio = rows["batch"]["units_vs_single_new"]
            lines.append("")
            lines.append(
                f"Batch of 1000 vs single decides for new units, units/s: "
                f"**{_span(ratio, 1)}×** (target ≥ 10×)."
            )
        if lines[-1].startswith("|"):
            lines.append("")  # a line right under a table would be read as one more row
        if "known" in rows and "ratio_to_ceiling" in rows["known"]:
            lines.append(
                f"Known-unit decide vs the no-op ceiling: "
                f"**{_span(rows['known']['ratio_to_ceiling'], 2)}×** (target ≥ 0.5×)."
            )
        if "known" in rows and rows["known"].get("memory_hit_ratio", {}).get("n"):
            lines.append(
                f"Known-unit decisions answered from the workers' memory (decide.memory): "
                f"{_span(rows['known']['memory_hit_ratio'], 3)}."
            )
        if "known" in rows and "ratio_to_peer" in rows["known"]:
            lines.append(
                f"Known-unit decide vs Unleash's per-user evaluation: "
                f"**{_span(rows['known']['ratio_to_peer'], 2)}×** (target ≥ 1.35×)."
            )
    if report.get("fixed"):
        lines.append("")
        lines.append(
            f"### Latency at a fixed offered rate (open loop, load_tests/openloop.py; "
            f"{report['meta']['rate_fraction']:g} × each scenario's median throughput)"
        )
        lines.append("")
        lines.append(
            "| scenario | offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms "
            "| max ms | non-200 / errors | generator CPU (cores) | server CPU (cores) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, r in report["fixed"].items():
            bad = sum(v for k, v in r["statuses"].items() if k != "200") + sum(r["errors"].values())
            lines.append(
                f"| {SCENARIOS[name].title} | {_fmt(r['offered_rps'])} | {_fmt(r['achieved_rps'])} "
                f"| {_fmt(r['p50_ms'], 2)} | {_fmt(r['p90_ms'], 2)} | {_fmt(r['p99_ms'], 2)} "
                f"| {_fmt(r['p999_ms'], 2)} | {_fmt(r['max_ms'], 2)} | {bad} "
                f"| {_fmt(r['generator_cpu_s'] / r['wall_s'], 2)} "
                f"| {_fmt((r['gunicorn_cpu_s'] + r['postgres_cpu_s']) / r['wall_s'], 2)} |"
            )
    growth = report.get("growth")
    if growth and "rows" in growth:
        lines.append("")
        lines.append("### Known-unit decide as the assignments table grows")
        lines.append("")
        lines.append(
            "Each decision read from the database (DECIDE_KNOWN_UNITS=false on these two "
            "servers): the answer the table's size can change."
        )
        lines.append("")
        lines.append(
            "| assignments rows | req/s (wrk) | p50 ms | p99 ms | fixed rate req/s "
            "| fixed p50 ms | fixed p99 ms |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for row in growth["rows"].values():
            lines.append(
                f"| {row['assignments']:,} | {_span(row['rps'])} | {_span(row['p50_ms'], 2)} "
                f"| {_span(row['p99_ms'], 2)} | {_fmt(row['fixed_rate'])} "
                f"| {_span(row['fixed_p50_ms'], 2)} | {_span(row['fixed_p99_ms'], 2)} |"
            )
        v = growth["verdict"]
        lines.append("")
        lines.append(
            f"Largest vs smallest table: throughput {v['throughput_ratio']:.2f}×, p50 at a "
            f"fixed rate {v['fixed_p50_ratio']:.2f}×, p99 {v['fixed_p99_ratio']:.2f}× "
            "(target: within 20 %)."
        )
    soak = report.get("soak")
    if soak:
        lines.append("")
        lines.append(
            f"### Worker memory under {soak['seconds']:.0f} s of mixed load "
            f"({_fmt(soak['rps'])} req/s, {soak['requests']:,} requests, "
            f"{soak['toggles_ok']} variant toggles)"
        )
        lines.append("")
        lines.append(
            "| worker | samples | RSS first MiB | RSS last MiB | slope MiB/min (± s.e.) "
            "| 2nd-half slope | fitted growth MiB | flat |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for pid, w in soak["workers"].items():
            lines.append(
                f"| {pid} | {w['samples']} | {_fmt(w['rss_first_mib'])} "
                f"| {_fmt(w['rss_last_mib'])} | {_fmt(w['slope_mib_per_min'], 3)} "
                f"(± {_fmt(w['slope_stderr'], 3)}) | {_fmt(w['second_half_slope_mib_per_min'], 3)} "
                f"| {_fmt(w['fitted_growth_mib'], 2)} | {'yes' if w['flat'] else 'NO'} |"
            )
    profile = report.get("profile")
    if profile and profile.get("samples"):
        lines.append("")
        lines.append(
            f"### Profile: {profile['scenario']} ({profile['samples']:,} py-spy samples over "
            f"the workers, {profile['rps_while_profiled']:.0f} req/s while profiled)"
        )
        lines.append("")
        lines.append("| own time | function | | total time | function |")
        lines.append("|---|---|---|---|---|")
        for (own_name, own_share), (total_name, total_share) in zip(
            profile["own"], profile["total"], strict=False
        ):
            lines.append(
                f"| {own_share:.1%} | `{own_name}` | | {total_share:.1%} | `{total_name}` |"
            )
        lines.append("")
        lines.append(
            "Own time by layer: "
            + ", ".join(f"{layer} {share:.0%}" for layer, share in profile["layers"])
            + "."
        )
    return "\n".join(lines) + "\n"


def _none() -> dict:
    return {"median": None, "min": None, "max": None, "n": 0}


def write_results_section(path: Path, body: str) -> None:
    """Replace (or append) the "## Decide benchmark" section; other sections are kept."""
    text = path.read_text() if path.exists() else "# Results\n"
    section = f"{RESULTS_SECTION}\n\n{body}"
    pattern = re.compile(
        rf"^{re.escape(RESULTS_SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def machine_description() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
            memory = f", {kib / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}){memory}, Python {sys.version.split()[0]}"


# --- The command.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark decide against a no-op ceiling on one machine "
        "(docs/contract.md, 'Performance targets').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s")
    parser.add_argument(
        "--phases",
        default=None,
        help="comma list of main,fixed,growth,soak,profile (default main,fixed,growth; "
        "--quick: main,fixed; --soak adds soak; --profile adds profile)",
    )
    parser.add_argument(
        "--scenarios", default="noop,known,new,batch,ofrep", help="main-phase scenarios"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--fixed-duration", type=float, default=15.0)
    parser.add_argument(
        "--fixed-scenarios", default="noop,known,new,batch,ofrep", help="fixed-rate scenarios"
    )
    parser.add_argument("--rate-fraction", type=float, default=0.5)
    parser.add_argument("--assignments", type=int, default=10_000, help="seeded rows (main)")
    parser.add_argument(
        "--unanalyzed",
        action="store_true",
        help="main database: no VACUUM ANALYZE after the seed, autovacuum off on its tables",
    )
    parser.add_argument("--growth-sizes", default="10000,1000000")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--soak-interval", type=float, default=10.0)
    parser.add_argument("--toggle-every", type=float, default=5.0, help="seconds between toggles")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--profile-scenario", default="known", choices=sorted(SCENARIOS))
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="py-spy --native (C frames too; pauses the workers to sample, so slower)",
    )
    parser.add_argument("--gunicorn-config", default="gunicorn.conf.py", help="'none' for none")
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="LABEL=ARGS",
        help="a server variant to compare: gunicorn flags and NAME=VALUE environment, e.g. "
        "'w3=-w 3', 'gthread=-k gthread --threads 4', 'cma0=DATABASE_CONN_MAX_AGE=0', "
        "'patched=LAB_ROOT=/tmp/other-checkout' (serve another copy of the code) "
        "(repeatable; all run side by side on the same database; growth, soak and profile "
        "use the first)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL server (a database lab_bench_<run id> is created on it)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis for the servers (keys under CACHE_KEY_PREFIX bench-<run id>..., "
        "deleted at the end); 'none': no Redis, each worker caches in memory",
    )
    parser.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure Unleash's per-user evaluation in the main phase's rounds (default: on "
        "when npm is installed; --peer makes a missing npm an error, --no-peer skips it)",
    )
    parser.add_argument(
        "--known-warmup",
        type=float,
        default=120.0,
        help="at most this many seconds of known-unit load on each server before the first "
        "round, until its workers answer 95%% of it from memory (decide.memory)",
    )
    parser.add_argument(
        "--peer-warmup", type=float, default=15.0, help="seconds of load before Unleash's rounds"
    )
    parser.add_argument(
        "--peer-cache",
        default=None,
        help="folder of the npm install cache (default $XDG_CACHE_HOME or ~/.cache)",
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the databases")
    parser.add_argument("--out", default=None, help="folder for logs, JSON and profiles")
    parser.add_argument(
        "--write-results",
        nargs="?",
        const=str(LOAD_TESTS / "RESULTS.md"),
        default=None,
        metavar="PATH",
        help="replace the '## Decide benchmark' section of this file (default RESULTS.md)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1 if args.rounds == 3 else args.rounds
        args.duration = 2.0 if args.duration == 15.0 else args.duration
        args.warmup = 1.0 if args.warmup == 3.0 else args.warmup
        args.fixed_duration = 2.0 if args.fixed_duration == 15.0 else args.fixed_duration
        args.growth_sizes = (
            "1000,10000" if args.growth_sizes == "10000,1000000" else args.growth_sizes
        )
    if args.phases is None:
        phases = ["main", "fixed"] if args.quick else ["main", "fixed", "growth"]
        if args.soak:
            phases.append("soak")
        if args.profile:
            phases.append("profile")
        args.phases = ",".join(phases)
    args.phase_list = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phase_list) - {"main", "fixed", "growth", "soak", "profile"}
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if "soak" in args.phase_list and not args.soak:
        args.soak = 30.0 if args.quick else 600.0
    if "profile" in args.phase_list and not args.profile:
        args.profile = 5.0 if args.quick else 20.0
    if args.redis_url == "none":
        args.redis_url = ""
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = set(args.scenario_list) - set(SCENARIOS)
    if bad:
        parser.error(f"unknown scenarios: {', '.join(sorted(bad))}")
    args.gunicorn_args = []
    args.server_variants = []
    for spec in args.server or ["default="]:
        label, _, extra = spec.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,20}", label):
            parser.error(f"bad server label {label!r}")
        tokens = extra.split()
        env = dict(t.split("=", 1) for t in tokens if re.match(r"^[A-Z_][A-Z0-9_]*=", t))
        gunicorn_args = [t for t in tokens if not re.match(r"^[A-Z_][A-Z0-9_]*=", t)]
        args.server_variants.append((label, gunicorn_args, env))
    if args.quick and args.peer_warmup == 15.0:
        args.peer_warmup = 3.0
    args.gunicorn_args = args.server_variants[0][1]
    args.gunicorn_env = args.server_variants[0][2]
    return args


RUN_ID = f"{datetime.now(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(2)}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if args.gunicorn_config != "none" and not (ROOT / args.gunicorn_config).exists():
        print(f"{args.gunicorn_config} not found (use --gunicorn-config none)", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else Path(tempfile.gettempdir()) / f"lab-bench-{RUN_ID}"
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"run {RUN_ID}: phases {', '.join(args.phase_list)}; output in {out_dir}")
    report: dict = {
        "meta": {
            "run_id": RUN_ID,
            "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "command": "python load_tests/bench.py " + " ".join(argv or sys.argv[1:]),
            "machine": machine_description(),
            "wrk_threads": args.wrk_threads,
            "connections": args.connections,
            "rounds": args.rounds,
            "duration": args.duration,
            "warmup": args.warmup,
            "rate_fraction": args.rate_fraction,
            "analyzed": not args.unanalyzed,
        }
    }
    servers: list[Server] = []
    database = None
    peer = None
    if "main" in args.phase_list or "fixed" in args.phase_list:
        unusable = peer_usable()
        if args.peer and unusable:
            print(f"--peer: {unusable}", file=sys.stderr)
            return 2
        if args.peer is None and unusable:
            log(f"no peer: {unusable}")
        want_peer = args.peer is True or (args.peer is None and not unusable)
    else:
        want_peer = False
    try:
        needs_main_server = {"main", "fixed", "soak", "profile"} & set(args.phase_list)
        if needs_main_server:
            database, seeded = prepare_database(
                args.database_url,
                f"lab_bench_{RUN_ID}",
                args.assignments,
                analyzed=not args.unanalyzed,
            )
            for label, extra, extra_env in args.server_variants:
                server = Server(
                    label=label,
                    database=database,
                    seeded=seeded,
                    redis_url=args.redis_url,
                    config=args.gunicorn_config,
                    extra_args=extra,
                    extra_env=extra_env,
                    out_dir=out_dir,
                )
                servers.append(server)
                server.start()
            report["servers"] = [server.describe() for server in servers]
            if want_peer:
                peer = UnleashPeer(args, out_dir, seeded.known_units)
                try:
                    peer.start()
                except RuntimeError as exc:
                    # Asked for (--peer): fail. On by default: say why, measure Lab alone.
                    peer.stop()
                    if args.peer:
                        raise
                    log(f"no peer: {exc}")
                    report["peer_skipped"] = str(exc)
                    peer = None
                else:
                    report["peer"] = {**peer.describe(), "warmup_s": args.peer_warmup}
        summary_rows: dict = {}
        if "main" in args.phase_list or "fixed" in args.phase_list:
            scenarios = [SCENARIOS[name] for name in args.scenario_list]
            if "fixed" in args.phase_list and "main" not in args.phase_list:
                log("fixed needs the throughput from main: running main too")
            main_result = phase_main(servers, scenarios, args, peer)
            report["main"] = main_result
            report["main_summary"] = summarize_main(main_result)
            summary_rows = report["main_summary"][servers[0].label]
            log(f"assignments rows after main: {database.assignment_rows():,}")
        if peer is not None:
            peer.stop()
        if "fixed" in args.phase_list:
            fixed = [s.strip() for s in args.fixed_scenarios.split(",") if s.strip()]
            report["fixed"] = phase_fixed(servers[0], fixed, summary_rows, args)
        if "profile" in args.phase_list:
            report["profile"] = phase_profile(servers[0], args.profile, args, out_dir)
        if "soak" in args.phase_list:
            report["soak"] = phase_soak(servers[0], args.soak, args)
        for server in servers:
            server.stop()
        if "growth" in args.phase_list:
            report["growth"] = phase_growth(args, out_dir)
    finally:
        if peer is not None:
            peer.stop()
        for server in servers:
            server.stop()
        if database is not None and not args.keep_db:
            database.drop()
        delete_cache_keys(args.redis_url, f"bench-{RUN_ID}")
    markdown = render_markdown(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "report.md").write_text(markdown)
    print(markdown)
    log(f"JSON and Markdown in {out_dir}")
    if args.write_results:
        write_results_section(Path(args.write_results), markdown)
        log(f"wrote the '{RESULTS_SECTION}' section of {args.write_results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
