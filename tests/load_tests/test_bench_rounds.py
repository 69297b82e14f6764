"""The main phase's rounds (load_tests/bench/phases.py): the order alternates, and the warm
shape finds the workers' memory full in every round, not only the first (the shapes before
it in a round push warm units out of the bounded memory)."""

import argparse

from load_tests.bench import phases
from load_tests.bench.scenarios import SCENARIOS


class FakeServer:
    label = "default"


def _args(**overrides) -> argparse.Namespace:
    values = {"rounds": 3, "warmup": 1.0, "duration": 2.0, "known_warmup": 30.0}
    values.update(overrides)
    return argparse.Namespace(**values)


def _main(monkeypatch, args, names):
    calls: list[tuple[str, str, float]] = []
    lookups = {"n": 0}

    def run_wrk(server, scenario, seconds, _args):
        calls.append(("run", scenario.name, seconds))
        # every known-unit decision of a warm-up slice answered from memory
        lookups["n"] += 1
        return {"rps": 1.0, "p50_ms": 1.0, "p99_ms": 1.0, "errors": {}}

    def memory_lookups(server):
        return lookups["n"]

    monkeypatch.setattr(phases, "probe", lambda server, scenario: None)
    monkeypatch.setattr(phases, "run_wrk", run_wrk)
    monkeypatch.setattr(phases, "memory_lookups", memory_lookups)
    monkeypatch.setattr(phases, "memory_hit_ratio", lambda before, after: 1.0)
    scenarios = [SCENARIOS[name] for name in names]
    result = phases.phase_main([FakeServer()], scenarios, args)
    return calls, result


def test_rounds__warm_memory_filled_again_before_warm_in_every_round(monkeypatch):
    # Given the warm shape after cold in the rounds that run the order backwards
    calls, result = _main(monkeypatch, _args(), ["floor", "warm", "cold"])
    # Then each warm run is preceded by a warm-up slice of the known-unit load (5 s), then
    # the usual warm-up, then the measured run: before the first round and in every later one
    runs = [(name, seconds) for _, name, seconds in calls]
    warm_measured = [i for i, call in enumerate(runs) if call == ("warm", 2.0)]
    assert len(warm_measured) == 3
    for index in warm_measured:
        assert runs[index - 1] == ("warm", 1.0)
        assert runs[index - 2] == ("warm", 5.0)
    # And the rounds alternate their order
    measured = [name for name, seconds in runs if seconds == 2.0]
    assert measured == ["floor", "warm", "cold", "cold", "warm", "floor", "floor", "warm", "cold"]
    assert [len(result["runs"]["default"][name]) for name in ("floor", "warm", "cold")] == [3] * 3


def test_rounds__known_warmup_off__no_refill(monkeypatch):
    calls, _ = _main(monkeypatch, _args(known_warmup=0), ["warm", "cold"])
    assert ("run", "warm", 5.0) not in calls


def test_rounds__ofrep_filled_like_warm_and_the_other_shapes_not(monkeypatch):
    # Given OFREP after the shapes that push its units out of memory (line, new)
    calls, result = _main(monkeypatch, _args(), ["line", "new", "ofrep"])
    runs = [(name, seconds) for _, name, seconds in calls]
    # Then every OFREP run is preceded by a fill slice of OFREP itself, in every round
    ofrep_measured = [i for i, call in enumerate(runs) if call == ("ofrep", 2.0)]
    assert len(ofrep_measured) == 3
    for index in ofrep_measured:
        assert runs[index - 2 : index] == [("ofrep", 5.0), ("ofrep", 1.0)]
    # and its share answered from memory is reported, as for the known-unit shapes
    assert all("memory_hit_ratio" in run for run in result["runs"]["default"]["ofrep"])
    # while the line and new shapes are measured as they come, never filled
    assert ("line", 5.0) not in runs and ("new", 5.0) not in runs
