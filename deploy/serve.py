"""Start Lab on one host and keep it running until Ctrl-C or SIGTERM: `make serve` and
`make serve-production` (docs/operations.md).

    python deploy/serve.py --bind 127.0.0.1:8000 --workers 2 --demo    development
    python deploy/serve.py --bind 0.0.0.0:8080 --front nginx           production

In order, and stopping at the first problem with a message saying what to do:

1. checks that BIND is free and that the database answers (a missing PostgreSQL database
   gets the `createdb` command that makes it);
2. applies migrations; with --demo, creates or reuses the demo product and an admin token;
3. starts gunicorn (`gunicorn.conf.py`): on BIND, or with --front nginx on a unix socket in a
   run folder, with nginx listening on BIND in front of it (deploy/front.py);
4. once Lab answers /healthz on BIND, and only then, prints what to paste (and, when BIND
   is a wildcard address, which Host names ALLOWED_HOSTS lets through: allowed_hosts());
5. on Ctrl-C or SIGTERM stops nginx (gracefully: requests in flight finish), then gunicorn,
   and waits for both. If either exits on its own, the other is stopped too.
"""

import argparse
import contextlib
import http.client
import io
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy import front  # noqa: E402

READY_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 35  # gunicorn.conf.py's graceful_timeout (30 s), plus a margin


class Refused(Exception):
    """A problem found before anything started: printed as is, exit status 1."""


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise Refused(f"BIND must be HOST:PORT (for example 127.0.0.1:8000), not {bind!r}")
    return host.strip("[]"), int(port)


def probe_host(host: str) -> str:
    """Where to send our own readiness probe when BIND is a wildcard address."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}.get(host, host)


def check_port_free(host: str, port: int, bind: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As gunicorn and nginx bind: a port in TIME_WAIT is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except PermissionError:
            raise Refused(
                f"Cannot listen on {bind}: permission denied (ports below 1024 need root); "
                f"choose another, e.g. BIND={host}:8080"
            ) from None
        except OSError as exc:
            raise Refused(
                f"Cannot listen on {bind}: {exc.strerror or exc}. Another process probably "
                f"serves that port; stop it or choose another, e.g. make serve BIND={host}:"
                f"{port + 1 if port < 65535 else 8000}"
            ) from None


def ensure_secret_key() -> None:
    """Give gunicorn and this process a SECRET_KEY: the environment's, else SECRET_KEY_FILE's
    (config/settings.py reads it), which is made here once with a random key, readable by its
    owner only, and kept for the next start, so that signed cache entries stay valid."""
    if os.environ.get("SECRET_KEY"):
        return
    path = Path(os.environ.get("SECRET_KEY_FILE") or ROOT / ".secret_key")
    if path.exists():
        return
    made = path.with_name(f"{path.name}.{os.getpid()}.new")
    fd = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(50) + "\n")
    try:
        os.link(made, path)  # complete or absent, and never over a key another start made
        print(f"Made a random SECRET_KEY in {path}; it is kept for the next start.", flush=True)
    except FileExistsError:
        pass
    finally:
        made.unlink()


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


# How long the start waits for a database server that answers. A request's wait
# (DATABASE_RECONNECT_WAIT_SECONDS, 3 s) also bounds the attempt in progress, and a server
# busy with other work can take longer than that to answer at all, even to say that the
# database does not exist; a start can afford to wait longer than a request.
STARTUP_DATABASE_WAIT_SECONDS = 10.0


def check_database() -> None:
    from django.conf import settings
    from django.db import OperationalError, connection

    database = settings.DATABASES["default"]
    if "RECONNECT_WAIT_SECONDS" in connection.settings_dict:
        connection.settings_dict["RECONNECT_WAIT_SECONDS"] = max(
            float(connection.settings_dict["RECONNECT_WAIT_SECONDS"] or 0),
            STARTUP_DATABASE_WAIT_SECONDS,
        )
    try:
        connection.ensure_connection()
    except OperationalError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if connection.vendor == "postgresql":
            host = database.get("HOST") or "localhost"
            port = database.get("PORT") or 5432
            where = f"PostgreSQL at {host}:{port}"
            if "does not exist" in message and "database" in message:
                user = f" -U {database['USER']}" if database.get("USER") else ""
                raise Refused(
                    f"{where} has no database {database['NAME']!r}. Create it, then run "
                    f"this again:\n    createdb -h {host} -p {port}{user} {database['NAME']}"
                ) from None
            raise Refused(
                f"Cannot connect to {where} (DATABASE_URL): {message}\n"
                "Start PostgreSQL or correct DATABASE_URL, then run this again."
            ) from None
        raise Refused(f"Cannot open the database {database['NAME']}: {message}") from None
    finally:
        connection.close()


def check_cache() -> None:
    """Decide works without Redis (from the database), so a dead Redis only gets a warning."""
    from django.conf import settings

    if not settings.REDIS_URL:
        return
    from django.core.cache import caches

    try:
        caches["decide"].client.get_client(write=True).ping()
    except Exception as exc:
        print(
            f"Warning: Redis at REDIS_URL does not answer ({exc}); decide reads from the "
            "database until it does, and /readyz answers 503.",
            file=sys.stderr,
        )


def migrate() -> None:
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", interactive=False, verbosity=1)
    connections.close_all()


def demo_text(base_url: str) -> str:
    """The demo's client key, admin token and curls, made now and printed once Lab answers."""
    from django.core.management import call_command
    from django.db import connections

    demo = io.StringIO()
    call_command("demo", base_url=base_url, stdout=demo)
    client_key = next(
        line.removeprefix("Client key: ")
        for line in demo.getvalue().splitlines()
        if line.startswith("Client key: ")
    )
    token = io.StringIO()
    call_command("create_api_token", "demo", stdout=token, stderr=io.StringIO())
    secret = token.getvalue().strip().splitlines()[-1]
    connections.close_all()
    return (
        f"{demo.getvalue().rstrip()}\n"
        f"Admin API token: {secret}\n"
        "List the demo user's products:\n"
        f"curl -s {base_url}/api/admin/v1/products -H 'Authorization: Bearer {secret}'\n"
        "For the examples of README.md and docs/, in the terminal you run them in:\n"
        f"export LAB={base_url} TOKEN={secret} LAB_CLIENT_KEY={client_key} "
        f"CLIENT_KEY={client_key}\n"
    )


def _die_with_parent() -> None:
    """Children get SIGTERM if this process dies without stopping them (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    # A session of its own: Ctrl-C in the terminal reaches only this process, which then
    # stops the children in the right order (nginx first).
    return subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, preexec_fn=_die_with_parent
    )


WILDCARDS = {"0.0.0.0", "::", "*", ""}


def allowed_hosts(bind_host: str) -> tuple[str | None, str | None]:
    """What ALLOWED_HOSTS the server gets for BIND, and what to tell the user about it.

    Django answers 400 to a request whose Host is not in ALLOWED_HOSTS, and by default that
    is only this machine's loopback names: a server bound to a specific address adds that
    address (a client that reaches it there sends it as Host); one bound to every address
    cannot guess the names its clients use, so it says which ones it answers and how to add
    others. ALLOWED_HOSTS set in the environment is used as it is.

    Returns (the value to put in the server's environment or None to leave it, a notice or
    None)."""
    from django.conf import settings

    configured = list(settings.ALLOWED_HOSTS)
    if "*" in configured:
        return None, None
    literal = f"[{bind_host}]" if ":" in bind_host else bind_host
    if bind_host in WILDCARDS:
        return None, (
            f"Lab answers only requests whose Host is one of {', '.join(configured)} "
            "(ALLOWED_HOSTS); a client that reaches this machine by another name or address "
            "gets 400. Set ALLOWED_HOSTS to the names clients use (comma-separated, e.g. "
            "ALLOWED_HOSTS=lab.example.com,10.0.0.5) and start again; docs/operations.md, "
            '"Configuration".'
        )
    if literal.lower() in (host.lower() for host in configured):
        return None, None
    if os.environ.get("ALLOWED_HOSTS"):
        return None, (
            f"ALLOWED_HOSTS ({', '.join(configured)}) does not name {literal}, the address "
            f"Lab listens on: requests sent to http://{literal}:PORT/ get 400 unless their Host "
            "is one of those names."
        )
    return ",".join([*configured, literal]), None


def probe_host_header() -> str:
    """A Host that ALLOWED_HOSTS accepts, for our own readiness probe."""
    from django.conf import settings

    for allowed in settings.ALLOWED_HOSTS:
        if allowed != "*":
            return allowed.lstrip(".")
    return "localhost"


def healthz(
    host: str, port: int | None = None, unix_socket: Path | None = None, header: str = ""
) -> bool:
    try:
        if unix_socket is not None:
            conn = http.client.HTTPConnection("localhost", timeout=2)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(2)
            sock.connect(str(unix_socket))
            conn.sock = sock
        else:
            conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", "/healthz", headers={"Host": header or "localhost"})
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


def stop(process: subprocess.Popen | None, sig: signal.Signals, name: str) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop in {STOP_TIMEOUT_SECONDS} s: killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Stopping(Exception):
    pass


def _on_signal(signum, frame):
    raise Stopping(signal.Signals(signum).name)


def serve(args: argparse.Namespace) -> int:
    host, port = parse_bind(args.bind)
    check_port_free(host, port, args.bind)
    if args.front == "nginx" and front.nginx_binary() is None:
        raise Refused("nginx is not installed (make serve-production installs it with apt-get)")
    try:
        limits = front.RateLimits.from_env()
    except ValueError as exc:
        raise Refused(str(exc)) from None
    ensure_secret_key()
    setup_django()
    check_database()
    check_cache()
    migrate()
    base_url = f"http://{args.bind}"
    paste = demo_text(base_url) if args.demo else ""

    from django.conf import settings

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"]}
    hosts, hosts_notice = allowed_hosts(host)
    if hosts is not None:
        env["ALLOWED_HOSTS"] = hosts
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="lab-run-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    if args.workers:
        gunicorn += ["-w", str(args.workers)]
    socket_path = run_dir / "gunicorn.sock"
    if args.front == "nginx":
        gunicorn += ["-b", f"unix:{socket_path}", "config.wsgi:application"]
        try:
            config = front.write_config(
                run_dir,
                listen=args.bind,
                upstreams=[f"unix:{socket_path}"],
                max_body_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
                limits=limits,
                cors_origins=settings.CORS_ALLOWED_ORIGINS,
            )
        except ValueError as exc:
            raise Refused(str(exc)) from None
    else:
        gunicorn += ["-b", args.bind, "config.wsgi:application"]

    header = probe_host_header()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    app = proxy = None
    try:
        app = start(gunicorn, env)
        if args.front == "nginx":
            wait_ready(app, "gunicorn", lambda: healthz("", unix_socket=socket_path, header=header))
            proxy = start(front.nginx_command(config), env)
        wait_ready(
            proxy or app,
            "nginx" if proxy else "gunicorn",
            lambda: healthz(probe_host(host), port, header=header),
        )
        if paste:
            print(f"\n{paste}", flush=True)
        if hosts_notice:
            print(f"Note: {hosts_notice}", flush=True)
        behind = f" (nginx in front of gunicorn on unix:{socket_path})" if proxy else ""
        print(f"Lab is serving on {base_url}{behind}. Ctrl-C stops it.", flush=True)
        while True:
            for process, name in ((app, "gunicorn"), (proxy, "nginx")):
                if process is not None and process.poll() is not None:
                    print(f"{name} exited ({process.returncode}): stopping", file=sys.stderr)
                    return 1
            time.sleep(0.2)
    except Stopping as stopping:
        print(f"{stopping}: stopping Lab", file=sys.stderr, flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(proxy, signal.SIGQUIT, "nginx")  # graceful: requests in flight finish
        stop(app, signal.SIGTERM, "gunicorn")  # graceful: workers finish their request
        if not args.run_dir:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)


def wait_ready(process: subprocess.Popen, name: str, answers) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Refused(f"{name} exited ({process.returncode}) before Lab answered; see above")
        if answers():
            return
        time.sleep(0.1)
    raise Refused(f"Lab did not answer /healthz through {name} in {READY_TIMEOUT_SECONDS} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT to serve on")
    parser.add_argument("--front", choices=("none", "nginx"), default="none")
    parser.add_argument("--workers", type=int, help="gunicorn workers (gunicorn.conf.py's)")
    parser.add_argument("--demo", action="store_true", help="print the demo's keys and curls")
    parser.add_argument("--run-dir", help="folder for the socket, nginx config and temp files")
    args = parser.parse_args(argv)
    try:
        return serve(args)
    except Refused as refused:
        print(f"Lab did not start: {refused}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
