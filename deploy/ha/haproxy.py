"""HAProxy in front of the Patroni cluster: the alternative to libpq's multi-host URL that the
failover drill measures (`python -m deploy.ha drill --route haproxy`; docs/scaling.md §7).

One TCP frontend on a free loopback port; each PostgreSQL node is a server that HAProxy
sends connections to only while its Patroni REST API answers 200 to `GET /primary` (checked
every 500 ms, down after 2 failures, up after 1 success), as Patroni's documentation
describes. Sessions on a node marked down are shut, so that Lab's kept connections to an old
primary end at once. Debian's `haproxy` package; installed with apt-get when missing.
"""

import shutil
import signal
import subprocess
import time
from pathlib import Path

from deploy.ha.cluster import NODES, Cluster, ClusterError, install_packages

CHECK_INTERVAL_MS = 500


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


class HAProxy:
    def __init__(self, cluster: Cluster, home: Path, port: int):
        self.cluster = cluster
        self.home = home
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def database_url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/lab"

    def config(self) -> str:
        servers = "\n".join(
            f"    server {node} 127.0.0.1:{self.cluster.ports.postgres[i]} "
            f"check port {self.cluster.ports.rest[i]}"
            for i, node in enumerate(NODES)
        )
        return (
            "global\n    maxconn 500\n"
            "defaults\n    mode tcp\n    timeout connect 2s\n"
            "    timeout client 30m\n    timeout server 30m\n    timeout check 1s\n"
            f"listen lab_primary\n    bind 127.0.0.1:{self.port}\n"
            "    option httpchk GET /primary\n    http-check expect status 200\n"
            f"    default-server inter {CHECK_INTERVAL_MS}ms fall 2 rise 1 "
            "on-marked-down shutdown-sessions\n"
            f"{servers}\n"
        )

    def start(self) -> None:
        if haproxy_binary() is None:
            install_packages(["haproxy"])
        binary = haproxy_binary()
        if binary is None:
            raise ClusterError("haproxy is not installed (apt-get install haproxy)")
        config = self.home / "haproxy.cfg"
        config.write_text(self.config())
        with open(self.home / "haproxy.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, "-f", str(config), "-db"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # HAProxy counts a server up until its checks say otherwise: wait until several
        # connections in a row reach the primary only.
        deadline = time.monotonic() + 30
        in_a_row = 0
        while time.monotonic() < deadline and in_a_row < 6:
            if self.process.poll() is not None:
                raise ClusterError(f"haproxy exited: {(self.home / 'haproxy.log').read_text()}")
            in_a_row = in_a_row + 1 if self._reaches_primary() else 0
            time.sleep(CHECK_INTERVAL_MS / 1000 / 2)
        if in_a_row < 6:
            raise ClusterError("HAProxy did not route to the primary only within 30 s")

    def _reaches_primary(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.database_url, connect_timeout=2, autocommit=True) as conn:
                return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
