"""Production gunicorn settings: `gunicorn -c gunicorn.conf.py config.wsgi:application`.

Command-line flags (`-b`, `-w`, ...) and GUNICORN_CMD_ARGS override everything here.
Environment:
  GUNICORN_BIND      address to listen on (default 127.0.0.1:8000; several: comma-separated)
  GUNICORN_WORKERS   worker processes (or WEB_CONCURRENCY; default 2 * CPUs + 1, at most 12)
  GUNICORN_WORKER_CLASS  sync (default) or gthread
  GUNICORN_THREADS   request threads per worker (default 1: one request at a time; above 1,
                     gthread workers)
  GUNICORN_TIMEOUT   seconds before a silent worker is restarted (default 30): with sync
                     workers also the longest a request may run
  GUNICORN_PRELOAD   load the application once in the master before forking workers
                     (default true; docs/operations.md, "Start-up")
  PROMETHEUS_MULTIPROC_DIR  where workers write metric values; a fresh temporary directory
                     when unset. Emptied at start either way, as prometheus_client requires.
"""

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

MAX_DEFAULT_WORKERS = 12

bind = [
    address.strip()
    for address in os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")
    if address.strip()
]
workers = int(
    os.environ.get("GUNICORN_WORKERS")
    or os.environ.get("WEB_CONCURRENCY")
    or min(2 * multiprocessing.cpu_count() + 1, MAX_DEFAULT_WORKERS)
)
# sync workers: a worker serves one request at a time, holds one persistent database
# connection (CONN_MAX_AGE), and accepts a connection only when it is free, so behind nginx
# (which buffers requests and answers, and keeps the clients' connections alive) every request
# goes to a free worker. gthread workers (the class before; GUNICORN_WORKER_CLASS=gthread)
# keep nginx's connections alive instead, and a request nginx sends on a connection whose
# worker is busy waits behind that worker's request while others are free, which shows in the
# p99 through the front (load_tests/RESULTS.md, "The front's own cost"). GUNICORN_THREADS
# above 1 makes gunicorn use gthread workers with that many request threads (each then holds
# its own database connection).
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Import Django, the URLconf and every API module (SciPy included) once, in the master, and
# fork workers that already have them: on 2 cores, five workers each importing for a second
# made the first requests after a start wait several seconds. Safe here because nothing
# opens a connection at import (the database and Redis connect on a worker's first use; the
# master closes anything opened anyway, see when_ready) and prometheus_client notices the
# fork and gives each worker its own files. The price: a HUP no longer reloads code;
# restart the master to deploy a new version.
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").strip().lower() not in (
    "0",
    "false",
    "no",
    "off",
)
graceful_timeout = 30
# Idle seconds a gthread worker keeps a connection open (sync workers close each one after
# its answer); nginx closes its idle upstream connections sooner (deploy/nginx/lab.conf.template).
keepalive = 5
# The request head's limits are the production front's (deploy/nginx/lab.conf.template):
# nginx refuses a longer request line (414) or header line, or a longer head (431), with a
# JSON `detail`, so these are set at or above what nginx lets through, and gunicorn's own
# HTML refusals never reach a client behind it. The request line: 8190 bytes, gunicorn's
# maximum and nginx's (an 8 KiB buffer). A header line: nginx's 8190 bytes, plus what it
# appends to X-Forwarded-For. The number of header lines: a 32 KiB head holds at most 8192.
# docs/contract.md, "Limits".
limit_request_line = 8190
limit_request_field_size = 16384
limit_request_fields = 10_000
# Logs are JSON lines from Django (one per request, with its id); gunicorn's own access log
# would duplicate them.
accesslog = None
errorlog = "-"
# gunicorn's runtime control socket is not used; without this every server on a host would
# share ~/.gunicorn/gunicorn.ctl (and a read-only home only gets a warning).
control_socket_disable = True

# --- Prometheus multiprocess mode (prometheus_client docs, "Multiprocess Mode").
# Set before any worker imports prometheus_client, so every worker writes its values there
# and /metrics (config/ops.py) sums them.
_created_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _created_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lab-prometheus-")
_metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_starting(server):
    """Once, in the master, before any worker: start from an empty metrics directory."""
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    for entry in _metrics_dir.iterdir():
        if entry.is_file() and entry.suffix == ".db":
            entry.unlink()


def _load_urlconf():
    """Load the URLconf, and with it every API module (admin, results, SciPy): otherwise the
    first request pays for those imports (0.7 s measured, load_tests/RESULTS.md)."""
    from django.urls import get_resolver

    get_resolver().resolve("/healthz")


def when_ready(server):
    """In the master, before the first fork, when the application is preloaded."""
    if server.cfg.preload_app:
        _load_urlconf()
        from django.db import connections

        # Forked children must never share a connection socket with the master or each other.
        connections.close_all()


def post_worker_init(worker):
    """Without preloading, each worker loads the URLconf before its first request (a no-op
    when the master already did). Each worker starts listening for the changes that its
    memory of known units must forget (decide.memory) before it accepts a request."""
    _load_urlconf()
    from decide import memory

    memory.known_units()


def pre_request(worker, req):
    """The request's start, for the bounded wait for a primary (lab/postgresql/base.py):
    when nginx received it (its X-Request-Start), so that the time it queued counts."""
    from lab.postgresql.base import request_started

    request_started(next((v for k, v in req.headers if k == "X-REQUEST-START"), None))


def post_request(worker, req, environ, resp):
    from lab.postgresql.base import request_finished

    request_finished()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _created_metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
