"""Drills for the memory of known units (decide.memory) on a real gunicorn with several
workers on PostgreSQL, under load from parallel clients:

- a unit forced back and forth while every worker decides it: a decision that starts after
  the admin API answered gets the earlier variant only within the delivery time of
  PostgreSQL's notification (measured and bounded);
- a client key revoked while it is deciding: every request that starts later than the
  staleness bound after the revocation answered is refused (401), and how many were still
  answered within it is printed;
- every worker's listener connection terminated: decisions keep answering, and a change
  made while nobody listens is seen at once.

Each drill prints what it measured (decisions checked, answers from memory).
"""

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

THREADS = 6
STALENESS_BOUND_SECONDS = 0.2  # decide.memory.STALENESS_BOUND_SECONDS


def _memory_hits(server: Server) -> float:
    return server.metrics().get(("lab_known_units_total", (("result", "hit"),)), 0.0)


class Load:
    """THREADS clients deciding one unit in a loop, each request on a new connection (so on
    any worker); every answer recorded with the time its request started."""

    def __init__(self, server: Server, key: Callable[[], str], unit: str):
        self.server, self.key, self.unit = server, key, unit
        self.answers: list[tuple[float, int, dict | None]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(THREADS)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            response = self.server.post("/api/v1/decide", {"unit": self.unit}, self.key())
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
