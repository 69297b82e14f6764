"""The load generators, metered: wrk (closed loop: N connections kept busy) and
load_tests/openloop.py (a fixed offered rate); the probe before a scenario is measured, and
the servers' own count of decisions answered from memory."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

from load_tests.bench.meters import CpuMeter, Metered
from load_tests.bench.run import OPENLOOP, ROOT, RUN_ID, WRK_DIR, new_nonce
from load_tests.bench.scenarios import Scenario


def run_measured(command: list[str], target: Metered, env: dict[str, str]) -> tuple[str, dict]:
    """Run a load generator to completion; its stdout and the CPU everyone spent meanwhile."""
    meter = CpuMeter(target)
    meter.start()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout = process.stdout.read()
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = meter.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}): {stderr.decode()}")
    cpu["generator_cpu_s"] = usage.ru_utime + usage.ru_stime
    cpu["other_cpu_s"] = max(
        0.0,
        cpu["machine_busy_cpu_s"]
        - cpu["generator_cpu_s"]
        - cpu["gunicorn_cpu_s"]
        - cpu["postgres_cpu_s"],
    )
    return stdout.decode(), cpu


def run_wrk(target, scenario: Scenario, seconds: float, args: argparse.Namespace) -> dict:
    command = [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_DIR / scenario.script),
        target.url,
    ]
    stdout, cpu = run_measured(command, target, target.scenario_env(new_nonce(), scenario))
    match = re.search(r"^WRK_JSON (.*)$", stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no summary from wrk:\n{stdout}")
    result = json.loads(match.group(1))
    result.update(cpu)
    result["units_per_s"] = result["rps"] * scenario.units_per_request
    return result


def run_openloop(
    target, scenario: Scenario, rate: float, seconds: float, args: argparse.Namespace
) -> dict:
    command = [
        sys.executable,
        str(OPENLOOP),
        "--url",
        target.url,
        "--scenario",
        scenario.name,
        "--rate",
        f"{rate:.3f}",
        "--duration",
        str(seconds),
        "--warmup",
        str(args.warmup),
    ]
    stdout, cpu = run_measured(command, target, target.scenario_env(new_nonce(), scenario))
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(cpu)
    return result


def memory_lookups(target) -> dict[str, float] | None:
    """The server's `lab_known_units_total` counters (decide.memory), None for the peer."""
    if not hasattr(target, "seeded"):
        return None
    try:
        with urllib.request.urlopen(target.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    counts = {}
    for line in text.splitlines():
        match = re.match(r'^lab_known_units_total\{result="(\w+)"\} (\S+)$', line)
        if match:
            counts[match.group(1)] = float(match.group(2))
    return counts


def memory_hit_ratio(before: dict | None, after: dict | None) -> float | None:
    """The share of single-unit decisions answered from the workers' memory in between.
    (Before a server's first decision its counters have no samples yet: zeros.)"""
    if not after:
        return None
    before = before or {}
    hits = after.get("hit", 0) - before.get("hit", 0)
    misses = after.get("miss", 0) - before.get("miss", 0)
    return hits / (hits + misses) if hits + misses > 0 else None


def probe(server, scenario: Scenario) -> str | None:
    """One request before measuring: None if it answers 200, else why the scenario is skipped."""
    seeded = server.seeded
    number = 0
    if scenario.name == "cold" and server.shapes is not None:
        if not server.shapes.cold_units:
            return "no cold units were seeded (--cold-units 0)"
        number = server.shapes.cold_offset
    unit = f"{seeded.unit_prefix}{number:0{seeded.unit_digits}d}"
    path = scenario.probe_path
    if scenario.name == "batch":
        body = {"units": [unit, f"probe-{RUN_ID}"]}
    elif scenario.name == "ofrep":
        path = f"/ofrep/v1/evaluate/flags/{next(iter(seeded.experiments))}"
        body = {"context": {"targetingKey": unit}}
    else:
        body = {"unit": unit}
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {seeded.client_key}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return f"{path} answers {exc.code}"
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return f"{path}: {exc}"
    if scenario.name in ("warm", "cold"):
        variants = payload.get("variants", {})
        if len(variants) != 3 or None in variants.values():
            return f"a known unit should get 3 variants, got {payload}"
    return None
