"""The benchmark's report against the peer: "× Unleash" is a same-round ratio, and the peer's
non-2xx answers are counted like Lab's (load_tests/README.md, "Scenarios")."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("lab_bench", ROOT / "load_tests" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["lab_bench"] = module
    spec.loader.exec_module(module)
    return module


def _run(rps: float, status_errors: int = 0) -> dict:
    return {
        "rps": rps,
        "units_per_s": rps,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "requests": int(rps * 10),
        "errors": {"connect": 0, "read": 0, "write": 0, "status": status_errors, "timeout": 0},
        "wall_s": 10.0,
        "gunicorn_cpu_s": 10.0,
        "postgres_cpu_s": 1.0,
        "generator_cpu_s": 1.0,
        "other_cpu_s": 0.0,
    }


def test_summary__ratio_to_unleash__taken_round_by_round(bench):
    # Given three rounds where Lab and the peer drift together
    main = {
        "runs": {
            "default": {
                "noop": [_run(1000), _run(500), _run(1000)],
                "known": [_run(600), _run(300), _run(600)],
            },
            "unleash": {"unleash": [_run(400), _run(200), _run(500, status_errors=7)]},
        }
    }
    # When summarized
    summary = bench.summarize_main(main)
    # Then × Unleash is the median of the per-round ratios, not a ratio of medians
    known = summary["default"]["known"]["ratio_to_peer"]
    assert known["median"] == pytest.approx(1.5)
    assert (known["min"], known["max"]) == (pytest.approx(1.2), pytest.approx(1.5))
    # And the peer's own ratio to the ceiling uses Lab's no-op of the same round
    assert summary["unleash"]["unleash"]["ratio_to_ceiling"]["median"] == pytest.approx(0.4)
    # And the peer's non-2xx answers are counted
    assert summary["unleash"]["unleash"]["non_2xx"] == 7
    assert summary["default"]["known"]["non_2xx"] == 0


def test_markdown__table_has_unleash_row_column_and_target_line(bench):
    main = {
        "runs": {
            "default": {"noop": [_run(1000)], "known": [_run(700)]},
            "unleash": {"unleash": [_run(500, status_errors=3)]},
        }
    }
    report = {
        "meta": {
            "run_id": "t",
            "date": "d",
            "command": "c",
            "machine": "m",
            "wrk_threads": 1,
            "connections": 8,
            "rounds": 1,
            "duration": 10,
            "warmup": 3,
            "rate_fraction": 0.5,
        },
        "peer": {"command": "unleash-server 8.2.0, Node v22", "warmup_s": 15},
        "main_summary": bench.summarize_main(main),
    }
    text = bench.render_markdown(report)
    assert "| × Unleash |" in text
    assert "| Unleash, GET /api/frontend?userId= |" in text
    assert "Known-unit decide vs Unleash's per-user evaluation: **1.40×** (target ≥ 1.35×)." in text
    # one table for the Lab server only; the peer's row sits in it
    assert text.count("### Throughput, closed loop") == 1
    peer_row = next(line for line in text.splitlines() if line.startswith("| Unleash"))
    assert peer_row.rstrip().endswith("| 3 | 3 |")  # non-2xx, errors


def test_args__peer_default_auto_no_peer_off(bench):
    assert bench.parse_args([]).peer is None
    assert bench.parse_args(["--no-peer"]).peer is False
    assert bench.parse_args(["--peer"]).peer is True
    assert bench.parse_args(["--quick"]).peer_warmup == 3.0
