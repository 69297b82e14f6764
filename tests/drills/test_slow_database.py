"""Drill: the database is slow — another session holds a lock decide needs.

With DATABASE_STATEMENT_TIMEOUT_MS=1000, a decision blocked on the lock is cancelled by
PostgreSQL after a second and answers 503 with a `detail` and `Retry-After`: bounded, never a
hung worker, never a 500. Once the lock is released decide answers 200 again (on the same
workers) and stores what it answered.

Two locks: ACCESS EXCLUSIVE on the assignment table blocks the read of every decision;
SHARE lets the read through and blocks only the write of a first decision (its units and
assignments are stored in one statement, so nothing is half-written).
"""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.drills.harness import call, decide_request, stored_assignments

pytestmark = pytest.mark.e2e

STATEMENT_TIMEOUT_SECONDS = 1.0
# One timeout plus the rest of the request (connecting, Python, rendering, a busy machine):
# the hot path answers the 503 of its own cancelled read, and hands a first decision's read
# to Django, whose write is the one statement that waits (decide/hot_path.py).
ANSWER_WITHIN_SECONDS = STATEMENT_TIMEOUT_SECONDS + 1.5


@pytest.mark.parametrize("lock_mode", ["ACCESS EXCLUSIVE", "SHARE"])
def test_assignment_table_locked__decide_503_within_timeout_then_recovers(
    start_lab, postgres, seed, lock_mode
):
    from lab.models import Assignment

    lab = start_lab(DATABASE_STATEMENT_TIMEOUT_MS=str(int(STATEMENT_TIMEOUT_SECONDS * 1000)))

    def decide(unit: str):
        method, path, body = decide_request(unit)
        return call(lab.base_url, method, path, body, token=seed.client_key, timeout=15)

    # Given both workers have decided before (connections and configs warm)
    for n in range(4):
        assert decide(f"slow-warm-{n}").status == 200
    new_units = [f"slow-new-{n}" for n in range(2)]

    with postgres.connect() as locker:
        # When another session holds a lock on the assignment table
        locker.execute(f"LOCK TABLE {Assignment._meta.db_table} IN {lock_mode} MODE")
        # And two first decisions arrive at once (one per worker)
        with ThreadPoolExecutor(len(new_units)) as pool:
            blocked = list(pool.map(decide, new_units))
        # Then each answers 503 with a detail and Retry-After, within the bound
        for reply in blocked:
            assert reply.status == 503, reply
            assert reply.detail and reply.headers.get("retry-after"), reply
            assert reply.elapsed < ANSWER_WITHIN_SECONDS, reply
        # And the workers are free again, not stuck behind the lock
        started = time.monotonic()
        assert call(lab.base_url, "GET", "/healthz", timeout=5).status == 200
        assert time.monotonic() - started < 1.0
        locker.rollback()

    # When the lock is released, Then the same decisions succeed and are stored as answered
    answered = {}
    for unit in new_units:
        reply = decide(unit)
        assert reply.status == 200, reply
        answered[unit] = reply.body["variants"]
    assert stored_assignments(postgres, new_units) == answered
