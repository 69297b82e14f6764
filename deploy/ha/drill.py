"""The failover drill (`make ha-drill`, `python -m deploy.ha drill`; tests/drills/test_failover.py).

On a cluster of its own (free ports, a temporary folder removed afterwards):

1. Lab runs behind its production front (`deploy/serve.py --front nginx`: nginx and
   gunicorn as shipped) against the cluster's multi-host DATABASE_URL.
2. Load from a few threads, every answer recorded: decide for new units and for known ones,
   decide/batch, and admin writes (units forced onto variants; experiments enabled, one
   status change each, so that every acknowledged write is checkable on its own).
3. The primary's postmaster is killed with SIGKILL. Patroni promotes the synchronous standby;
   the time from the kill to the first 200 of a decide that has to write (a new unit) is
   measured; meanwhile answers are 503 with `Retry-After`, and no request may outlast the
   client's timeout.
4. With the load stopped, every acknowledged answer is checked against the new primary's
   rows: each (unit, experiment) a 200 reported is stored once, on the variant reported; each
   acknowledged forced assignment and status change is there. The old primary must be back
   as a standby (Patroni rewinds it), and the known-unit memory must follow the new primary
   (an assignment changed there reaches every worker's memory through LISTEN/NOTIFY).
5. A planned switchover (`patronictl switchover`) under the same load, the old primary
   watched every 50 ms on connections of the drill's own. The only requests that may fail
   are those in flight at the handover: started before the old primary stopped accepting
   and not finished by then. Any later one waits for the new primary (Lab's bounded
   reconnect, DATABASE_RECONNECT_WAIT_SECONDS) and succeeds.

The last line printed is one JSON object (the `summary` below); the line before it holds
the details (errors by kind, timings).

Why this module is long: it is one procedure, read from top to bottom; its load, the server
it runs and the checks all work on the same record of every answer.
"""

import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from deploy.ha.client import request
from deploy.ha.cluster import ROOT, Cluster, ClusterError, Ports
from deploy.ha.haproxy import HAProxy

CLIENT_TIMEOUT_SECONDS = 5.0
FIRST_GOOD_ANSWER_LIMIT_SECONDS = 15.0
WARM_SECONDS = 3.0
AFTER_RECOVERY_SECONDS = 3.0
STATUS_EXPERIMENTS = 150
DECIDE_THREADS = 3
# Slowest failover answers reported, with Lab's log lines for them.
SLOWEST_KEPT = 6
GUNICORN_WORKERS = 3
# The experiment the admin load forces units onto, and its variants (seed_drill's).
FORCED_EXPERIMENT = "color"
FORCED_VARIANTS = ("red", "blue")
OPS_PRODUCT = "ops"


def _say(message: str) -> None:
    print(f"[drill {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Reply:
    kind: str  # new | known | batch | force | status | probe
    method: str
    path: str
    body: dict | None
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    answer: object
    headers: dict
    started: float
    ended: float
    error: str | None = None
    request_id: str = ""


class Client:
    def __init__(self, base_url: str, timeout: float = CLIENT_TIMEOUT_SECONDS):
        self.base_url = base_url
        self.timeout = timeout
        self._ids = itertools.count(1)

    def call(self, kind: str, method: str, path: str, body=None, token: str = "") -> Reply:
        # Lab logs each request under this id: a slow answer's log lines can be found.
        request_id = f"drill-{kind}-{next(self._ids)}-{secrets.token_hex(3)}"
        answer = request(
            self.base_url,
            method,
            path,
            body,
            token=token,
            timeout=self.timeout,
            host="127.0.0.1",
            request_id=request_id,
        )
        return Reply(
            kind,
            method,
            path,
            body,
            answer.status,
            answer.body,
            answer.headers,
            answer.started,
            answer.ended,
            answer.error,
            request_id,
        )


@dataclass
class Seed:
    admin_token: str
    client_key: str
    product: str
    experiments: dict


@dataclass
class Load:
    """Decide and admin threads; every reply kept. Units are named per run and thread, so
    each new-unit decide and each forced unit is a unit nobody else asked for."""

    client: Client
    seed: Seed
    status_writes: bool = True
    replies: list[Reply] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._known: list[str] = []
        self._threads: list[threading.Thread] = []
        self._status_next = 0

    def _record(self, reply: Reply) -> Reply:
        with self._lock:
            self.replies.append(reply)
        return reply

    def _decide(self, thread: int) -> None:
        rng = random.Random(thread)
        key = self.seed.client_key
        i = 0
        while not self._stop.is_set():
            i += 1
            with self._lock:
                known = rng.choice(self._known) if self._known else None
            if i % 5 == 0:
                units = [f"b{thread}-{i}-{n}" for n in range(4)] + ([known] if known else [])
                reply = self.client.call(
                    "batch", "POST", "/api/v1/decide/batch", {"units": units}, key
                )
                fresh = units[:4]
            elif i % 2 == 1 or known is None:
                unit = f"n{thread}-{i}"
                reply = self.client.call("new", "POST", "/api/v1/decide", {"unit": unit}, key)
                fresh = [unit]
            else:
                reply = self.client.call("known", "POST", "/api/v1/decide", {"unit": known}, key)
                fresh = []
            self._record(reply)
            if reply.status == 200 and fresh:
                with self._lock:
                    self._known.extend(fresh)
            time.sleep(0.01)

    def _force(self) -> None:
        token = self.seed.admin_token
        base = f"/api/admin/v1/products/{self.seed.product}/experiments/{FORCED_EXPERIMENT}"
        i = 0
        while not self._stop.is_set():
            i += 1
            variant = FORCED_VARIANTS[i % len(FORCED_VARIANTS)]
            self._record(
                self.client.call(
                    "force", "PUT", f"{base}/assignments/f-{i}", {"variant": variant}, token
                )
            )
            time.sleep(0.02)

    def _status(self) -> None:
        token = self.seed.admin_token
        while not self._stop.is_set() and self._status_next < STATUS_EXPERIMENTS:
            experiment = f"st-{self._status_next:04d}"
            self._status_next += 1
            path = f"/api/admin/v1/products/{OPS_PRODUCT}/experiments/{experiment}"
            self._record(self.client.call("status", "PATCH", path, {"status": "enabled"}, token))
            time.sleep(0.02)

    def start(self) -> "Load":
        targets = [(self._decide, (t,)) for t in range(DECIDE_THREADS)]
        targets += [(self._force, ())]
        if self.status_writes:
            targets += [(self._status, ())]
        for target, args in targets:
            thread = threading.Thread(target=target, args=args, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT_SECONDS + 5)

    def between(self, start: float, end: float) -> list[Reply]:
        with self._lock:
            return [r for r in self.replies if start <= r.started < end]


# --- Lab behind its front


class Lab:
    """`deploy/serve.py --front nginx` against the cluster, stopped with SIGTERM."""

    def __init__(self, home: Path, database_url: str):
        self.home = home
        self.port = _free_port()
        self.log = home / "serve.log"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "TEST_DATABASE_NAME", "PROMETHEUS_MULTIPROC_DIR")
        }
        self.env.update(
            DATABASE_URL=database_url,
            DJANGO_SETTINGS_MODULE="config.settings",
            SECRET_KEY=secrets.token_urlsafe(40),
            ACCESS_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        # The drill is about the database, not the front's rate limits: on a fast machine its
        # admin writers pass the default 20 a second per token and would get 429s.
        for setting in ("LAB_DECIDE_RATE", "LAB_ADMIN_RATE"):
            self.env.setdefault(setting, "100000")
        for setting in ("LAB_DECIDE_BURST", "LAB_ADMIN_BURST"):
            self.env.setdefault(setting, "100000")
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise ClusterError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def start(self) -> None:
        command = [
            sys.executable,
            str(ROOT / "deploy" / "serve.py"),
            *("--bind", f"127.0.0.1:{self.port}", "--front", "nginx"),
            *("--workers", str(GUNICORN_WORKERS), "--run-dir", str(self.home / "run")),
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = Client(self.base_url, timeout=2)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ClusterError(f"Lab exited ({self.process.returncode}):\n{self.log_tail()}")
            if client.call("probe", "GET", "/healthz").status == 200:
                return
            time.sleep(0.2)
        raise ClusterError(f"Lab did not answer through nginx in 90 s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(45)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_lines(self, request_ids: set[str], limit: int = 30) -> list[str]:
        """Lab's log lines (JSON, shortened) of the requests with these ids."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        found = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("request_id") in request_ids:
                time_of_day = str(entry.get("time", ""))[11:23]
                message = str(entry.get("message", "")).replace("\n", " ")[:200]
                found.append(f"{time_of_day} {entry['request_id']} {message}")
        return found[:limit]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _seed(lab: Lab) -> Seed:
    seed = Seed(**json.loads(lab.manage("seed_drill").strip().splitlines()[-1]))
    # The experiments the status writes enable, one each, in a product of their own so that
    # decide's answers (checked against the stored rows) are not the ones they change.
    script = (
        "from django.contrib.auth import get_user_model; "
        "from lab.services.products import product_create; "
        "from lab.services.experiments import experiment_create; "
        "user = get_user_model().objects.get(username='drill'); "
        f"p = product_create(user=user, key='{OPS_PRODUCT}', name='Drill ops'); "
        f"[experiment_create(product=p, key=f'st-{{i:04d}}', status='disabled', "
        f"variants=[{{'key': 'a'}}, {{'key': 'b'}}]) for i in range({STATUS_EXPERIMENTS})]"
    )
    lab.manage("shell", "-c", script)
    return seed


# --- Checks against the new primary


def _connect(cluster: Cluster, node: str):
    import psycopg

    return psycopg.connect(cluster.node_url(node), connect_timeout=5, autocommit=True)


def _answered(replies: list[Reply]) -> tuple[dict, int]:
    """(unit, experiment) -> variant from every 200 of decide and decide/batch; and how many
    answers contradicted an earlier answer for the same pair."""
    answered: dict[tuple[str, str], str] = {}
    contradictions = 0
    for reply in replies:
        if reply.kind not in ("new", "known", "batch") or reply.status != 200:
            continue
        decisions = reply.answer["decisions"] if reply.kind == "batch" else [reply.answer]
        for decision in decisions:
            for experiment, variant in decision["variants"].items():
                if variant is None:
                    continue
                pair = (decision["unit"], experiment)
                if answered.setdefault(pair, variant) != variant:
                    contradictions += 1
    return answered, contradictions


def check_rows(cluster: Cluster, node: str, replies: list[Reply], seed: Seed) -> dict:
    answered, contradictions = _answered(replies)
    units = sorted({unit for unit, _ in answered})
    forced = {
        r.path.rsplit("/", 1)[1]: r.body["variant"]
        for r in replies
        if r.kind == "force" and r.status in (200, 201)
    }
    enabled = {r.path.rsplit("/", 1)[1] for r in replies if r.kind == "status" and r.status == 200}
    with _connect(cluster, node) as conn:
        rows = conn.execute(
            "SELECT u.key, e.key, v.key, a.source FROM lab_assignment a "
            "JOIN lab_unit u ON u.id = a.unit_id JOIN lab_experiment e ON e.id = a.experiment_id "
            "JOIN lab_variant v ON v.id = a.variant_id JOIN lab_product p ON p.id = u.product_id "
            "WHERE p.key = %s AND u.key = ANY(%s)",
            [seed.product, units + sorted(forced)],
        ).fetchall()
        duplicates = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM lab_assignment GROUP BY experiment_id, unit_id "
            "HAVING count(*) > 1 UNION ALL SELECT 1 FROM lab_unit GROUP BY product_id, key "
            "HAVING count(*) > 1) d"
        ).fetchone()[0]
        statuses = dict(
            conn.execute(
                "SELECT e.key, e.status FROM lab_experiment e JOIN lab_product p "
                "ON p.id = e.product_id WHERE p.key = %s",
                [OPS_PRODUCT],
            ).fetchall()
        )
        audited = {
            key
            for (key,) in conn.execute(
                "SELECT a.object_key FROM lab_auditevent a JOIN lab_product p "
                "ON p.id = a.product_id WHERE p.key = %s AND a.action = 'status_changed' "
                "AND a.to_value = 'enabled'",
                [OPS_PRODUCT],
            )
        }
    stored = {(unit, experiment): variant for unit, experiment, variant, _ in rows}
    lost = sum(1 for pair in answered if pair not in stored)
    wrong = contradictions + sum(
        1 for pair, variant in answered.items() if pair in stored and stored[pair] != variant
    )
    forced_lost = sum(
        1 for unit, variant in forced.items() if stored.get((unit, FORCED_EXPERIMENT)) != variant
    )
    status_lost = sum(1 for key in enabled if statuses.get(key) != "enabled" or key not in audited)
    return {
        "acknowledged_assignments": len(answered),
        "lost": lost,
        "duplicates": duplicates,
        "wrong": wrong,
        "admin_writes_acknowledged": len(forced) + len(enabled),
        "admin_writes_lost": forced_lost + status_lost,
    }


def errors_by_kind(replies: list[Reply]) -> dict[str, int]:
    """'<kind> <status>' for every answer that is not a success."""
    counts = Counter()
    for reply in replies:
        if reply.status in (200, 201):
            continue
        what = str(reply.status) if reply.status is not None else "no answer"
        if reply.status is None and "timed out" in (reply.error or ""):
            what = "client timeout"
        counts[f"{reply.kind} {what}"] += 1
    return dict(sorted(counts.items()))


def _bad_503s(replies: list[Reply]) -> int:
    """503s without a `Retry-After` or a JSON `detail`."""
    return sum(
        1
        for r in replies
        if r.status == 503
        and not (
            r.headers.get("retry-after") and isinstance(r.answer, dict) and r.answer.get("detail")
        )
    )


def _memory_follows_primary(lab: Lab, seed: Seed, replies: list[Reply]) -> bool:
    """Known units whose stored assignment is changed on the new primary answer the new
    variant from every worker within a few seconds: each worker's listener has reconnected
    to the new primary (an answer from a stale memory would keep the old variant)."""
    client = Client(lab.base_url)
    answered, _ = _answered(replies)
    units = sorted({unit for unit, experiment in answered if experiment == FORCED_EXPERIMENT})
    units = [u for u in units if not u.startswith("f-")][-6:]
    base = f"/api/admin/v1/products/{seed.product}/experiments/{FORCED_EXPERIMENT}/assignments"
    changed = {}
    for unit in units:
        # Asked a few times first, so that several workers hold it in memory.
        for _ in range(GUNICORN_WORKERS * 2):
            client.call("probe", "POST", "/api/v1/decide", {"unit": unit}, seed.client_key)
        other = next(v for v in FORCED_VARIANTS if v != answered[(unit, FORCED_EXPERIMENT)])
        reply = client.call("probe", "PUT", f"{base}/{unit}", {"variant": other}, seed.admin_token)
        if reply.status not in (200, 201):
            return False
        changed[unit] = other
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        answers = [
            client.call("probe", "POST", "/api/v1/decide", {"unit": unit}, seed.client_key)
            for unit in changed
            for _ in range(GUNICORN_WORKERS * 2)
        ]
        if all(
            a.status == 200 and a.answer["variants"][FORCED_EXPERIMENT] == changed[a.body["unit"]]
            for a in answers
        ):
            return True
        time.sleep(0.2)
    return False


def _listener_sessions(cluster: Cluster, node: str) -> int:
    """Sessions of the known-unit memory (listener and heartbeat) on `node`."""
    with _connect(cluster, node) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            ["lab decide.known"],
        ).fetchone()[0]


def _first_good_after(load: Load, moment: float, limit: float) -> float | None:
    """Seconds from `moment` to the end of the first 200 of a new-unit decide (one that has
    to write) that started after it; None if none within `limit`."""
    deadline = moment + limit + CLIENT_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        good = [
            r.ended for r in load.between(moment, deadline) if r.kind == "new" and r.status == 200
        ]
        if good:
            return min(good) - moment
        time.sleep(0.1)
    return None


class PrimaryWatch:
    """Asks one node every 50 ms, on a fresh connection, whether it accepts writes; keeps
    (started, ended, accepted) for each probe. Where the node stopped accepting lies between
    the start of the last probe it accepted and the end of the first one after that it did
    not: the drill's own timestamps, on the same clock as the requests'."""

    INTERVAL_SECONDS = 0.05

    def __init__(self, url: str):
        self.url = url
        self.probes: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                    accepted = not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
            except psycopg.Error:
                accepted = False
            self.probes.append((started, time.monotonic(), accepted))
            self._stop.wait(self.INTERVAL_SECONDS)

    def start(self) -> "PrimaryWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def stopped_accepting(self) -> tuple[float, float] | None:
        """(start of the last accepted probe, end of the first refused one after it)."""
        last_ok = None
        for started, ended, accepted in self.probes:
            if accepted:
                last_ok = started
            elif last_ok is not None:
                return last_ok, ended
        return None


def _rejoined(cluster: Cluster, old: str) -> bool:
    members = {m["name"]: m for m in cluster.members()}
    leader = next(
        (m for m in members.values() if m.get("role") in ("leader", "master", "primary")), None
    )
    member = members.get(old)
    return bool(
        leader
        and member
        and leader["name"] != old
        and member.get("role") in ("sync_standby", "replica")
        and member.get("state") in ("running", "streaming")
        and member.get("timeline") == leader.get("timeline")
    )


def run_drill(keep: bool = False, route: str = "multi-host") -> dict:
    """`route`: how Lab finds the primary, libpq's multi-host URL (what Lab ships) or
    "haproxy" (HAProxy checking Patroni's REST API, deploy/ha/haproxy.py)."""
    home = Path(tempfile.mkdtemp(prefix="lab-ha-drill-"))
    home.chmod(0o755)
    cluster = Cluster(home / "cluster", Ports.free())
    lab = None
    proxy = None
    details: dict = {"route": route}
    try:
        started = time.monotonic()
        _say(f"cluster in {cluster.home}")
        cluster.up()
        details["cluster_up_seconds"] = round(time.monotonic() - started, 1)
        database_url = cluster.database_url
        if route == "haproxy":
            proxy = HAProxy(cluster, home, _free_port())
            proxy.start()
            database_url = proxy.database_url
        lab = Lab(home, database_url)
        seed = _seed(lab)
        lab.start()
        _say(f"Lab behind nginx on {lab.base_url}; load for {WARM_SECONDS:.0f} s")
        load = Load(Client(lab.base_url), seed).start()
        time.sleep(WARM_SECONDS)

        # -- failover: the primary's postmaster killed
        old_leader = cluster.leader()
        listeners_before = _listener_sessions(cluster, old_leader)
        pid = cluster.postmaster_pid(old_leader)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        _say(f"SIGKILL to {old_leader}'s postmaster (pid {pid})")
        first_good = _first_good_after(load, killed_at, FIRST_GOOD_ANSWER_LIMIT_SECONDS * 2)
        _say(f"first good new-unit decide after {first_good} s")
        recovered_at = time.monotonic()
        time.sleep(AFTER_RECOVERY_SECONDS)
        load.stop()
        failover_replies = list(load.replies)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _rejoined(cluster, old_leader):
            time.sleep(0.5)
        rejoined = _rejoined(cluster, old_leader)
        details["rejoin_seconds_after_kill"] = round(time.monotonic() - killed_at, 1)
        new_leader = cluster.leader()
        _say(f"new leader {new_leader}; {old_leader} rejoined: {rejoined}")
        rows = check_rows(cluster, new_leader, failover_replies, seed)
        outage = [r for r in failover_replies if r.started >= killed_at - CLIENT_TIMEOUT_SECONDS]
        details["failover"] = {
            "requests": len(failover_replies),
            "errors_by_kind": errors_by_kind(failover_replies),
            "503_without_retry_after_or_detail": _bad_503s(failover_replies),
            "longest_answer_seconds": round(max(r.ended - r.started for r in outage), 2),
            # What took longest, and when it started (seconds from the kill): which part of
            # the outage a slow answer belongs to.
            "slowest_answers": [
                [
                    r.kind,
                    r.status,
                    round(r.ended - r.started, 2),
                    round(r.started - killed_at, 2),
                    r.request_id,
                ]
                for r in sorted(outage, key=lambda r: r.started - r.ended)[:SLOWEST_KEPT]
            ],
            "known_unit_200s_while_no_primary": sum(
                1
                for r in failover_replies
                if r.kind == "known" and r.status == 200 and killed_at <= r.started < recovered_at
            ),
        }
        memory_follows = _memory_follows_primary(lab, seed, failover_replies)
        # Every worker's listener and heartbeat sessions are on the new primary again.
        listeners_after = _listener_sessions(cluster, new_leader)
        details["known_unit_sessions_on_primary_before_and_after"] = [
            listeners_before,
            listeners_after,
        ]
        memory_follows = memory_follows and listeners_before > 0
        memory_follows = memory_follows and listeners_after >= listeners_before
        details["known_unit_memory_follows_new_primary"] = memory_follows

        # -- planned switchover under the same load
        cluster.wait_healthy()
        # The status experiments were each enabled once already: forced writes only.
        load = Load(Client(lab.base_url), seed, status_writes=False).start()
        time.sleep(WARM_SECONDS)
        watch = PrimaryWatch(cluster.node_url(cluster.leader())).start()
        time.sleep(0.5)
        switch_at = time.monotonic()
        old, new = cluster.switchover()
        switched_at = time.monotonic()
        deadline = switched_at + 30
        while time.monotonic() < deadline and cluster.leader() != new:
            time.sleep(0.2)
        time.sleep(AFTER_RECOVERY_SECONDS)
        load.stop()
        watch.stop()
        errors = [r for r in load.replies if r.status not in (200, 201)]
        # In flight at the handover: started before the old primary stopped accepting and
        # not finished by then (bounds from the watch, generous by one probe). Those may
        # fail, their statements cut off; any other request must succeed, Lab waiting
        # (DATABASE_RECONNECT_WAIT_SECONDS) for the new primary instead of answering 503.
        handover = watch.stopped_accepting()
        if handover is None:
            in_flight = []
        else:
            last_accepted, first_refused = handover
            in_flight = [
                r for r in load.replies if r.started < first_refused and r.ended > last_accepted
            ]
        in_flight_ids = {id(r) for r in in_flight}
        outside = [r for r in errors if id(r) not in in_flight_ids]
        first_refused_at = handover[1] if handover else switch_at
        after = [r for r in load.replies if r.started >= first_refused_at]
        details["switchover"] = {
            "from": old,
            "to": new,
            "patronictl_seconds": round(switched_at - switch_at, 2),
            "requests": len(load.replies),
            "errors_by_kind": errors_by_kind(load.replies),
            "old_primary_stopped_accepting_within_seconds": round(handover[1] - handover[0], 3)
            if handover
            else None,
            "requests_in_flight_at_handover": len(in_flight),
            "errors_in_flight": len(errors) - len(outside),
            # Failed requests not in flight at the handover: none may.
            "errors_outside_in_flight": len(outside),
            "errors_outside_in_flight_by_kind": errors_by_kind(outside),
            "errors_outside_it": sum(
                1 for r in errors if r.ended < switch_at or r.started > switched_at
            ),
            "slowest_answer_after_handover_seconds": round(
                max((r.ended - r.started for r in after), default=0.0), 2
            ),
            "error_window_seconds": round(
                max((r.ended for r in errors), default=switch_at)
                - min((r.started for r in errors), default=switch_at),
                2,
            ),
        }
        switch_rows = check_rows(cluster, cluster.leader(), load.replies, seed)
        details["switchover"].update(
            {k: switch_rows[k] for k in ("acknowledged_assignments", "lost", "duplicates", "wrong")}
        )
        summary = {
            **rows,
            "seconds_to_first_good_answer": round(first_good, 2)
            if first_good is not None
            else None,
            "old_primary_rejoined": rejoined,
        }
        passed = (
            rows["lost"] == 0
            and rows["duplicates"] == 0
            and rows["wrong"] == 0
            and rows["admin_writes_lost"] == 0
            and rows["acknowledged_assignments"] > 0
            and rows["admin_writes_acknowledged"] > 0
            and first_good is not None
            and first_good <= FIRST_GOOD_ANSWER_LIMIT_SECONDS
            and rejoined
            and memory_follows
            and details["failover"]["503_without_retry_after_or_detail"] == 0
            and not any(k.endswith("client timeout") for k in details["failover"]["errors_by_kind"])
            and all(k.endswith(" 503") for k in details["failover"]["errors_by_kind"])
            and switch_rows["lost"] == switch_rows["wrong"] == switch_rows["duplicates"] == 0
            and handover is not None
            and details["switchover"]["errors_outside_in_flight"] == 0
            and details["switchover"]["slowest_answer_after_handover_seconds"]
            < CLIENT_TIMEOUT_SECONDS
        )
        lab.stop()
        # What Lab logged (warnings and errors) for the slowest failover answers.
        slow_ids = {row[-1] for row in details["failover"]["slowest_answers"]}
        details["failover"]["slowest_answers_log"] = lab.log_lines(slow_ids)
        details["total_seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(details), flush=True)
        return {"summary": summary, "details": details, "passed": passed}
    except BaseException:
        if lab is not None:
            _say(f"Lab's log:\n{lab.log_tail()}")
        _say(cluster.logs_tail())
        raise
    finally:
        if lab is not None:
            lab.stop()
        if proxy is not None:
            proxy.stop()
        if keep:
            _say(f"kept: {home} (python -m deploy.ha down with LAB_HA_DIR={cluster.home})")
        else:
            cluster.down()
            shutil.rmtree(home, ignore_errors=True)
