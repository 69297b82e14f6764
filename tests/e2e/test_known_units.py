"""Drills for the memory of known units (decide.memory) on a real gunicorn with several
workers on PostgreSQL, under load from parallel clients:

- a unit forced back and forth while every worker decides it: a decision that starts after
  the admin API answered gets the earlier variant only within the delivery time of
  PostgreSQL's notification (measured and bounded);
- a client key revoked while it is deciding: every request that starts later than the
  staleness bound after the revocation answered is refused (401), and how many were still
  answered within it is printed;
- every worker's listener connection terminated: decisions keep answering, and a change
  made while nobody listens is seen at once;
- `pg_restore --clean` of an earlier dump over the live database: no answer from the
  replaced data after the staleness bound; the database dropped and created again: nothing
  answered from the old one;
- every listener's backends stopped (SIGSTOP) while a change commits: no earlier answer past
  the bound;
- another product's admin writes at about 10/s: this product's hit ratio as when quiet;
- units storing the most attributes a client may send: a worker's memory grows a little.

Each drill prints what it measured (decisions checked, answers from memory). Figures:
load_tests/RESULTS.md, "Memory of known units: staleness drills".
"""

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
import requests

from tests.conftest import requires_postgres
from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

THREADS = 6
STALENESS_BOUND_SECONDS = 0.2  # decide.memory.STALENESS_BOUND_SECONDS


def _memory_hits(server: Server) -> float:
    return server.metrics().get(("lab_known_units_total", (("result", "hit"),)), 0.0)


class Load:
    """THREADS clients deciding one unit (or each of `units` in turn) in a loop, each request
    on a new connection (so on any worker); every answer recorded with the time its request
    started."""

    def __init__(self, server: Server, key: Callable[[], str], unit: str | list[str]):
        self.server, self.key = server, key
        self.units = [unit] if isinstance(unit, str) else unit
        self.answers: list[tuple[float, int, dict | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(THREADS)]

    def _run(self, offset: int) -> None:
        turn = offset
        while not self._stop.is_set():
            unit = self.units[turn % len(self.units)]
            turn += 1
            started = time.monotonic()
            try:
                response = self.server.post("/api/v1/decide", {"unit": unit}, self.key())
            except requests.RequestException:
                self.answers.append((started, 0, None))
                continue
            body = response.json()["variants"] if response.status_code == 200 else None
            self.answers.append((started, response.status_code, body))

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def between(self, start: float, end: float) -> list[tuple[int, dict | None]]:
        return [(status, body) for at, status, body in self.answers if start < at < end]

    def between_with_times(self, start: float, end: float) -> list[tuple[float, int, dict]]:
        return [answer for answer in self.answers if start < answer[0] < end]


@pytest.fixture
def postgres_server(server) -> Server:
    if server.vendor != "postgresql":
        pytest.skip("the memory of known units is PostgreSQL only (LISTEN/NOTIFY)")
    return server


def test_forced_back_and_forth_under_load__no_worker_answers_the_earlier_variant(
    postgres_server, seeded
):
    server, token, key = postgres_server, seeded["api_token"], seeded["client_key"]
    path = f"/products/{seeded['product']}/experiments/anneal/assignments/drill-force"
    for _ in range(30):  # every worker decides it, stores it, then remembers it
        initial = server.decide(key, "drill-force")["anneal"]
    hits = _memory_hits(server)

    changes: list[tuple[float, float, str]] = []  # (request sent, answered, variant)
    with Load(server, lambda: key, "drill-force") as load:
        time.sleep(0.3)
        # Around the cycle from the stored variant: any three consecutive ones are distinct
        others = ["a", "b", "c"]
        start = others.index(initial)
        cycle = [others[(start + step) % 3] for step in (1, 2, 3)]
        for variant in cycle * 2:
            sent = time.monotonic()
            response = server.admin("PUT", path, token, {"variant": variant})
            assert response.status_code in (200, 201), response.text
            changes.append((sent, time.monotonic(), variant))
            time.sleep(0.25)

    checked, stale, worst = 0, 0, 0.0
    earlier = [initial, *(variant for _, _, variant in changes[:-1])]
    for (_, answered, variant), following, previous in zip(
        changes, [*changes[1:], (float("inf"), 0, "")], earlier, strict=True
    ):
        # Decisions that started after this change was answered and before the next one was
        # sent (a decision in flight when the next one commits may get the next variant).
        window = load.between_with_times(answered, following[0])
        assert window, "no decision between two changes"
        assert all(status == 200 for _, status, _ in window)
        assert {body["anneal"] for _, _, body in window} <= {previous, variant, following[2]}
        late = [at - answered for at, _, body in window if body["anneal"] == previous]
        checked += len(window)
        stale += len(late)
        worst = max([worst, *late])
    served_from_memory = _memory_hits(server) - hits
    print(
        f"{checked} decisions after 6 changes, {served_from_memory:.0f} from memory; "
        f"{stale} answered the earlier variant, the latest starting {worst * 1000:.1f} ms "
        f"after the admin API answered"
    )
    assert served_from_memory > 0
    # The staleness the memory can add: the delivery of PostgreSQL's notification, and never
    # more than the heartbeat bound (decide/memory/listener.py) after the commit, which came
    # before the admin API's answer.
    assert worst < STALENESS_BOUND_SECONDS, f"stale {worst * 1000:.0f} ms after the change"


def test_key_revoked_under_load__every_later_request_refused(postgres_server, seeded):
    server, token, slug = postgres_server, seeded["api_token"], seeded["product"]
    response = server.admin("POST", f"/products/{slug}/client-keys", token, {"name": "drill"})
    assert response.status_code == 201, response.text
    issued = response.json()
    for _ in range(30):
        server.decide(issued["secret"], "drill-revoke")

    with Load(server, lambda: issued["secret"], "drill-revoke") as load:
        time.sleep(0.5)
        sent = time.monotonic()
        response = server.admin("DELETE", f"/products/{slug}/client-keys/{issued['id']}", token)
        assert response.status_code == 204, response.text
        revoked = time.monotonic()
        time.sleep(0.7)

    before = load.between(0, sent)
    # Refused once the revocation is applied: at most the staleness bound after its commit.
    within = load.between(revoked, revoked + STALENESS_BOUND_SECONDS)
    after = load.between(revoked + STALENESS_BOUND_SECONDS, float("inf"))
    # (a request sent before the revocation may be answered after its commit: 401 then)
    assert before and 200 in {status for status, _ in before}
    assert {status for status, _ in before} <= {200, 401}
    assert after and {status for status, _ in after} == {401}, {s for s, _ in after}
    print(
        f"{len(before)} answered before the revocation; within {STALENESS_BOUND_SECONDS} s "
        f"after it, {sum(status == 200 for status, _ in within)} of {len(within)} still "
        f"answered; {len(after)} refused after"
    )


def test_listeners_terminated__decisions_go_on_and_a_change_meanwhile_is_seen(
    postgres_server, seeded
):
    server, token, key = postgres_server, seeded["api_token"], seeded["client_key"]
    path = f"/products/{seeded['product']}/experiments/anneal/assignments/drill-listen"
    for _ in range(30):
        current = server.decide(key, "drill-listen")["anneal"]
    forced = next(v for v in ("a", "b", "c") if v != current)
    database_url = server.env["DATABASE_URL"]

    with Load(server, lambda: key, "drill-listen") as load:
        time.sleep(0.3)
        with psycopg.connect(database_url, autocommit=True) as conn:
            terminated = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'lab decide.known' AND datname = current_database()"
            ).fetchone()[0]
        response = server.admin("PUT", path, token, {"variant": forced})
        assert response.status_code in (200, 201), response.text
        answered = time.monotonic()
        time.sleep(2.5)  # the listeners reconnect after a second

    assert terminated >= 1
    window = load.between(answered, float("inf"))
    assert window
    assert {(status, body["anneal"]) for status, body in window} == {(200, forced)}
    print(f"{terminated} listeners terminated; {len(window)} decisions after the change")


def test_restore_over_the_live_database__no_old_answer_after_the_bound(tmp_path):
    """`pg_restore --clean` of an earlier dump into the database a loaded gunicorn decides
    on: no decision that starts more than the staleness bound after the restore finished
    answers from the data it replaced (its DROP, CREATE and COPY notify nothing: the
    listener's identity check must see them). Half the units are decided throughout; the
    other half only after the restore, so that no decision made during it can have
    refreshed what memory held of them."""
    from tests.e2e.test_e2e_cache_identity import _database_url, _seed, deployment

    requires_postgres()
    name = f"lab_e2e_restore_{os.getpid()}"
    with deployment(name, tmp_path) as server:
        seeded = _seed(server, [["a", 1], ["b", 1]])
        key, token = seeded["client_key"], seeded["api_token"]
        loaded = [f"L-{i}" for i in range(4)]
        probed = [f"P-{i}" for i in range(8)]

        def force(variant: str) -> None:
            for unit in loaded + probed:
                path = f"/products/widget/experiments/etch/assignments/{unit}"
                response = server.admin("PUT", path, token, {"variant": variant})
                assert response.status_code in (200, 201), response.text

        # Given a dump of a state where every unit is forced to "a"
        force("a")
        dump = tmp_path / "before.dump"
        subprocess.run(
            ["pg_dump", "--format=custom", f"--file={dump}", _database_url(name)],
            check=True,
            capture_output=True,
        )
        # and the live database moved on to "b", which every worker remembers
        force("b")
        for _ in range(12):
            for unit in loaded + probed:
                assert server.decide(key, unit) == {"etch": "b"}
        assert _memory_hits(server) > 0

        # When the dump is restored over the live database while units are decided
        with Load(server, lambda: key, loaded) as load:
            time.sleep(0.5)
            restore_started = time.monotonic()
            subprocess.run(
                [
                    "pg_restore",
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    f"--dbname={_database_url(name)}",
                    str(dump),
                ],
                check=True,
                capture_output=True,
            )
            restored = time.monotonic()
            hits_at_restore = _memory_hits(server)
            time.sleep(STALENESS_BOUND_SECONDS)
            probes = []
            for _ in range(6):
                for unit in probed:
                    started = time.monotonic()
                    probes.append((started, server.decide(key, unit)["etch"]))
            time.sleep(1.0)
            hits_after = _memory_hits(server) - hits_at_restore

    # Then every decision started more than the bound after the restore answers the
    # restored "a", the probed units' too; and memory answers again (emptied, not off)
    during = load.between(restore_started, restored + STALENESS_BOUND_SECONDS)
    after = load.between(restored + STALENESS_BOUND_SECONDS, float("inf"))
    assert after and {status for status, _ in after} == {200}, {s for s, _ in after}
    old_loaded = [body for _, body in after if body["etch"] != "a"]
    old_probed = [variant for at, variant in probes if variant != "a"]
    print(
        f"restore took {(restored - restore_started) * 1000:.0f} ms; "
        f"{len(during)} decisions during it and the bound after "
        f"({sum(status != 200 for status, _ in during)} not answered 200); after it, "
        f"{len(after)} loaded and {len(probes)} probed decisions ({hits_after:.0f} from "
        f"memory): {len(old_loaded)} and {len(old_probed)} with the pre-restore variant"
    )
    assert old_loaded == [] and old_probed == []
    assert hits_after > 0


def _listener_backends(database_url: str) -> list[int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE application_name = 'lab decide.known' AND datname = current_database()"
        ).fetchall()
    return [pid for (pid,) in rows]


def test_listeners_stalled__no_old_answer_past_the_bound(postgres_server, seeded):
    """Every worker's listening and heartbeat backends stopped (SIGSTOP) for 400 ms, a change
    committed meanwhile: its notification cannot be delivered, no heartbeat comes back, and
    still no decision that starts more than the staleness bound after the change was
    committed answers the earlier variant."""
    server, token, key = postgres_server, seeded["api_token"], seeded["client_key"]
    path = f"/products/{seeded['product']}/experiments/anneal/assignments/drill-stall"
    for _ in range(30):
        current = server.decide(key, "drill-stall")["anneal"]
    forced = next(v for v in ("a", "b", "c") if v != current)
    backends = _listener_backends(server.env["DATABASE_URL"])
    assert len(backends) >= 2
    hits = _memory_hits(server)

    with Load(server, lambda: key, "drill-stall") as load:
        time.sleep(0.3)
        try:
            for pid in backends:
                os.kill(pid, signal.SIGSTOP)
        except PermissionError:
            pytest.skip("cannot signal PostgreSQL's backends (not the same user or root)")
        try:
            sent = time.monotonic()
            response = server.admin("PUT", path, token, {"variant": forced})
            answered = time.monotonic()
            assert response.status_code in (200, 201), response.text
            time.sleep(max(0.0, sent + 0.4 - time.monotonic()))
        finally:
            for pid in backends:
                os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        time.sleep(0.6)

    # The commit happened between `sent` and `answered`: a decision that started more than
    # the bound after `answered` is after it by more than the bound.
    window = load.between_with_times(answered, float("inf"))
    old = [at - answered for at, status, body in window if body and body["anneal"] == current]
    past_bound = [late for late in old if late > STALENESS_BOUND_SECONDS]
    print(
        f"{len(backends)} backends stopped {(resumed - sent) * 1000:.0f} ms; "
        f"{len(window)} decisions after the change ({_memory_hits(server) - hits:.0f} from "
        f"memory in the drill); {len(old)} answered the earlier variant, the latest starting "
        f"{max(old, default=0) * 1000:.0f} ms after the admin API answered"
    )
    assert {status for _, status, _ in window} == {200}
    assert past_bound == []


def _memory_counts(server: Server) -> tuple[float, float]:
    samples = server.metrics()
    return tuple(
        samples.get(("lab_known_units_total", (("result", result),)), 0.0)
        for result in ("hit", "miss")
    )


def _hit_ratio(server: Server, seconds: float) -> tuple[float, float]:
    """The share of known-unit decisions answered from memory over `seconds`, and how many."""
    hits, misses = _memory_counts(server)
    time.sleep(seconds)
    hits_after, misses_after = _memory_counts(server)
    total = (hits_after - hits) + (misses_after - misses)
    return (hits_after - hits) / total if total else 0.0, total


def _learnt(server: Server) -> float:
    return server.metrics().get(("lab_known_units_learnt_total", (("kind", "new"),)), 0.0)


def test_first_decisions__learnt_by_every_worker__repeats_answered_from_memory(
    postgres_server, seeded
):
    """A unit decided once by one worker: its repeats, on whichever worker takes them, are
    answered from memory (each first decision's notification is learnt by every worker),
    not read again by each worker in turn."""
    server, key = postgres_server, seeded["client_key"]
    # Given every worker has served the product (holds its key): parallel clients reach all
    warm = f"learn-warm-{time.monotonic_ns()}"
    server.decide(key, warm)
    with Load(server, lambda: key, warm):
        time.sleep(1.0)
    learnt = _learnt(server)
    # When new units are each decided once (stored by whichever worker takes them)
    units = [f"learn-{time.monotonic_ns()}-{n}" for n in range(30)]
    first = {unit: server.decide(key, unit) for unit in units}
    # Then every worker learns each of them
    deadline = time.monotonic() + 5
    while _learnt(server) < learnt + len(units) * server.workers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _learnt(server) == learnt + len(units) * server.workers
    # And their repeats, spread over the workers, are answered from memory, as stored
    hits, misses = _memory_counts(server)
    with Load(server, lambda: key, units) as load:
        time.sleep(2.0)
    hits_after, misses_after = _memory_counts(server)
    repeats = [(status, body) for _, status, body in load.answers]
    answered_from_memory = hits_after - hits
    print(
        f"{len(repeats)} repeats of {len(units)} units on {server.workers} workers: "
        f"{answered_from_memory:.0f} from memory, {misses_after - misses:.0f} from the database"
    )
    assert len(repeats) > 3 * len(units)
    assert {status for status, _ in repeats} == {200}
    stored = [body for _, body in repeats]
    assert all(body in first.values() for body in stored)
    assert {unit: server.decide(key, unit) for unit in units} == first
    # Memory is not served while a heartbeat is late (a starved listener on a busy machine):
    # those few are read from the database (7 of 243 at a load average of 17). Without
    # learning, each worker would read each unit once: about a quarter of these repeats.
    assert misses_after - misses <= 0.1 * len(repeats), (hits_after - hits, misses_after)
    assert answered_from_memory >= 0.9 * len(repeats)


# Writers sharing 10 writes a second: on a busy machine one admin write can take longer than a
# writer's period, and four reached only 7-9 a second.
WRITERS = 8


def test_other_products_admin_writes__this_products_memory_kept(postgres_server, seeded):
    """Another tenant's operators writing at 10/s leave this product's hit ratio within
    10 points of a quiet period (per-product forgetting: every write notifies its product
    only)."""
    server, key = postgres_server, seeded["client_key"]
    suffix = f"{os.getpid()}-{time.monotonic_ns()}"
    other = server.orm(
        "seed",
        username=f"other-{suffix}",
        product=f"o-{suffix}"[:64],
        experiments=[{"key": "etch", "variants": [["a", 1], ["b", 1]]}],
    )
    units = [f"tenant-{i}" for i in range(10)]
    for _ in range(20):
        for unit in units:
            server.decide(key, unit)

    writes: list[float] = []
    stop = threading.Event()

    def admin_writes(writer: int) -> None:
        # WRITERS of these, each at most one write per WRITERS / 10 s: about 10 a second
        path = f"/products/{other['product']}/experiments/etch"
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            n += 1
            body = {"name": f"w{writer}-{n}"}
            response = server.admin("PATCH", path, other["api_token"], body)
            assert response.status_code == 200, response.text
            writes.append(started)
            time.sleep(max(0.0, started + WRITERS / 10 - time.monotonic()))

    with Load(server, lambda: key, units):
        time.sleep(0.5)
        quiet, quiet_total = _hit_ratio(server, 3.0)
        writers = [threading.Thread(target=admin_writes, args=(n,)) for n in range(WRITERS)]
        for writer in writers:
            writer.start()
        try:
            time.sleep(0.5)
            began = time.monotonic()
            busy, busy_total = _hit_ratio(server, 3.0)
            rate = sum(at > began for at in writes) / (time.monotonic() - began)
        finally:
            stop.set()
            for writer in writers:
                writer.join()

    print(
        f"hit ratio quiet {quiet:.3f} ({quiet_total:.0f} decisions), with the other "
        f"product's writes at {rate:.1f}/s {busy:.3f} ({busy_total:.0f} decisions)"
    )
    assert quiet_total > 50 and busy_total > 50
    assert rate > 9, rate
    assert busy >= quiet - 0.10, (quiet, busy)


def _worker_rss(server: Server) -> dict[int, int]:
    """Resident set size of each gunicorn worker of `server`, in bytes."""
    import psutil

    port = server.base_url.rsplit(":", 1)[1]
    (master,) = [
        process
        for process in psutil.Process().children()
        if f"127.0.0.1:{port}" in " ".join(process.cmdline())
    ]
    return {worker.pid: worker.memory_info().rss for worker in master.children()}


def test_units_with_maximal_attributes__worker_memory_bounded(postgres_server, seeded):
    """20 units storing the most attributes a client may send (50 attributes of 100 strings
    of 256 characters, 1.3 MB of JSON each), each decided by every worker until remembered:
    a worker's resident memory grows by a few MB (their reads), not by what they store."""
    server, key = postgres_server, seeded["client_key"]
    suffix = time.monotonic_ns()
    plain = [f"plain-{suffix}-{i}" for i in range(20)]
    fat = [f"fat-{suffix}-{i}" for i in range(20)]
    for _ in range(15):
        for unit in plain:
            server.decide(key, unit)
    before = _worker_rss(server)
    hits = _memory_hits(server)
    for n, unit in enumerate(fat):
        attributes = {
            f"a{a}": [f"{n:02d}{a:02d}{i:03d}" + "x" * 249 for i in range(100)] for a in range(50)
        }
        response = server.post("/api/v1/decide", {"unit": unit, "attributes": attributes}, key)
        assert response.status_code == 200, response.text[:500]
    for _ in range(15):
        for unit in fat:
            server.decide(key, unit)
    after = _worker_rss(server)
    growth = {pid: (after[pid] - before[pid]) / 2**20 for pid in before if pid in after}
    print(
        "worker RSS growth (MiB): "
        + ", ".join(f"{mib:.1f}" for mib in sorted(growth.values()))
        + f"; {_memory_hits(server) - hits:.0f} of the fat units' decisions from memory"
    )
    assert _memory_hits(server) > hits
    assert max(growth.values()) < 40, growth


def test_database_dropped_and_recreated__nothing_remembered_from_the_old_one(tmp_path):
    """The database dropped (WITH FORCE: every session ended, the listeners' too) and created
    again under the same name, migrated and seeded anew, under the same running gunicorn:
    no decision with the old key, remembered by every worker, is answered once the new
    database is migrated (401); memory answers the new data, without a restart."""
    from urllib.parse import urlsplit, urlunsplit

    from tests.e2e.conftest import migrate
    from tests.e2e.test_e2e_cache_identity import _seed, deployment

    requires_postgres()
    name = f"lab_e2e_recreated_{os.getpid()}"
    with deployment(name, tmp_path) as server:
        old_key = _seed(server, [["a", 1], ["b", 1]])["client_key"]
        units = [f"D-{i}" for i in range(6)]
        for _ in range(12):
            for unit in units:
                server.decide(old_key, unit)
        assert _memory_hits(server) > 0
        parts = urlsplit(server.env["DATABASE_URL"])
        admin_url = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        migrate(server.env)
        migrated = time.monotonic()
        new_key = _seed(server, [["x", 1], ["y", 1]])["client_key"]
        time.sleep(max(0.0, migrated + STALENESS_BOUND_SECONDS - time.monotonic()))
        old = [
            server.post("/api/v1/decide", {"unit": unit}, old_key).status_code
            for _ in range(4)
            for unit in units
        ]
        hits = _memory_hits(server)
        for _ in range(12):
            for unit in units:
                assert server.decide(new_key, unit)["etch"] in ("x", "y")
        new_hits = _memory_hits(server) - hits
    print(f"old key after the database was recreated: {sorted(set(old))}; new: {new_hits:.0f} hits")
    # (a worker's first query on its ended connection may answer 503: never a remembered 200)
    assert 200 not in old and 401 in old and set(old) <= {401, 503}
    assert new_hits > 0
