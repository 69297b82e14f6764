"""The phases of a run (load_tests/README.md): main (every scenario on every server and the
peer, in rounds), fixed (latency at a fixed offered rate), growth (a small and a large
assignments table side by side), soak (memory under mixed load); profile is in profile.py."""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from load_tests.bench.database import prepare_database
from load_tests.bench.drivers import (
    memory_hit_ratio,
    memory_lookups,
    probe,
    run_openloop,
    run_wrk,
)
from load_tests.bench.meters import rss_kib
from load_tests.bench.run import RUN_ID, log
from load_tests.bench.scenarios import PEER_SCENARIO, SCENARIOS, Scenario
from load_tests.bench.servers import Server
from load_tests.bench.stats import linear_fit, spread

# The warm shape is measured once the workers answer this share of it from memory: what a
# unit repeated all the time finds in steady state. (At 0.95 a twentieth of the decisions read
# the database, each costing several times an answer from memory, and the warm figure
# measured the fill more than the memory.)
WARM_HIT_RATIO = 0.99


def warm_known_units(server: Server, scenario: Scenario, args: argparse.Namespace) -> None:
    """A filled shape (warm, OFREP) until the workers answer nearly all of it from memory
    (decide.memory).

    A worker remembers the units it has decided: with random units, every worker must have
    decided every known unit once, which takes a while (the peer is warmed too, for its JIT).
    In 5-second slices, until WARM_HIT_RATIO of a slice's decisions are answered from memory or
    --known-warmup seconds have passed; a server without the memory stops after one slice.
    """
    spent = 0.0
    while spent < args.known_warmup:
        seconds = min(5.0, args.known_warmup - spent)
        before = memory_lookups(server)
        run_wrk(server, scenario, seconds, args)
        spent += seconds
        ratio = memory_hit_ratio(before, memory_lookups(server))
        log(
            f"warming {server.label} on {scenario.name}: {spent:.0f} s, "
            f"from memory {ratio or 0:.1%}"
        )
        if not ratio or ratio >= WARM_HIT_RATIO:
            return


def phase_main(servers: list[Server], scenarios: list[Scenario], args, peer=None) -> dict:
    """Every scenario on every server (and the peer), in rounds; odd rounds run the order
    backwards, so a slow drift of the machine favours no one."""
    available = []
    for scenario in scenarios:
        problem = probe(servers[0], scenario)
        if problem:
            log(f"skipping {scenario.name}: {problem}")
        else:
            available.append(scenario)
    runs: dict[str, dict[str, list[dict]]] = {
        s.label: {c.name: [] for c in available} for s in servers
    }
    plan = [(server, scenario) for server in servers for scenario in available]
    if peer is not None:
        problem = peer.probe()
        if problem:
            raise RuntimeError(f"the peer does not answer as seeded: {problem}")
        runs[peer.label] = {PEER_SCENARIO.name: []}
        plan.append((peer, PEER_SCENARIO))
    for round_number in range(args.rounds):
        order = plan if round_number % 2 == 0 else list(reversed(plan))
        for server, scenario in order:
            if scenario.filled and args.known_warmup > 0:
                # Fill the workers' memory first, and again in every round: the shapes run
                # since the last filled run (cold, line, new, batch) pushed its units out of
                # it, and a filled shape is its units repeated, held by every worker. Without
                # this OFREP measured the fill or the memory depending on what ran before it
                # (2,250-2,350 req/s in rounds after the line and new shapes, 3,560-3,790
                # right after its own run of the round before).
                warm_known_units(server, scenario, args)
            run_wrk(server, scenario, args.warmup, args)
            before = memory_lookups(server) if scenario.known_shape else None
            result = run_wrk(server, scenario, args.duration, args)
            if before is not None:
                result["memory_hit_ratio"] = memory_hit_ratio(before, memory_lookups(server))
            result["round"] = round_number + 1
            runs[server.label][scenario.name].append(result)
            log(
                f"round {round_number + 1} {server.label:>8} {scenario.name:>7}: "
                f"{result['rps']:8.1f} req/s  p50 {result['p50_ms']:7.2f} ms  "
                f"p99 {result['p99_ms']:7.2f} ms  errors {sum(result['errors'].values())}"
            )
    return {"scenarios": [s.name for s in available], "runs": runs}


def phase_fixed(server: Server, scenarios: list[str], summary: dict, args) -> dict:
    """Each scenario at `rate_fraction` of its own median closed-loop throughput."""
    results = {}
    for name in scenarios:
        row = summary.get(name)
        if not row or not row["rps"]["median"]:
            continue
        rate = row["rps"]["median"] * args.rate_fraction
        if rate < 0.5:
            continue
        result = run_openloop(server, SCENARIOS[name], rate, args.fixed_duration, args)
        results[name] = result
        log(
            f"fixed {name:>6} at {rate:8.1f} req/s: achieved {result['achieved_rps']:.1f}, "
            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
            f"generator {result['generator_cpu_s'] / result['wall_s']:.2f} cores"
        )
    return results


def phase_growth(args, out_dir: Path) -> dict:
    sizes = [int(float(s)) for s in args.growth_sizes.split(",")]
    servers = []
    try:
        for index, size in enumerate(sizes):
            database, seeded = prepare_database(
                args.database_url, f"lab_bench_{RUN_ID}_g{index}", size
            )
            server = Server(
                label=f"{size:.0e}".replace("+0", "").replace("+", ""),
                database=database,
                seeded=seeded,
                redis_url=args.redis_url,
                config=args.gunicorn_config,
                extra_args=args.gunicorn_args,
                # What the table's size can change is the database's answer: with the
                # memory of known units on, 10^6 assignments (333,000 units) would instead
                # measure a working set larger than DECIDE_KNOWN_UNITS_MAX against one that
                # fits (docs/decide.md). A --server setting can turn it back on.
                extra_env={"DECIDE_KNOWN_UNITS": "false", **args.gunicorn_env},
                out_dir=out_dir,
            )
            servers.append(server)
            server.start()
        for server in servers:
            problem = probe(server, SCENARIOS["warm"])
            if problem:
                log(f"skipping growth: {problem}")
                return {"skipped": problem}
        closed = {s.label: [] for s in servers}
        for round_number in range(args.rounds):
            order = servers if round_number % 2 == 0 else list(reversed(servers))
            for server in order:
                run_wrk(server, SCENARIOS["warm"], args.warmup, args)
                result = run_wrk(server, SCENARIOS["warm"], args.duration, args)
                closed[server.label].append(result)
                log(
                    f"growth round {round_number + 1} {server.label:>6}: {result['rps']:.1f} "
                    f"req/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
                )
        rate = args.rate_fraction * min(
            statistics.median(r["rps"] for r in runs) for runs in closed.values()
        )
        fixed = {s.label: [] for s in servers}
        for round_number in range(args.rounds):
            order = servers if round_number % 2 == 0 else list(reversed(servers))
            for server in order:
                result = run_openloop(server, SCENARIOS["warm"], rate, args.fixed_duration, args)
                fixed[server.label].append(result)
                log(
                    f"growth fixed {round_number + 1} {server.label:>6} at {rate:.0f} req/s: "
                    f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
                )
        rows = {}
        for server in servers:
            rows[server.label] = {
                "assignments": server.database.assignment_rows(),
                "rps": spread([r["rps"] for r in closed[server.label]]),
                "p50_ms": spread([r["p50_ms"] for r in closed[server.label]]),
                "p99_ms": spread([r["p99_ms"] for r in closed[server.label]]),
                "fixed_rate": rate,
                "fixed_p50_ms": spread([r["p50_ms"] for r in fixed[server.label]]),
                "fixed_p99_ms": spread([r["p99_ms"] for r in fixed[server.label]]),
            }
        first, last = rows[servers[0].label], rows[servers[-1].label]
        verdict = {
            "throughput_ratio": last["rps"]["median"] / first["rps"]["median"],
            "fixed_p50_ratio": last["fixed_p50_ms"]["median"] / first["fixed_p50_ms"]["median"],
            "fixed_p99_ratio": last["fixed_p99_ms"]["median"] / first["fixed_p99_ms"]["median"],
        }
        return {"rows": rows, "verdict": verdict, "runs": {"closed": closed, "fixed": fixed}}
    finally:
        for server in servers:
            server.stop()
            if not args.keep_db:
                server.database.drop()


class Toggler(threading.Thread):
    """An operator flipping a variant between enabled and disabled through the admin API."""

    def __init__(self, server: Server, every: float):
        super().__init__(daemon=True)
        self.server = server
        self.every = every
        self.stopped = threading.Event()
        self.ok = 0
        self.failed = 0

    def run(self) -> None:
        seeded = self.server.seeded
        url = (
            f"{self.server.url}/api/admin/v1/products/{seeded.product}/experiments/"
            f"{seeded.toggle['experiment']}/variants/{seeded.toggle['variant']}"
        )
        status = "disabled"
        while not self.stopped.wait(self.every):
            request = urllib.request.Request(
                url,
                data=json.dumps({"status": status}).encode(),
                headers={
                    "Authorization": f"Bearer {seeded.admin_token}",
                    "Content-Type": "application/json",
                },
                method="PATCH",
            )
            try:
                with urllib.request.urlopen(request, timeout=10):
                    self.ok += 1
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                self.failed += 1
            status = "enabled" if status == "disabled" else "disabled"

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=15)


def phase_soak(server: Server, seconds: float, args) -> dict:
    """Mixed load for `seconds`, the worker RSS sampled every `soak_interval` seconds."""
    warmup = min(30.0, max(args.warmup, seconds / 10))
    log(f"soak: {warmup:.0f} s warm-up, then {seconds:.0f} s of mixed load")
    run_wrk(server, Scenario("mixed", "mixed", "mixed.lua"), warmup, args)
    toggler = Toggler(server, args.toggle_every)
    toggler.start()
    samples: list[dict] = []
    holder: dict = {}

    def load() -> None:
        holder["result"] = run_wrk(server, Scenario("mixed", "mixed", "mixed.lua"), seconds, args)

    thread = threading.Thread(target=load, daemon=True)
    started = time.monotonic()
    thread.start()
    while thread.is_alive():
        now = time.monotonic() - started
        for pid in server.workers():
            rss = rss_kib(pid)
            if rss is not None:
                samples.append({"t": now, "pid": pid, "rss_kib": rss})
        thread.join(timeout=args.soak_interval)
    toggler.stop()
    result = holder.get("result", {})
    per_worker = {}
    for pid in sorted({s["pid"] for s in samples}):
        points = [(s["t"] / 60, s["rss_kib"] / 1024) for s in samples if s["pid"] == pid]
        fit = linear_fit(points)
        half = [p for p in points if p[0] >= points[-1][0] / 2]
        second_half = linear_fit(half)
        minutes = points[-1][0] - points[0][0] if len(points) > 1 else 0
        mean_rss = statistics.fmean(p[1] for p in points)
        growth = (fit["slope"] or 0) * minutes
        noise = 2 * (fit["stderr"] or 0) * minutes
        per_worker[pid] = {
            "samples": len(points),
            "rss_first_mib": points[0][1],
            "rss_last_mib": points[-1][1],
            "rss_max_mib": max(p[1] for p in points),
            "slope_mib_per_min": fit["slope"],
            "slope_stderr": fit["stderr"],
            "second_half_slope_mib_per_min": second_half["slope"],
            "fitted_growth_mib": growth,
            "flat": fit["slope"] is None or growth <= max(noise, 0.01 * mean_rss, 1.0),
        }
    return {
        "seconds": seconds,
        "requests": result.get("requests"),
        "rps": result.get("rps"),
        "errors": result.get("errors"),
        "toggles_ok": toggler.ok,
        "toggles_failed": toggler.failed,
        "workers": per_worker,
        "samples": samples,
        "recycled": len(per_worker) > len(server.workers()),
    }
