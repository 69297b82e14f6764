"""The Markdown report of a run, and the RESULTS.md section it can replace."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from load_tests.bench.scenarios import PEER_LABEL, PEER_SCENARIO, SCENARIOS

RESULTS_SECTION = "## Decide benchmark"


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _span(s: dict, digits: int = 1) -> str:
    if s["median"] is None:
        return "-"
    if s["n"] == 1:
        return _fmt(s["median"], digits)
    return f"{_fmt(s['median'], digits)} ({_fmt(s['min'], digits)}–{_fmt(s['max'], digits)})"


def _rounds(values: list[float] | None, digits: int) -> str:
    return ", ".join(_fmt(v, digits) for v in values) if values else "-"


def _header_lines(report: dict) -> list[str]:
    meta = report["meta"]
    lines = [
        f"Run {meta['run_id']} on {meta['date']}: `{meta['command']}` — {meta['machine']}; "
        f"wrk {meta['wrk_threads']} thread(s), {meta['connections']} connections; "
        f"{meta['rounds']} round(s) of {meta['duration']:g} s per scenario after "
        f"{meta['warmup']:g} s of warm-up, order alternating between rounds. "
        "Figures are the median over rounds, with (min–max)."
        + (
            ""
            if meta.get("analyzed", True)
            else " The database was **not analyzed** (no statistics, autovacuum off)."
        )
    ]
    shapes = meta.get("shapes")
    if shapes:
        lines += [
            "",
            f"Known-unit traffic shapes: warm repeats {shapes['warm_units']:,} units; cold "
            f"draws from {shapes['cold_units']:,} others; line decides each arriving unit "
            f"{shapes['line_min']}–{shapes['line_max']} times within {shapes['line_window']} s, "
            "then never again.",
        ]
    for server in report.get("servers", []):
        lines += [
            "",
            f"Server `{server['label']}`, {server.get('front_description', 'gunicorn')}: "
            f"`{server['command']}` — {server['workers']} workers, "
            f"{server['threads_per_worker']} OS threads each.",
        ]
    peer = report.get("peer")
    if peer:
        lines += [
            "",
            f"Peer `{PEER_LABEL}`: {peer['command']}, one Node process, its own PostgreSQL "
            "(initdb); 3 experiment flags (2, 3 and 2 variants, flexibleRollout 100 % over "
            f"userId stickiness), {peer['warmup_s']:g} s of JIT warm-up before the rounds; "
            "one run per round, the same request whatever Lab's traffic shape.",
        ]
    if report.get("peer_skipped"):
        lines += ["", f"Peer not measured: {report['peer_skipped']}"]
    return lines


def _title(name: str) -> str:
    return PEER_SCENARIO.title if name == PEER_SCENARIO.name else SCENARIOS[name].title


def _throughput_lines(label: str, rows: dict, peer_rows: dict) -> list[str]:
    lines = [
        "",
        f"### Throughput, closed loop (wrk) — server `{label}`",
        "",
        "| scenario | req/s | units/s | p50 ms | p99 ms | × ceiling | × Unleash "
        "| server CPU (cores) | of which PostgreSQL | wrk CPU (cores) | other CPU "
        "| server CPU µs/req | non-2xx | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in [*rows.items(), *peer_rows.items()]:
        versus_peer = (
            "1.00"
            if name == PEER_SCENARIO.name
            else _span(row["ratio_to_peer"], 2)
            if "ratio_to_peer" in row and name != "batch"
            else "-"
        )
        lines.append(
            f"| {_title(name)} | {_span(row['rps'])} | {_span(row['units_per_s'], 0)} "
            f"| {_span(row['p50_ms'], 2)} | {_span(row['p99_ms'], 2)} "
            f"| {'-' if name == 'batch' else _span(row.get('ratio_to_ceiling', _none()), 2)} "
            f"| {versus_peer} "
            f"| {_span(row['server_cores'], 2)} | {_span(row['postgres_cores'], 2)} "
            f"| {_span(row['generator_cores'], 2)} | {_span(row['other_cores'], 2)} "
            f"| {_span(row['server_cpu_us_per_request'], 0)} | {row.get('non_2xx', '-')} "
            f"| {row['errors']} |"
        )
    lines += [
        "",
        f"Round by round — server `{label}`:",
        "",
        "| scenario | req/s per round | × Unleash per round | from memory per round |",
        "|---|---|---|---|",
    ]
    for name, row in [*rows.items(), *peer_rows.items()]:
        memory = row.get("memory_hit_ratio_rounds")
        lines.append(
            f"| {_title(name)} | {_rounds(row.get('rounds'), 1)} "
            f"| {_rounds(row.get('ratio_to_peer_rounds') if name != 'batch' else None, 2)} "
            f"| {_rounds(memory, 3) if memory and any(m is not None for m in memory) else '-'} |"
        )
    lines.append("")  # a line right under a table would be read as one more row
    if "batch" in rows and "units_vs_single_new" in rows["batch"]:
        ratio = rows["batch"]["units_vs_single_new"]
        lines.append(
            f"Batch of 1000 vs single decides for new units, units/s: "
            f"**{_span(ratio, 1)}×** (target ≥ 10×)."
        )
    warm = rows.get("warm", {})
    if "ratio_to_ceiling" in warm:
        lines.append(
            f"Known-unit decide (warm) vs the no-op ceiling: "
            f"**{_span(warm['ratio_to_ceiling'], 2)}×** (target ≥ 0.5×)."
        )
    if "floor" in rows:
        floors = [
            f"{name} {_span(rows[name]['ratio_to_floor'], 2)}×"
            for name in ("floor_read", "noop", "warm", "cold", "line", "new", "ofrep")
            if "ratio_to_floor" in rows.get(name, {})
        ]
        lines.append(
            "Against the front's floor (nginx and gunicorn answering a constant, no Lab code; "
            "no decide path through this front is faster): " + ", ".join(floors) + "."
        )
    for name in ("warm", "cold", "line", "ofrep"):
        if rows.get(name, {}).get("memory_hit_ratio", {}).get("n"):
            lines.append(
                f"Decisions answered from the workers' memory (decide.memory), {name}: "
                f"{_span(rows[name]['memory_hit_ratio'], 3)}."
            )
    versus = [
        f"{name} **{_span(rows[name]['ratio_to_peer'], 2)}×**"
        for name in ("floor", "floor_read", "warm", "cold", "line", "new", "ofrep")
        if "ratio_to_peer" in rows.get(name, {})
    ]
    if versus:
        lines.append(
            "Against Unleash's per-user evaluation, same rounds: "
            + ", ".join(versus)
            + " (docs/contract.md: known-unit decide ≥ 1.35×)."
        )
    return lines


def render_markdown(report: dict) -> str:
    lines = _header_lines(report)
    summary = report.get("main_summary", {})
    peer_rows = summary.get(PEER_LABEL, {})
    for label, rows in summary.items():
        if label != PEER_LABEL:
            lines += _throughput_lines(label, rows, peer_rows)
    if report.get("fixed"):
        lines.append("")
        lines.append(
            f"### Latency at a fixed offered rate (open loop, load_tests/openloop.py; "
            f"{report['meta']['rate_fraction']:g} × each scenario's median throughput)"
        )
        lines.append("")
        lines.append(
            "| scenario | offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms "
            "| max ms | non-200 / errors | generator CPU (cores) | server CPU (cores) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, r in report["fixed"].items():
            bad = sum(v for k, v in r["statuses"].items() if k != "200") + sum(r["errors"].values())
            lines.append(
                f"| {_title(name)} | {_fmt(r['offered_rps'])} | {_fmt(r['achieved_rps'])} "
                f"| {_fmt(r['p50_ms'], 2)} | {_fmt(r['p90_ms'], 2)} | {_fmt(r['p99_ms'], 2)} "
                f"| {_fmt(r['p999_ms'], 2)} | {_fmt(r['max_ms'], 2)} | {bad} "
                f"| {_fmt(r['generator_cpu_s'] / r['wall_s'], 2)} "
                f"| {_fmt((r['gunicorn_cpu_s'] + r['postgres_cpu_s']) / r['wall_s'], 2)} |"
            )
    growth = report.get("growth")
    if growth and "rows" in growth:
        lines.append("")
        lines.append("### Known-unit decide as the assignments table grows")
        lines.append("")
        lines.append(
            "Each decision read from the database (DECIDE_KNOWN_UNITS=false on these two "
            "servers): the answer the table's size can change."
        )
        lines.append("")
        lines.append(
            "| assignments rows | req/s (wrk) | p50 ms | p99 ms | fixed rate req/s "
            "| fixed p50 ms | fixed p99 ms |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for row in growth["rows"].values():
            lines.append(
                f"| {row['assignments']:,} | {_span(row['rps'])} | {_span(row['p50_ms'], 2)} "
                f"| {_span(row['p99_ms'], 2)} | {_fmt(row['fixed_rate'])} "
                f"| {_span(row['fixed_p50_ms'], 2)} | {_span(row['fixed_p99_ms'], 2)} |"
            )
        v = growth["verdict"]
        lines.append("")
        lines.append(
            f"Largest vs smallest table: throughput {v['throughput_ratio']:.2f}×, p50 at a "
            f"fixed rate {v['fixed_p50_ratio']:.2f}×, p99 {v['fixed_p99_ratio']:.2f}× "
            "(target: within 20 %)."
        )
    soak = report.get("soak")
    if soak:
        lines.append("")
        lines.append(
            f"### Worker memory under {soak['seconds']:.0f} s of mixed load "
            f"({_fmt(soak['rps'])} req/s, {soak['requests']:,} requests, "
            f"{soak['toggles_ok']} variant toggles)"
        )
        lines.append("")
        lines.append(
            "| worker | samples | RSS first MiB | RSS last MiB | slope MiB/min (± s.e.) "
            "| 2nd-half slope | fitted growth MiB | flat |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for pid, w in soak["workers"].items():
            lines.append(
                f"| {pid} | {w['samples']} | {_fmt(w['rss_first_mib'])} "
                f"| {_fmt(w['rss_last_mib'])} | {_fmt(w['slope_mib_per_min'], 3)} "
                f"(± {_fmt(w['slope_stderr'], 3)}) | {_fmt(w['second_half_slope_mib_per_min'], 3)} "
                f"| {_fmt(w['fitted_growth_mib'], 2)} | {'yes' if w['flat'] else 'NO'} |"
            )
    profile = report.get("profile")
    if profile and profile.get("samples"):
        lines.append("")
        lines.append(
            f"### Profile: {profile['scenario']} ({profile['samples']:,} py-spy samples over "
            f"the workers, {profile['rps_while_profiled']:.0f} req/s while profiled)"
        )
        lines.append("")
        lines.append("| own time | function | | total time | function |")
        lines.append("|---|---|---|---|---|")
        for (own_name, own_share), (total_name, total_share) in zip(
            profile["own"], profile["total"], strict=False
        ):
            lines.append(
                f"| {own_share:.1%} | `{own_name}` | | {total_share:.1%} | `{total_name}` |"
            )
        lines.append("")
        lines.append(
            "Own time by layer: "
            + ", ".join(f"{layer} {share:.0%}" for layer, share in profile["layers"])
            + "."
        )
    return "\n".join(lines) + "\n"


def _none() -> dict:
    return {"median": None, "min": None, "max": None, "n": 0}


def write_results_section(path: Path, body: str) -> None:
    """Replace (or append) the "## Decide benchmark" section; other sections are kept."""
    text = path.read_text() if path.exists() else "# Results\n"
    section = f"{RESULTS_SECTION}\n\n{body}"
    pattern = re.compile(
        rf"^{re.escape(RESULTS_SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def machine_description() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
            memory = f", {kib / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}){memory}, Python {sys.version.split()[0]}"
