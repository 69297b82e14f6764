"""The Lab server under test, as users run it.

By default a server is exactly what `make serve-production` starts: `deploy/serve.py --front
nginx`, which runs gunicorn with gunicorn.conf.py on a unix socket and nginx in front of it
with the configuration deploy/front.py renders from deploy/nginx/*.template. The benchmark
talks to nginx on a free loopback port. A server's gunicorn flags (`--server w3='-w 3'`)
reach gunicorn through GUNICORN_CMD_ARGS, which overrides gunicorn.conf.py as command-line
flags would; the bind stays the launcher's.

`FRONT=none` in a server's settings starts bare gunicorn on the port instead (`gunicorn -c
<--gunicorn-config> ... config.wsgi:application`), for A/B runs against the front: clients
then face gunicorn directly, which production never lets them do (docs/operations.md, "The
production front"), so such a server is labelled "bare gunicorn" in the report.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from load_tests.bench.database import Database, Seeded, cache_prefix
from load_tests.bench.meters import children_of, threads_of
from load_tests.bench.run import ROOT, free_port, log

FRONTS = ("nginx", "none")
# deploy/serve.py stops nginx gracefully, then gunicorn (its graceful_timeout is 30 s).
STOP_TIMEOUT_SECONDS = 80


def stop_process(process: subprocess.Popen | None, stop_signal: int, *, timeout: float) -> None:
    """Ask a process to stop with `stop_signal`; kill it after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(stop_signal)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def nginx_available() -> bool:
    from deploy import front

    return front.nginx_binary() is not None


# Requests per second per client key at the front during a run: far above any scenario's.
BENCH_DECIDE_RATE = 1_000_000


class Server:
    """One Lab server on a free loopback port: through the production front, or bare."""

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
        shapes=None,
    ):
        self.label = label
        self.shapes = shapes  # scenarios.Shapes: where the traffic shapes draw units from
        self.extra_env = extra_env or {}
        self.database = database
        self.seeded = seeded
        self.redis_url = redis_url
        self.config = config
        self.extra_args = extra_args
        self.front = self.extra_env.get("FRONT", "nginx")
        if self.front not in FRONTS:
            raise RuntimeError(
                f"server {label}: FRONT={self.front!r}; FRONT=nginx is the production front "
                "(the default), FRONT=none bare gunicorn"
            )
        if "FRONT_WORKERS" in self.extra_env:
            raise RuntimeError(
                f"server {label}: FRONT_WORKERS is gone; the front is deploy/nginx's "
                "configuration (worker_processes auto)"
            )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = out_dir / f"server-{label}.log"
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"lab-bench-{label}-"))
        self.metrics_dir = self.run_dir / "prometheus"
        self.metrics_dir.mkdir()
        # LAB_ROOT=<folder> serves another checkout (e.g. a patched copy) from the same run.
        self.root = Path(self.extra_env.get("LAB_ROOT", str(ROOT)))
        self.process: subprocess.Popen | None = None
        self.command: list[str] = []

    def _environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis_url,
            "LAB_BENCHMARK_ENDPOINTS": "1",
            # The access log stays off, so the benchmark measures decide, not logging.
            "ACCESS_LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "CACHE_KEY_PREFIX": cache_prefix(self.database),
            # One client key sends everything: the front's per-key limit (docs/operations.md,
            # "Rate limits") would answer most requests 429. A --server setting can set it.
            "LAB_DECIDE_RATE": str(BENCH_DECIDE_RATE),
            "LAB_DECIDE_BURST": str(BENCH_DECIDE_RATE),
            **{
                # {database}: the run's database name, for a URL through another server
                # (a PgBouncer in front of the same PostgreSQL).
                name: value.replace("{database_url}", self.database.url).replace(
                    "{database}", self.database.name
                )
                for name, value in self.extra_env.items()
            },
        }
        if self.front == "nginx" and self.extra_args:
            env["GUNICORN_CMD_ARGS"] = shlex.join(self.extra_args)
        return env

    def _command(self) -> list[str]:
        if self.front == "nginx":
            return [
                sys.executable,
                str(self.root / "deploy" / "serve.py"),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--front",
                "nginx",
                "--run-dir",
                str(self.run_dir / "front"),
            ]
        config = ["-c", self.config] if self.config != "none" else []
        return [
            sys.executable,
            "-m",
            "gunicorn",
            *config,
            *self.extra_args,
            "--bind",
            f"127.0.0.1:{self.port}",
            "config.wsgi:application",
        ]

    def start(self) -> None:
        if self.front == "nginx" and not nginx_available():
            raise RuntimeError("the production front needs nginx: apt-get install -y nginx")
        self.command = self._command()
        log(f"server {self.label}: {self.describe_command()}")
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            self.command,
            cwd=self.root,
            env=self._environment(),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.label} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        else:
            raise RuntimeError(f"server {self.label} did not answer /healthz; see {self.log_path}")
        time.sleep(1.0)  # let every worker finish booting
        workers = self.workers()
        log(
            f"server {self.label}: {self.url}, workers {workers} "
            f"({threads_of(workers[0]) if workers else '?'} OS threads each)"
            + (f", nginx {self._front_pids()}" if self.front == "nginx" else "")
        )

    def _launched(self, name: str) -> int | None:
        """The pid of the launcher's child whose command line names `name`."""
        if self.process is None:
            return None
        try:
            for child in psutil.Process(self.process.pid).children():
                if any(name in part for part in child.cmdline()):
                    return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        return None

    def gunicorn_master(self) -> int | None:
        if self.process is None:
            return None
        return self._launched("gunicorn") if self.front == "nginx" else self.process.pid

    def _front_pids(self) -> list[int]:
        master = self._launched("nginx") if self.front == "nginx" else None
        return [master, *children_of(master)] if master else []

    def workers(self) -> list[int]:
        master = self.gunicorn_master()
        return children_of(master) if master else []

    def process_pids(self) -> list[int]:
        """The processes whose CPU is "server": the launcher, gunicorn's master and workers,
        nginx's master and workers."""
        if self.process is None:
            return []
        master = self.gunicorn_master()
        pids = {self.process.pid, *self.workers(), *self._front_pids()}
        if master:
            pids.add(master)
        return sorted(pids)

    def database_pids(self) -> list[int]:
        return self.database.backend_pids()

    def scenario_env(self, nonce: str, scenario=None) -> dict[str, str]:
        from load_tests.bench.scenarios import lab_env

        return lab_env(self.seeded, nonce, scenario, self.shapes)

    def stop(self) -> None:
        # deploy/serve.py on SIGTERM stops nginx (gracefully), then gunicorn, and waits.
        stop_process(self.process, signal.SIGTERM, timeout=STOP_TIMEOUT_SECONDS)
        if getattr(self, "log_file", None):
            self.log_file.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def describe_front(self) -> str:
        if self.front == "nginx":
            return "the production front (deploy/serve.py --front nginx, as make serve-production)"
        return "bare gunicorn (FRONT=none: clients face gunicorn, not what users run)"

    def describe_command(self) -> str:
        settings = [f"{k}={v}" for k, v in self.extra_env.items() if k != "FRONT"]
        if self.front == "nginx":
            gunicorn = (
                [f"GUNICORN_CMD_ARGS={shlex.quote(shlex.join(self.extra_args))}"]
                if self.extra_args
                else []
            )
            return " ".join([*settings, *gunicorn, "python deploy/serve.py --front nginx"])
        return " ".join([*settings, "gunicorn", *self.command[3:]])

    def describe(self) -> dict:
        workers = self.workers()
        return {
            "label": self.label,
            "front": self.front,
            "front_description": self.describe_front(),
            "command": self.describe_command(),
            "workers": len(workers),
            "threads_per_worker": threads_of(workers[0]) if workers else None,
        }
