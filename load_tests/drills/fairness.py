"""Fair tenants at the front: one client key floods decide at 10x its limit, another's p99.

Lab runs as `make serve-production` runs it (deploy/serve.py --front nginx: nginx in front of
gunicorn), with LAB_DECIDE_RATE set to RATE for the drill. Two tenants, each a product of
its own with a client key (manage.py seed_drill). In alternating rounds, with the open-loop
generator (load_tests/openloop.py, latency from the moment each request was due):

- quiet:  the quiet key alone at QUIET r/s (known units, below its own limit);
- flood:  the same, while the flooding key sends 10 x RATE r/s.

The quiet key's p99 under the flood must stay within 2x its quiet p99 (medians over the
rounds). With --control the same flood runs once more with the limit lifted, to show what
the limit is protecting against. Prints one JSON object as its last line.

    DATABASE_URL=... python load_tests/drills/fairness.py --rate 100 --quiet 20 --rounds 3

DATABASE_URL must name a migrated PostgreSQL database Lab may write to (e.g. the cluster of
`make ha-up`); the drill adds two products to it.
"""

import argparse
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPENLOOP = ROOT / "load_tests" / "openloop.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


class Front:
    def __init__(self, env: dict, workers: int, home: Path):
        self.port = _free_port()
        self.env = env
        self.workers = workers
        self.home = home
        self.process = None

    def __enter__(self) -> "Front":
        self.log = open(self.home / f"serve-{self.port}.log", "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "deploy/serve.py",
                *("--bind", f"127.0.0.1:{self.port}", "--front", "nginx"),
                *("--workers", str(self.workers), "--run-dir", str(self.home / f"run-{self.port}")),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"serve.py exited {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise SystemExit("Lab did not answer in 90 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def openloop(url: str, key: str, prefix: str, rate: float, duration: float, warmup: float):
    env = {
        **os.environ,
        "LAB_CLIENT_KEY": key,
        "LAB_KNOWN_UNITS": "200",
        "LAB_UNIT_PREFIX": prefix,
        "LAB_UNIT_DIGITS": "4",
    }
    command = [
        sys.executable,
        str(OPENLOOP),
        *("--url", url, "--scenario", "known", "--rate", str(rate)),
        *("--duration", str(duration), "--warmup", str(warmup), "--timeout", "10"),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate(timeout=300)
    return json.loads(out.strip().splitlines()[-1])


def rounds(front: Front, keys: dict, args, flood: bool) -> list[dict]:
    """One measurement: the quiet key at args.quiet r/s, with the flood alongside or not."""
    warmup = 2.0
    flooding = None
    if flood:
        flooding = openloop(
            front.url, keys["flood"], "flood-", 10 * args.rate, args.duration + 1, warmup
        )
    quiet = openloop(front.url, keys["quiet"], "quiet-", args.quiet, args.duration, warmup)
    measured = result(quiet)
    flood_result = result(flooding) if flooding else None
    return {"quiet": measured, "flood": flood_result}


def summary(runs: list[dict]) -> dict:
    return {
        "p99_ms": [round(r["quiet"]["p99_ms"], 2) for r in runs],
        "p50_ms": [round(r["quiet"]["p50_ms"], 2) for r in runs],
        "quiet_statuses": [r["quiet"]["statuses"] for r in runs],
        "flood_statuses": [r["flood"]["statuses"] for r in runs if r["flood"]],
        "flood_achieved_rps": [round(r["flood"]["achieved_rps"], 1) for r in runs if r["flood"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=100, help="LAB_DECIDE_RATE of the drill")
    parser.add_argument("--quiet", type=float, default=20, help="the quiet key's r/s")
    parser.add_argument("--duration", type=float, default=10, help="measured seconds a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--control", action="store_true", help="also flood with no limit")
    args = parser.parse_args(argv)
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        raise SystemExit("DATABASE_URL must name a PostgreSQL database (e.g. make ha-up's)")

    env = {
        k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=secrets.token_urlsafe(40),
        ACCESS_LOG_LEVEL="WARNING",
        LAB_DECIDE_RATE=str(args.rate),
        LAB_DECIDE_BURST=str(args.rate),
    )
    nonce = secrets.token_hex(3)
    keys = {}
    for tenant in ("quiet", "flood"):
        seeded = _manage(
            env,
            "seed_drill",
            "--username",
            f"fair-{tenant}-{nonce}",
            "--product",
            f"fair-{tenant}-{nonce}",
        )
        keys[tenant] = json.loads(seeded.strip().splitlines()[-1])["client_key"]
    home = Path(tempfile.mkdtemp(prefix="lab-fairness-"))
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "decide_rate_per_key": args.rate,
        "decide_burst_per_key": args.rate,
        "flood_offered_rps": 10 * args.rate,
        "quiet_offered_rps": args.quiet,
        "rounds": args.rounds,
        "seconds_per_round": args.duration,
        "gunicorn_workers": args.workers,
    }
    with Front(env, args.workers, home) as front:
        quiet_runs, flood_runs = [], []
        for _ in range(args.rounds):
            quiet_runs.append(rounds(front, keys, args, flood=False))
            flood_runs.append(rounds(front, keys, args, flood=True))
    report["quiet_alone"] = summary(quiet_runs)
    report["quiet_under_flood"] = summary(flood_runs)
    quiet_p99 = statistics.median(report["quiet_alone"]["p99_ms"])
    flood_p99 = statistics.median(report["quiet_under_flood"]["p99_ms"])
    report["p99_ratio"] = round(flood_p99 / quiet_p99, 2)
    if args.control:
        env_off = {**env, "LAB_DECIDE_RATE": "1000000", "LAB_DECIDE_BURST": "1000000"}
        with Front(env_off, args.workers, home) as front:
            control = [rounds(front, keys, args, flood=True) for _ in range(args.rounds)]
        report["control_no_limit_under_flood"] = summary(control)
        report["control_p99_ratio"] = round(
            statistics.median(report["control_no_limit_under_flood"]["p99_ms"]) / quiet_p99, 2
        )
    quiet_ok = all(
        set(s) == {"200"}
        for s in report["quiet_alone"]["quiet_statuses"]
        + report["quiet_under_flood"]["quiet_statuses"]
    )
    flood_limited = all("429" in s for s in report["quiet_under_flood"]["flood_statuses"])
    report["passed"] = quiet_ok and flood_limited and report["p99_ratio"] <= 2.0
    print(json.dumps(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
