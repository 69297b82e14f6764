"""Two Lab replicas on one PostgreSQL database and one Redis, behind an nginx load balancer
(docs/scaling.md §2): a replica keeps no state of its own that another could contradict.

- first decisions racing across the replicas store one row, and every answer agrees with it;
- an admin change through one replica is seen by the very next decision through the other;
- a replica killed (SIGKILL) under load loses nothing: every 200 answer's assignment is in
  the database, and the survivor keeps answering.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.conftest import IN_CI
from tests.e2e.conftest import ROOT, Server, _free_port, _wait_until_up

pytestmark = pytest.mark.e2e

WORKERS_PER_REPLICA = 2

NGINX_CONF = """
@USER@
worker_processes 1;
daemon off;
pid @DIR@/nginx.pid;
error_log @DIR@/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path @DIR@/client_body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    # Round robin: consecutive requests alternate between the replicas. A replica that
    # refuses connections is skipped (a request not yet sent is passed to the next one).
    upstream lab {
        server 127.0.0.1:@PORT_A@ max_fails=1 fail_timeout=30s;
        server 127.0.0.1:@PORT_B@ max_fails=1 fail_timeout=30s;
    }
    server {
        listen 127.0.0.1:@PORT@;
        location / {
            proxy_pass http://lab;
            proxy_set_header Host $http_host;
            add_header X-Upstream $upstream_addr always;
        }
    }
}
"""


def _need(ok: bool, why: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)


@dataclass
class Replicas:
    a: Server
    b: Server
    balancer: Server
    processes: dict[str, subprocess.Popen]
    ports: dict[str, int]

    def kill(self, name: str) -> None:
        """SIGKILL a replica's master and workers at once: no graceful shutdown."""
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(timeout=10)


def _start_gunicorn(env: dict, port: int, log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "gunicorn.conf.py",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(WORKERS_PER_REPLICA),
                "config.wsgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so kill() takes the workers too
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def replicas() -> Iterator[Replicas]:
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    _need(
        database_url.startswith(("postgres://", "postgresql://")), "DATABASE_URL is not PostgreSQL"
    )
    _need(bool(redis_url), "REDIS_URL is not set")
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    _need(nginx is not None, "nginx is not installed (apt-get install -y nginx-light)")

    import psycopg
    import redis

    parts = urlsplit(database_url)
    name = f"lab_e2e_replicas_{os.getpid()}"
    admin_url = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    folder = Path(tempfile.mkdtemp(prefix="lab-e2e-replicas-"))
    # One key prefix for both replicas (they share the cache, as in production), and no one
    # else's: another database's product ids and config versions would collide.
    prefix = f"labtest-replicas-{uuid.uuid4().hex[:12]}"
    processes: dict[str, subprocess.Popen] = {}
    try:
        env = {
            key: value
            for key, value in os.environ.items()
            if key
            not in ("PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS", "DJANGO_SETTINGS_MODULE")
        }
        env.update(
            DATABASE_URL=urlunsplit(parts._replace(path=f"/{name}")),
            REDIS_URL=redis_url,
            CACHE_KEY_PREFIX=prefix,
            DJANGO_SETTINGS_MODULE="config.settings",
            PYTHONPATH=str(ROOT),
            LOG_LEVEL="WARNING",
            ACCESS_LOG_LEVEL="WARNING",
        )
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        ports = {"a": _free_port(), "b": _free_port(), "balancer": _free_port()}
        servers = {}
        for replica in ("a", "b"):
            # Each replica its own metrics folder, as on two machines.
            replica_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(folder / f"prom-{replica}")}
            (folder / f"prom-{replica}").mkdir()
            log_path = folder / f"gunicorn-{replica}.log"
            processes[replica] = _start_gunicorn(replica_env, ports[replica], log_path)
            servers[replica] = Server(
                f"http://127.0.0.1:{ports[replica]}", replica_env, log_path, vendor="postgresql"
            )
        for replica in ("a", "b"):
            _wait_until_up(servers[replica], processes[replica])
        nginx_dir = folder / "nginx"
        nginx_dir.mkdir()
        text = NGINX_CONF
        for key, value in {
            "USER": "user root;" if os.geteuid() == 0 else "",
            "DIR": str(nginx_dir),
            "PORT": str(ports["balancer"]),
            "PORT_A": str(ports["a"]),
            "PORT_B": str(ports["b"]),
        }.items():
            text = text.replace(f"@{key}@", value)
        (nginx_dir / "nginx.conf").write_text(text)
        nginx_log = folder / "nginx.log"
        with nginx_log.open("wb") as log:
            processes["balancer"] = subprocess.Popen(
                [nginx, "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"), "-e",
                 str(nginx_dir / "error.log")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        balancer = Server(
            f"http://127.0.0.1:{ports['balancer']}",
            env,
            nginx_dir / "error.log",
            vendor="postgresql",
        )
        _wait_until_up(balancer, processes["balancer"])
        yield Replicas(servers["a"], servers["b"], balancer, processes, ports)
    finally:
        for process in processes.values():
            _stop(process)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def product(replicas) -> dict:
    suffix = f"{os.getpid()}-{time.monotonic_ns()}"
    return replicas.a.orm(
        "seed",
        username=f"replicas-{suffix}",
        product=f"r-{suffix}"[:64],
        experiments=[
            {"key": "etch", "variants": [["short", 1], ["long", 1]]},
            {"key": "anneal", "variants": [["a", 1], ["b", 1], ["c", 1]]},
            {"key": "litho", "variants": [["x", 1], ["y", 3]]},
        ],
    )


def _stored(server: Server, product: str) -> dict[str, dict[str, str]]:
    rows = server.orm("assignments", product=product)["assignments"]
    stored: dict[str, dict[str, str]] = defaultdict(dict)
    for experiment, unit, variant, _source in rows:
        assert experiment not in stored[unit], f"two rows for {experiment}/{unit}"
        stored[unit][experiment] = variant
    return stored


def test_replicas__first_decisions_race_across_replicas__one_row_all_answers_agree(
    replicas, product
):
    key = product["client_key"]
    racers, units = 8, 12
    answers: dict[str, list[dict]] = defaultdict(list)
    upstreams: set[str] = set()
    failures: list[str] = []
    lock = threading.Lock()

    def race(unit: str, barrier: threading.Barrier, racer: int) -> None:
        barrier.wait()
        # Half straight to each replica, the rest through the balancer.
        target = (replicas.a, replicas.b, replicas.balancer)[racer % 3]
        response = target.post("/api/v1/decide", {"unit": unit}, key)
        with lock:
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text[:200]}")
                return
            answers[unit].append(response.json()["variants"])
            if "X-Upstream" in response.headers:
                upstreams.add(response.headers["X-Upstream"])

    # When racers decide each new unit at the same instant, across both replicas
    for i in range(units):
        barrier = threading.Barrier(racers)
        threads = [
            threading.Thread(target=race, args=(f"RACE-{i}", barrier, r)) for r in range(racers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    # Then every request answered, and all the racers of a unit got the same variants
    assert not failures, failures[:5]
    assert len(answers) == units
    for unit, bodies in answers.items():
        assert len(bodies) == racers
        assert all(body == bodies[0] for body in bodies), (unit, bodies)
    # And the balancer spread its requests over both replicas
    assert upstreams == {f"127.0.0.1:{replicas.ports['a']}", f"127.0.0.1:{replicas.ports['b']}"}
    # And one row per (experiment, unit) is stored: the one every racer was told
    stored = _stored(replicas.a, product["product"])
    for unit, bodies in answers.items():
        assert stored[unit] == {k: v for k, v in bodies[0].items() if v is not None}


def test_replicas__admin_change_through_one__next_decision_through_the_other_sees_it(
    replicas, product
):
    token, key, slug = product["api_token"], product["client_key"], product["product"]
    base = f"/products/{slug}/experiments"
    assert replicas.b.decide(key, "alice")["etch"] is not None  # B has the config cached

    # When an experiment is disabled through A, then B decides
    response = replicas.a.admin("PATCH", f"{base}/etch", token, {"status": "disabled"})
    assert response.status_code == 200, response.text
    # Then B's very next decision no longer serves it
    assert replicas.b.decide(key, "alice").get("etch") is None

    # When a unit is forced onto a variant through B, then A decides
    current = replicas.a.decide(key, "bob")["anneal"]
    forced = next(v for v in ("a", "b", "c") if v != current)
    response = replicas.b.admin("PUT", f"{base}/anneal/assignments/bob", token, {"variant": forced})
    assert response.status_code == 200, response.text
    # Then A's very next decision is the forced variant
    assert replicas.a.decide(key, "bob")["anneal"] == forced

    # When a new client key works through B and is revoked through A
    response = replicas.a.admin("POST", f"/products/{slug}/client-keys", token, {"name": "r"})
    assert response.status_code == 201, response.text
    issued = response.json()
    assert replicas.b.post("/api/v1/decide", {"unit": "carol"}, issued["secret"]).status_code == 200
    response = replicas.a.admin("DELETE", f"/products/{slug}/client-keys/{issued['id']}", token)
    assert response.status_code == 204, response.text
    # Then B refuses it on the very next request
    assert replicas.b.post("/api/v1/decide", {"unit": "carol"}, issued["secret"]).status_code == 401


def test_replicas__one_killed_under_load__no_answered_assignment_lost_survivor_answers(
    replicas, product
):
    key = product["client_key"]
    total, kill_after = 600, 200
    results: list[tuple[int, str, int, dict | None]] = []
    lock = threading.Lock()
    sent = threading.Semaphore(0)

    def one(n: int) -> None:
        unit = f"LOAD-{n}"
        try:
            response = replicas.balancer.post("/api/v1/decide", {"unit": unit}, key)
            status = response.status_code
            body = response.json()["variants"] if status == 200 else None
        except requests.RequestException:
            status, body = -1, None
        with lock:
            results.append((n, unit, status, body))
        sent.release()

    # When requests for new units flow through the balancer, 8 at a time, and replica A is
    # killed (SIGKILL, master and workers) after the first 200 have been answered
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(one, n) for n in range(total)]
        for _ in range(kill_after):
            sent.acquire(timeout=60)
        killed_at = len(results)
        replicas.kill("a")
        for future in futures:
            future.result(timeout=120)

    # (the kill came mid-load, not after it)
    assert killed_at < total - 100, killed_at
    # Then every 200 answer's assignment is in the database, exactly as answered
    answered = {unit: body for _n, unit, status, body in results if status == 200}
    stored = _stored(replicas.b, product["product"])
    missing = [unit for unit in answered if unit not in stored]
    assert not missing, f"{len(missing)} answered units not stored, e.g. {missing[:5]}"
    for unit, body in answered.items():
        assert stored[unit] == {k: v for k, v in body.items() if v is not None}, unit
    # And only the requests in flight on the killed replica failed: a 502 from the balancer,
    # or, for a worker killed between writing its answer's head and its body, an answer cut
    # short (nginx has passed the head on; the client sees the connection end): at most one
    # per worker of the killed replica
    failed = [(n, status) for n, _unit, status, _body in results if status != 200]
    assert len(failed) <= 8 * 2, failed
    assert all(status in (502, -1) for _n, status in failed), failed
    assert sum(status == -1 for _n, status in failed) <= WORKERS_PER_REPLICA, failed
    # And the survivor kept answering: everything after the first seconds past the kill
    later = sorted(results)[killed_at + 50 :]
    assert later and all(status == 200 for _n, _unit, status, _body in later)
    assert replicas.b.get("/healthz").status_code == 200
