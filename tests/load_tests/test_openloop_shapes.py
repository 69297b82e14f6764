"""The open-loop generator's traffic shapes (load_tests/openloop.py), which follow the same
schedules as the wrk scripts (load_tests/README.md, "Scenarios")."""

import json
from collections import Counter, defaultdict

from load_tests import openloop


def _units(scenario, count: int) -> list[str]:
    return [json.loads(scenario(i)[1])["unit"] for i in range(count)]


def test_line__each_unit_decided_three_to_five_times_within_the_window_then_never(monkeypatch):
    # Given the line shape over a 3-second window, 50 requests a second for 30 seconds
    monkeypatch.setenv("LAB_LINE_WINDOW", "3")
    monkeypatch.setenv("LAB_RUN_NONCE", "t")
    clock = {"now": 1_000_000.0}
    monkeypatch.setattr(openloop.time, "time", lambda: clock["now"])
    line = openloop.scenarios()["line"]
    seen: dict[str, list[float]] = defaultdict(list)
    # When the requests are built, second by second
    for i in range(1500):
        clock["now"] = 1_000_000.0 + i / 50
        seen[json.loads(line(i)[1])["unit"]].append(clock["now"])
    # Then every unit that arrived early enough was decided 3 to 5 times in all
    # (units of the last seconds are cut off)
    settled = {unit: times for unit, times in seen.items() if times[0] < 1_000_000.0 + 25}
    assert len(settled) > 100
    counts = Counter(len(times) for times in settled.values())
    assert set(counts) <= {3, 4, 5}, counts
    assert len(counts) == 3  # all three lengths occur
    # And its repeats were due within the window of its arrival: most come then, the rest a
    # little later, when more repeats fall due in one second than requests are sent
    spans = sorted(times[-1] - times[0] for times in settled.values())
    assert spans[len(spans) // 2] < 3 + 1
    assert spans[-1] < 3 + 4
    # And the units are new to the run: never a seeded unit
    assert all(unit.startswith("line-new-t-") for unit in seen)


def test_cold__draws_from_the_offset_range_only(monkeypatch):
    # Given the cold shape over 100 units after the 50 warm ones
    monkeypatch.setenv("LAB_KNOWN_OFFSET", "50")
    monkeypatch.setenv("LAB_KNOWN_UNITS", "100")
    # When many requests are built
    numbers = {
        int(unit.removeprefix("bench-")) for unit in _units(openloop.scenarios()["cold"], 3000)
    }
    # Then every unit is one of the cold ones, never a warm one
    assert min(numbers) >= 50
    assert max(numbers) < 150
    assert len(numbers) > 90
