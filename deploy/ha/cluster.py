"""A Patroni cluster for Lab on one host: one etcd, a primary and a synchronous standby.

Everything runs on loopback from the distribution's packages (patroni, etcd-server and
PostgreSQL's server binaries), in one folder of its own: etcd's data, each node's data
folder, Patroni configuration and logs, and `state.json` (ports and process ids), which is
what `down` and `status` read. Nothing outside that folder is touched; the ports are checked
to be free before anything starts. Explained in docs/operations.md, "High availability".
"""

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCOPE = "lab"
NODES = ("pg0", "pg1")
DATABASE = "lab"
# The packages that provide `patroni` and `etcd` (Debian and Ubuntu names).
PACKAGES = {"patroni": "patroni", "etcd": "etcd-server"}
# Patroni's timing. A crashed primary is failed over at once rather than restarted in place
# (primary_start_timeout 0: its synchronous standby holds every acknowledged commit), and the
# loop runs every second, so the standby is promoted a few seconds after the crash. A
# primary that is cut off from etcd stops being one within `ttl`.
DCS = {
    "ttl": 10,
    "loop_wait": 1,
    "retry_timeout": 4,
    "maximum_lag_on_failover": 1048576,
    "primary_start_timeout": 0,
    "synchronous_mode": True,
    "synchronous_node_count": 1,
}
READY_TIMEOUT_SECONDS = 180


class ClusterError(Exception):
    """What went wrong, in a sentence a user can act on."""


@dataclass
class Ports:
    postgres: tuple[int, int] = (5440, 5441)
    rest: tuple[int, int] = (8010, 8011)
    etcd_client: int = 2390
    etcd_peer: int = 2391

    def all(self) -> list[int]:
        return [*self.postgres, *self.rest, self.etcd_client, self.etcd_peer]

    @classmethod
    def parse(cls, text: str) -> "Ports":
        """Six comma-separated ports: PostgreSQL x2, Patroni REST x2, etcd client, etcd peer."""
        try:
            p = [int(part) for part in text.split(",")]
        except ValueError:
            p = []
        if len(p) != 6 or not all(0 < port < 65536 for port in p):
            raise ClusterError(f"LAB_HA_PORTS needs six ports separated by commas, not {text!r}")
        return cls(postgres=(p[0], p[1]), rest=(p[2], p[3]), etcd_client=p[4], etcd_peer=p[5])

    @classmethod
    def free(cls) -> "Ports":
        """Six ports nothing listens on, chosen by the kernel (for drills that run in
        parallel with a cluster of `make ha-up`)."""
        sockets = []
        try:
            for _ in range(6):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", 0))
                sockets.append(sock)
            p = [sock.getsockname()[1] for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()
        return cls(postgres=(p[0], p[1]), rest=(p[2], p[3]), etcd_client=p[4], etcd_peer=p[5])


@dataclass
class State:
    ports: Ports
    pids: dict[str, int] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> "State":
        data = json.loads(path.read_text())
        ports = data["ports"]
        return cls(
            ports=Ports(
                postgres=tuple(ports["postgres"]),
                rest=tuple(ports["rest"]),
                etcd_client=ports["etcd_client"],
                etcd_peer=ports["etcd_peer"],
            ),
            pids=data["pids"],
        )


def default_home() -> Path:
    return Path(os.environ.get("LAB_HA_DIR") or Path("/tmp") / f"lab-ha-{os.getuid()}")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Installation


def postgres_bindir() -> Path | None:
    """The newest PostgreSQL server installed by the distribution (or LAB_PG_BINDIR, or
    the folder of the `initdb` on PATH): a folder holding both `initdb` and `postgres`."""
    candidates = [os.environ.get("LAB_PG_BINDIR", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        if candidate and all((Path(candidate) / b).exists() for b in ("initdb", "postgres")):
            return Path(candidate)
    return None


def missing_packages() -> list[str]:
    missing = [package for tool, package in PACKAGES.items() if shutil.which(tool) is None]
    if postgres_bindir() is None:
        missing.append("postgresql")
    return missing


def install_missing() -> None:
    """apt-get install what is missing (as root, or through sudo); nothing when all is there.
    The packages' own services are not wanted: Debian does not start them without systemd,
    and the cluster's processes are started here on ports of its own."""
    missing = missing_packages()
    if not missing:
        return
    install_packages(missing)
    still = missing_packages()
    if still:
        raise ClusterError(f"still missing after apt-get: {', '.join(still)}")


def install_packages(missing: list[str]) -> None:
    """apt-get install `missing` (as root, or through sudo)."""
    if shutil.which("apt-get") is None:
        raise ClusterError(f"install {', '.join(missing)} (no apt-get on this machine)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    _say(f"Installing {' '.join(missing)} (apt-get)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Another apt may hold dpkg's lock for a while: wait for it rather than fail.
    wait_lock = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        [*sudo, "apt-get", *wait_lock, "update", "-qq"],
        [*sudo, "apt-get", *wait_lock, "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ClusterError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")


# --- Processes


def _as_service_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: Patroni (which starts it) runs as `postgres` then."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _chown_to_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _start(command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: the cluster outlives `up` and a Ctrl-C in its terminal.
            start_new_session=True,
        )


def _http_json(url: str, timeout: float = 2.0, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


class Cluster:
    """The cluster in `home`. `up()` starts it, `down()` stops it and removes `home`."""

    def __init__(self, home: Path | None = None, ports: Ports | None = None):
        self.home = Path(home or default_home())
        self.state_file = self.home / "state.json"
        if ports is None and self.state_file.exists():
            ports = State.load(self.state_file).ports
        self.ports = ports or Ports()

    # -- addresses

    @property
    def database_url(self) -> str:
        """Lab's DATABASE_URL: libpq tries each host in turn and keeps the one that accepts
        writes, so after a failover new connections find the new primary by themselves."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports.postgres)
        return f"postgres://postgres@{hosts}/{DATABASE}?target_session_attrs=read-write"

    def node_url(self, node: str, database: str = DATABASE) -> str:
        port = self.ports.postgres[NODES.index(node)]
        return f"postgres://postgres@127.0.0.1:{port}/{database}"

    def rest_url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.ports.rest[NODES.index(node)]}"

    def config_file(self, node: str) -> Path:
        return self.home / node / "patroni.yml"

    # -- configuration

    def _etcd_command(self) -> list[str]:
        client = f"http://127.0.0.1:{self.ports.etcd_client}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        return [
            shutil.which("etcd") or "etcd",
            "--name=lab-ha",
            f"--data-dir={self.home / 'etcd' / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=lab-ha={peer}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=lab-ha",
            "--log-level=warn",
        ]

    def _patroni_config(self, node: str, bindir: Path) -> dict:
        index = NODES.index(node)
        node_home = self.home / node
        postgres_port = self.ports.postgres[index]
        rest_port = self.ports.rest[index]
        trust = "trust"
        return {
            "scope": SCOPE,
            "name": node,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{rest_port}",
                "connect_address": f"127.0.0.1:{rest_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.ports.etcd_client}"]},
            "bootstrap": {
                "dcs": {
                    **DCS,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_connections": 100,
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "wal_keep_size": "128MB",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, "no-locale"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{postgres_port}",
                "connect_address": f"127.0.0.1:{postgres_port}",
                "data_dir": str(node_home / "data"),
                "bin_dir": str(bindir),
                "pgpass": str(node_home / "pgpass"),
                # Loopback only, and trusted: the cluster is a local one, like the project's
                # development PostgreSQL.
                "pg_hba": [
                    f"local all all {trust}",
                    f"local replication all {trust}",
                    f"host all all 127.0.0.1/32 {trust}",
                    f"host replication all 127.0.0.1/32 {trust}",
                ],
                "authentication": {
                    "superuser": {"username": "postgres", "password": "lab-ha"},
                    "replication": {"username": "replicator", "password": "lab-ha"},
                    "rewind": {"username": "postgres", "password": "lab-ha"},
                },
                # A primary that crashed is rewound to follow the new one; when rewinding
                # is not possible its data folder is made again from the new primary.
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
                "parameters": {
                    "unix_socket_directories": str(node_home),
                    "logging_collector": "on",
                    "log_directory": str(node_home / "log"),
                    "log_filename": "postgresql.log",
                    "log_min_messages": "warning",
                },
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }

    def _write_configs(self, bindir: Path) -> None:
        for node in NODES:
            node_home = self.home / node
            (node_home / "log").mkdir(parents=True, exist_ok=True)
            # JSON is YAML: no YAML writer needed.
            self.config_file(node).write_text(
                json.dumps(self._patroni_config(node, bindir), indent=2)
            )
            _chown_to_service_user(node_home)

    # -- life cycle

    def running(self) -> bool:
        if not self.state_file.exists():
            return False
        return any(_alive(pid) for pid in State.load(self.state_file).pids.values())

    def up(self, *, migrate: bool = True) -> None:
        """Start etcd and both nodes, wait for a leader and a synchronous standby, create
        the `lab` database and (unless told not to) apply Lab's migrations."""
        if self.running():
            self.wait_healthy()
            return
        install_missing()
        if not _service_user_available():
            raise ClusterError("as root, Patroni runs as the `postgres` user: create it first")
        bindir = postgres_bindir()
        busy = [port for port in self.ports.all() if _port_in_use(port)]
        if busy:
            raise ClusterError(
                f"ports {', '.join(map(str, busy))} are in use; stop what listens there or "
                "choose others (LAB_HA_PORTS, see docs/operations.md)"
            )
        if self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        self.home.chmod(0o755)
        (self.home / "etcd").mkdir()
        self._write_configs(bindir)
        state = State(ports=self.ports)
        try:
            etcd = _start(self._etcd_command(), self.home / "etcd" / "etcd.log", self.home)
            state.pids["etcd"] = etcd.pid
            state.save(self.state_file)
            self._wait(self._etcd_healthy, 30, "etcd to answer")
            for node in NODES:
                patroni = _start(
                    _as_service_user([shutil.which("patroni"), str(self.config_file(node))]),
                    self.home / node / "patroni.log",
                    self.home / node,
                )
                state.pids[node] = patroni.pid
                state.save(self.state_file)
                if node == NODES[0]:
                    # The first node bootstraps the cluster (initdb); the second then
                    # clones it rather than racing for the initialize key.
                    self._wait(lambda: self.leader() is not None, READY_TIMEOUT_SECONDS, "a leader")
            self.wait_healthy()
            self._create_database()
            if migrate:
                self.migrate()
        except BaseException:
            _say(self.logs_tail())
            self.down()
            raise

    def wait_healthy(self, timeout: float = READY_TIMEOUT_SECONDS) -> dict:
        """Until there is a running leader and a streaming synchronous standby."""
        self._wait(
            lambda: self.leader() is not None and self.sync_standby() is not None,
            timeout,
            "a leader and a synchronous standby",
        )
        return self.members()

    def down(self) -> None:
        """Stop Patroni (which stops PostgreSQL) and etcd, then remove the folder."""
        pids = State.load(self.state_file).pids if self.state_file.exists() else {}
        for name in (*NODES, "etcd"):
            pid = pids.get(name)
            if pid and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                self._wait_gone(pid, 30)
        # Whatever outlived its parent (a postmaster whose Patroni was killed).
        for node in NODES:
            pid = self.postmaster_pid(node)
            if pid and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)
                self._wait_gone(pid, 10)
        shutil.rmtree(self.home, ignore_errors=True)

    @staticmethod
    def _wait_gone(pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = State.load(self.state_file).pids if self.state_file.exists() else {}
            dead = [name for name, pid in pids.items() if not _alive(pid)]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}")
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                if predicate():
                    return
            time.sleep(0.2)
        raise ClusterError(f"no {what} after {timeout:.0f} s")

    def _etcd_healthy(self) -> bool:
        health = _http_json(f"http://127.0.0.1:{self.ports.etcd_client}/health")
        return str(health.get("health")) == "true"

    # -- what the cluster looks like

    def members(self) -> list[dict]:
        """Patroni's view (GET /cluster) from whichever node answers."""
        for node in NODES:
            with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
                return _http_json(f"{self.rest_url(node)}/cluster")["members"]
        return []

    def _member(self, roles: tuple[str, ...]) -> str | None:
        for member in self.members():
            if member.get("role") in roles and member.get("state") in ("running", "streaming"):
                return member["name"]
        return None

    def leader(self) -> str | None:
        return self._member(("leader", "master", "primary"))

    def sync_standby(self) -> str | None:
        return self._member(("sync_standby",))

    def postmaster_pid(self, node: str) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.home / node / "data" / "postmaster.pid").read_text().split()[0])
        return None

    def timeline(self) -> int | None:
        for member in self.members():
            if member.get("role") in ("leader", "master", "primary"):
                return member.get("timeline")
        return None

    def status(self) -> str:
        if not self.running():
            return f"no cluster running in {self.home}"
        lines = [f"cluster {SCOPE!r} in {self.home}", f"DATABASE_URL={self.database_url}"]
        for member in self.members():
            lines.append(
                f"  {member['name']}: {member.get('role')}, {member.get('state')}, "
                f"port {member.get('port')}, timeline {member.get('timeline')}, "
                f"lag {member.get('lag', 0)}"
            )
        return "\n".join(lines)

    def logs_tail(self, lines: int = 20) -> str:
        parts = []
        for log in (
            self.home / "etcd" / "etcd.log",
            *(self.home / node / "patroni.log" for node in NODES),
            *(self.home / node / "log" / "postgresql.log" for node in NODES),
        ):
            if log.exists():
                text = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {log}\n" + "\n".join(text))
        return "\n".join(parts)

    # -- operations

    def patronictl(self, *args: str) -> subprocess.CompletedProcess:
        node = self.leader() or NODES[0]
        return subprocess.run(
            [shutil.which("patronictl") or "patronictl", "-c", str(self.config_file(node)), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def switchover(self) -> tuple[str, str]:
        """A planned switchover to the synchronous standby; (old leader, new leader)."""
        leader, candidate = self.leader(), self.sync_standby()
        if leader is None or candidate is None:
            raise ClusterError("a switchover needs a leader and a synchronous standby")
        result = self.patronictl(
            "switchover", SCOPE, "--leader", leader, "--candidate", candidate, "--force"
        )
        if result.returncode != 0:
            raise ClusterError(f"patronictl switchover failed:\n{result.stdout}{result.stderr}")
        return leader, candidate

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            self.database_url.replace(f"/{DATABASE}?", "/postgres?"),
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            exists = "SELECT 1 FROM pg_database WHERE datname = %s"
            if not conn.execute(exists, [DATABASE]).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def migrate(self) -> None:
        env = {**os.environ, "DATABASE_URL": self.database_url}
        env["DJANGO_SETTINGS_MODULE"] = "config.settings"
        env.pop("TEST_DATABASE_NAME", None)
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise ClusterError(f"manage.py migrate failed:\n{result.stderr[-3000:]}")


def _service_user_available() -> bool:
    """Running as root needs a `postgres` user to run Patroni and PostgreSQL as."""
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return shutil.which("runuser") is not None
