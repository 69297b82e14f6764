"""Statistics over the rounds of a run: every figure is reported as its median with the
minimum and maximum, and every ratio is taken round by round (a ratio of medians would pair
figures measured minutes apart)."""

from __future__ import annotations

import math
import statistics

from load_tests.bench.scenarios import PEER_LABEL, PEER_SCENARIO


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def linear_fit(points: list[tuple[float, float]]) -> dict:
    """Least-squares slope with its standard error."""
    n = len(points)
    if n < 3:
        return {"slope": None, "stderr": None, "n": n}
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return {"slope": None, "stderr": None, "n": n}
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    intercept = mean_y - slope * mean_x
    residual = sum((y - (intercept + slope * x)) ** 2 for x, y in points)
    stderr = math.sqrt(residual / (n - 2) / sxx)
    return {"slope": slope, "stderr": stderr, "n": n, "intercept": intercept}


def summarize_main(main: dict) -> dict:
    summary: dict[str, dict] = {}
    peer_runs = main["runs"].get(PEER_LABEL, {}).get(PEER_SCENARIO.name, [])
    first_lab = next((runs for label, runs in main["runs"].items() if label != PEER_LABEL), {})
    for label, by_scenario in main["runs"].items():
        rows = {}
        # The peer's ratio to the ceiling is to the first Lab server's no-op of the same round.
        ceiling = by_scenario.get("noop", first_lab.get("noop", []))
        floor = by_scenario.get("floor", [])
        single_new = by_scenario.get("new", [])
        for name, runs in by_scenario.items():
            row = {
                "rps": spread([r["rps"] for r in runs]),
                "units_per_s": spread([r["units_per_s"] for r in runs]),
                "p50_ms": spread([r["p50_ms"] for r in runs]),
                "p99_ms": spread([r["p99_ms"] for r in runs]),
                "errors": sum(sum(r["errors"].values()) for r in runs),
                # wrk counts answers with a status of 400 or more: non-2xx (no 3xx here).
                "non_2xx": sum(r["errors"]["status"] for r in runs),
                "requests": sum(r["requests"] for r in runs),
                "server_cores": spread(
                    [(r["gunicorn_cpu_s"] + r["postgres_cpu_s"]) / r["wall_s"] for r in runs]
                ),
                "postgres_cores": spread([r["postgres_cpu_s"] / r["wall_s"] for r in runs]),
                "memory_hit_ratio": spread([r.get("memory_hit_ratio") for r in runs]),
                "generator_cores": spread([r["generator_cpu_s"] / r["wall_s"] for r in runs]),
                "other_cores": spread([r["other_cpu_s"] / r["wall_s"] for r in runs]),
                "server_cpu_us_per_request": spread(
                    [
                        (r["gunicorn_cpu_s"] + r["postgres_cpu_s"]) / r["requests"] * 1e6
                        for r in runs
                        if r["requests"]
                    ]
                ),
            }
            if ceiling:
                row["ratio_to_ceiling"] = spread(
                    [r["rps"] / c["rps"] for r, c in zip(runs, ceiling, strict=False)]
                )
            if floor and name != "batch":
                row["ratio_to_floor"] = spread(
                    [r["rps"] / f["rps"] for r, f in zip(runs, floor, strict=False)]
                )
            # Each round's own figure, in round order, so the spread is there to read.
            row["rounds"] = [r["rps"] for r in runs]
            row["memory_hit_ratio_rounds"] = [r.get("memory_hit_ratio") for r in runs]
            if peer_runs and label != PEER_LABEL:
                per_round = [r["rps"] / c["rps"] for r, c in zip(runs, peer_runs, strict=False)]
                row["ratio_to_peer"] = spread(per_round)
                row["ratio_to_peer_rounds"] = per_round
            if name == "batch" and single_new:
                row["units_vs_single_new"] = spread(
                    [
                        r["units_per_s"] / s["units_per_s"]
                        for r, s in zip(runs, single_new, strict=False)
                    ]
                )
            rows[name] = row
        summary[label] = rows
    return summary
