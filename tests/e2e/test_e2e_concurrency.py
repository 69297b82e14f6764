"""Concurrent first decisions on several gunicorn workers: exactly one assignment per
(experiment, unit), and every response agrees with it (docs/decide.md, "How the answer
stays fast")."""

import threading
from collections import defaultdict

import pytest

from tests.conftest import IN_CI

pytestmark = pytest.mark.e2e

RACERS = 8
UNITS = 16


def test_e2e__parallel_first_decisions__one_row_every_answer_agrees(server, seeded):
    if server.vendor != "postgresql":
        if IN_CI:
            pytest.fail("CI=true but the e2e server is not on PostgreSQL")
        pytest.skip("the race is pinned on PostgreSQL (set DATABASE_URL)")
    key = seeded["client_key"]
    answers: dict[str, list[dict]] = defaultdict(list)
    errors: list[str] = []

    def race(unit: str, barrier: threading.Barrier, racer: int) -> None:
        barrier.wait()
        # Three ways in, all racing for the same rows.
        if racer % 3 == 0:
            response = server.post("/api/v1/decide/batch", {"units": [unit, f"{unit}-b"]}, key)
            body = response.json()["decisions"][0]["variants"] if response.ok else None
        elif racer % 3 == 1:
            response = server.post(
                "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": unit}}, key
            )
            # Where decide answers null, OFREP's answer has no value (docs/decide.md).
            body = (
                {flag["key"]: flag.get("value") for flag in response.json()["flags"]}
                if response.ok
                else None
            )
        else:
            response = server.post("/api/v1/decide", {"unit": unit}, key)
            body = response.json()["variants"] if response.ok else None
        if body is None:
            errors.append(f"{response.status_code} {response.text[:200]}")
        else:
            answers[unit].append(body)

    # When RACERS requests decide each new unit at the same instant
    for i in range(UNITS):
        unit = f"RACE-{i}"
        barrier = threading.Barrier(RACERS)
        threads = [
            threading.Thread(target=race, args=(unit, barrier, racer)) for racer in range(RACERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    # Then no request failed and all racers for a unit got the same answer
    assert not errors, errors[:5]
    for unit, bodies in answers.items():
        assert len(bodies) == RACERS
        assert all(body == bodies[0] for body in bodies), (unit, bodies)

    # And exactly one row per (experiment, unit) is stored: the one every racer returned
    rows = server.orm("assignments", product=seeded["product"])["assignments"]
    stored = defaultdict(dict)
    for experiment, unit, variant, source in rows:
        assert experiment not in stored[unit], f"duplicate row for {experiment}/{unit}"
        stored[unit][experiment] = variant
        assert source == "hash"
    for unit, bodies in answers.items():
        expected = {k: v for k, v in bodies[0].items() if v is not None}
        assert stored[unit] == expected
