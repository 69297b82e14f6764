"""The benchmark's report against the peer: "× Unleash" is a same-round ratio, every shape's
rounds are shown, and the peer's non-2xx answers are counted like Lab's (load_tests/README.md,
"Scenarios")."""

import subprocess
import sys
from pathlib import Path

import pytest

from load_tests.bench import cli, report, stats

ROOT = Path(__file__).resolve().parents[2]


def _run(rps: float, status_errors: int = 0, memory: float | None = None) -> dict:
    run = {
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
    if memory is not None:
        run["memory_hit_ratio"] = memory
    return run


def _report(main: dict) -> dict:
    return {
        "meta": {
            "run_id": "t",
            "date": "d",
            "command": "c",
            "machine": "m",
            "wrk_threads": 1,
            "connections": 8,
            "rounds": 3,
            "duration": 10,
            "warmup": 3,
            "rate_fraction": 0.5,
            "shapes": {
                "warm_units": 3334,
                "cold_units": 200000,
                "line_window": 3,
                "line_min": 3,
                "line_max": 5,
            },
        },
        "peer": {"command": "unleash-server 8.2.0, Node v22", "warmup_s": 15},
        "main_summary": stats.summarize_main(main),
    }


def test_summary__ratio_to_unleash__taken_round_by_round():
    # Given three rounds where Lab and the peer drift together
    main = {
        "runs": {
            "default": {
                "noop": [_run(1000), _run(500), _run(1000)],
                "warm": [_run(600), _run(300), _run(600)],
            },
            "unleash": {"unleash": [_run(400), _run(200), _run(500, status_errors=7)]},
        }
    }
    # When summarized
    summary = stats.summarize_main(main)
    # Then × Unleash is the median of the per-round ratios, not a ratio of medians
    warm = summary["default"]["warm"]
    assert warm["ratio_to_peer"]["median"] == pytest.approx(1.5)
    assert (warm["ratio_to_peer"]["min"], warm["ratio_to_peer"]["max"]) == (
        pytest.approx(1.2),
        pytest.approx(1.5),
    )
    # And each round's own figures are kept, in round order
    assert warm["rounds"] == [600, 300, 600]
    assert warm["ratio_to_peer_rounds"] == pytest.approx([1.5, 1.5, 1.2])
    # And the peer's own ratio to the ceiling uses Lab's no-op of the same round
    assert summary["unleash"]["unleash"]["ratio_to_ceiling"]["median"] == pytest.approx(0.4)
    # And the peer's non-2xx answers are counted
    assert summary["unleash"]["unleash"]["non_2xx"] == 7
    assert summary["default"]["warm"]["non_2xx"] == 0


def test_markdown__table_has_unleash_row_column_and_target_line():
    main = {
        "runs": {
            "default": {"noop": [_run(1000)], "warm": [_run(700)]},
            "unleash": {"unleash": [_run(500, status_errors=3)]},
        }
    }
    text = report.render_markdown(_report(main))
    assert "| × Unleash |" in text
    assert "| Unleash, GET /api/frontend?userId= |" in text
    assert "warm **1.40×**" in text
    assert "(docs/contract.md: known-unit decide ≥ 1.35×)" in text
    # one table for the Lab server only; the peer's row sits in it
    assert text.count("### Throughput, closed loop") == 1
    peer_row = next(line for line in text.splitlines() if line.startswith("| Unleash"))
    assert peer_row.rstrip().endswith("| 3 | 3 |")  # non-2xx, errors


def test_markdown__three_shapes__each_round_and_spread_against_unleash():
    # Given three rounds of the three known-unit shapes, new units and the peer
    main = {
        "runs": {
            "default": {
                "noop": [_run(1000), _run(1000), _run(1000)],
                "warm": [_run(800, memory=0.99), _run(900, memory=0.98), _run(1000, memory=1.0)],
                "cold": [_run(400, memory=0.1), _run(500, memory=0.12), _run(450, memory=0.11)],
                "line": [_run(300, memory=0.2), _run(330, memory=0.3), _run(360, memory=0.25)],
                "new": [_run(200), _run(220), _run(240)],
            },
            "unleash": {"unleash": [_run(400), _run(500), _run(400)]},
        }
    }
    # When the report is rendered
    text = report.render_markdown(_report(main))
    lines = text.splitlines()
    # Then every shape has its row, with the median and the min–max spread over rounds
    warm = next(line for line in lines if line.startswith("| decide, known unit: warm"))
    assert "| 900.0 (800.0–1000.0) |" in warm
    assert next(line for line in lines if line.startswith("| decide, known unit: cold"))
    assert next(line for line in lines if line.startswith("| decide, production line"))
    # And each round's own req/s, × Unleash and share from memory are listed
    by_round = [line for line in lines if line.startswith("| decide, known unit: cold")][1]
    assert by_round == (
        "| decide, known unit: cold memory (first repeat) | 400.0, 500.0, 450.0 "
        "| 1.00, 1.00, 1.12 | 0.100, 0.120, 0.110 |"
    )
    # And the ratios to Unleash of the same rounds, per shape, under the table
    assert "warm **2.00 (1.80–2.50)×**" in text
    assert "cold **1.00 (1.00–1.12)×**" in text
    assert "line **0.75 (0.66–0.90)×**" in text
    assert "new **0.50 (0.44–0.60)×**" in text
    assert "cold draws from 200,000 others" in text


def test_markdown__front_floor__ratios_of_the_same_rounds():
    # Given the front's floor measured in the same rounds as decide and the peer
    main = {
        "runs": {
            "default": {
                "floor": [_run(2000), _run(1000), _run(2000)],
                "noop": [_run(1000), _run(500), _run(1000)],
                "warm": [_run(1200), _run(700), _run(1400)],
            },
            "unleash": {"unleash": [_run(800), _run(500), _run(1000)]},
        }
    }
    # When summarized and rendered
    summary = stats.summarize_main(main)
    text = report.render_markdown(_report(main))
    # Then each shape's ratio to the floor is taken round by round
    warm = summary["default"]["warm"]["ratio_to_floor"]
    assert (warm["median"], warm["min"], warm["max"]) == pytest.approx((0.7, 0.6, 0.7))
    # And the floor is set against Unleash like a shape, and decide against the floor
    assert "floor **2.00 (2.00–2.50)×**" in text
    assert (
        "no decide path through this front is faster): "
        "noop 0.50 (0.50–0.50)×, warm 0.70 (0.60–0.70)×."
    ) in text


def test_args__peer_default_auto_no_peer_off():
    assert cli.parse_args([]).peer is None
    assert cli.parse_args(["--no-peer"]).peer is False
    assert cli.parse_args(["--peer"]).peer is True
    assert cli.parse_args(["--quick"]).peer_warmup == 3.0


def test_args__shapes__measured_by_default_and_known_still_names_warm():
    # Given no scenario chosen, the three shapes are measured, cold over 200,000 units
    args = cli.parse_args([])
    assert args.scenario_list == [
        "floor", "floor_read", "noop", "warm", "cold", "line", "new", "batch", "ofrep"
    ]  # fmt: skip
    assert args.cold_units == 200_000
    # And the commands of earlier runs (RESULTS.md) still run: known is the warm shape
    old = cli.parse_args(["--scenarios", "noop,known", "--profile-scenario", "known"])
    assert old.scenario_list == ["noop", "warm"]
    assert old.profile_scenario == "warm"


def test_args__unknown_scenario__refused(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--scenarios", "noop,tepid"])
    assert "unknown scenarios: tepid" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [["-m", "load_tests.bench"], ["load_tests/bench.py"]],
    ids=["module", "script"],
)
def test_command__both_entry_points__run_the_same_command_line(command):
    # When either form is asked for its options, from the project's root
    done = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    # Then it is the benchmark's command line, shapes included
    assert done.returncode == 0, done.stderr
    assert "--cold-units" in done.stdout
    assert "--line-window" in done.stdout
