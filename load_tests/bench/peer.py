"""The peer: unleash-server 8 from npm on Node 22 from npm (both pinned in
load_tests/unleash/package-lock.json), over a PostgreSQL cluster of its own, measured in the
same rounds as Lab (load_tests/README.md, "The benchmark")."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from load_tests.bench.drivers import run_wrk
from load_tests.bench.meters import children_of
from load_tests.bench.run import LOAD_TESTS, free_port, log
from load_tests.bench.scenarios import PEER_LABEL, PEER_SCENARIO
from load_tests.bench.servers import stop_process

UNLEASH_DIR = LOAD_TESTS / "unleash"
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

    def scenario_env(self, nonce: str, scenario=None) -> dict[str, str]:
        """The same request whatever Lab's traffic shape: Unleash keeps no state per user."""
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
