"""The benchmark's command line: `python -m load_tests.bench [options]` (load_tests/README.md).

It creates a fresh PostgreSQL database (lab_bench_<run id>), migrates and seeds it, starts Lab
as `make serve-production` runs it (nginx in front of gunicorn, servers.py) on a free
loopback port, the peer (Unleash) next to it, drives both with wrk from the same machine and
prints the report (and can write it to RESULTS.md):

- main: throughput, p50 and p99 of each scenario (no-op ceiling; known-unit decide in three
  traffic shapes, warm, cold and line; decide for new units; batch of 1000 new units;
  OFREP), in rounds whose order alternates, as ratios to the ceiling and to Unleash measured
  in the same round; CPU seconds of the load generator, the server and its PostgreSQL;
- fixed: latency at a fixed offered rate (half of each scenario's throughput), from the
  open-loop generator load_tests/openloop.py (Debian has no wrk2);
- growth: known-unit decide against 10^4 and 10^6 assignment rows, side by side;
- soak (--soak SECONDS): mixed load with an operator toggling a variant, each worker's RSS
  sampled and a slope fitted;
- profile (--profile SECONDS): py-spy samples the workers; top functions.

Only the loopback interface is ever a target; every load loop is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from load_tests.bench.database import delete_cache_keys, prepare_database
from load_tests.bench.peer import UnleashPeer, peer_usable
from load_tests.bench.phases import phase_fixed, phase_growth, phase_main, phase_soak
from load_tests.bench.profile import phase_profile
from load_tests.bench.report import (
    RESULTS_SECTION,
    machine_description,
    render_markdown,
    write_results_section,
)
from load_tests.bench.run import LOAD_TESTS, ROOT, RUN_ID, log
from load_tests.bench.scenarios import ALIASES, SCENARIOS, Shapes, resolve
from load_tests.bench.servers import Server, nginx_available
from load_tests.bench.stats import summarize_main

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"
# The canonical command; `python load_tests/bench.py` runs the same (load_tests/README.md).
COMMAND = "python -m load_tests.bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark decide against a no-op ceiling on one machine "
        "(docs/contract.md, 'Performance targets').",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s")
    parser.add_argument(
        "--phases",
        default=None,
        help="comma list of main,fixed,growth,soak,profile (default main,fixed,growth; "
        "--quick: main,fixed; --soak adds soak; --profile adds profile)",
    )
    parser.add_argument(
        "--scenarios",
        default="floor,floor_read,noop,warm,cold,line,new,batch,ofrep",
        help="main-phase scenarios (known = warm, the name of earlier runs)",
    )
    parser.add_argument(
        "--cold-units",
        type=int,
        default=200_000,
        help="seeded units the cold shape draws from, apart from the warm shape's "
        "(3 assignments each, seeded only when cold is measured)",
    )
    parser.add_argument(
        "--line-window",
        type=int,
        default=3,
        help="line shape: seconds within which one unit's 3-5 decisions fall",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each run")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--fixed-duration", type=float, default=15.0)
    parser.add_argument(
        "--fixed-scenarios", default="noop,warm,new,batch,ofrep", help="fixed-rate scenarios"
    )
    parser.add_argument("--rate-fraction", type=float, default=0.5)
    parser.add_argument(
        "--assignments",
        type=int,
        default=10_000,
        help="seeded rows of the warm shape's units (main; the cold shape's come on top)",
    )
    parser.add_argument(
        "--unanalyzed",
        action="store_true",
        help="main database: no VACUUM ANALYZE after the seed, autovacuum off on its tables",
    )
    parser.add_argument("--growth-sizes", default="10000,1000000")
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--soak-interval", type=float, default=10.0)
    parser.add_argument("--toggle-every", type=float, default=5.0, help="seconds between toggles")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument(
        "--profile-scenario", default="warm", choices=sorted([*SCENARIOS, *ALIASES])
    )
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="py-spy --native (C frames too; pauses the workers to sample, so slower)",
    )
    parser.add_argument(
        "--gunicorn-config",
        default="gunicorn.conf.py",
        help="FRONT=none servers only ('none' for none); the production front always uses "
        "gunicorn.conf.py, as make serve-production does",
    )
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="LABEL=ARGS",
        help="a server variant to compare: gunicorn flags and NAME=VALUE environment, e.g. "
        "'w3=-w 3', 'gthread=-k gthread --threads 4', 'cma0=DATABASE_CONN_MAX_AGE=0', "
        "'patched=LAB_ROOT=/tmp/other-checkout' (serve another copy of the code), "
        "'bare=FRONT=none' (gunicorn without the production front, for A/B) "
        "(repeatable; all run side by side on the same database; growth, soak and profile "
        "use the first)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL server (a database lab_bench_<run id> is created on it)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="Redis for the servers (keys under CACHE_KEY_PREFIX bench-<run id>..., "
        "deleted at the end); 'none': no Redis, each worker caches in memory",
    )
    parser.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure Unleash's per-user evaluation in the main phase's rounds (default: on "
        "when npm is installed; --peer makes a missing npm an error, --no-peer skips it)",
    )
    parser.add_argument(
        "--known-warmup",
        type=float,
        default=120.0,
        help="at most this many seconds of known-unit load on each server before the first "
        "round, until its workers answer 99%% of it from memory (decide.memory)",
    )
    parser.add_argument(
        "--peer-warmup", type=float, default=15.0, help="seconds of load before Unleash's rounds"
    )
    parser.add_argument(
        "--peer-cache",
        default=None,
        help="folder of the npm install cache (default $XDG_CACHE_HOME or ~/.cache)",
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the databases")
    parser.add_argument("--out", default=None, help="folder for logs, JSON and profiles")
    parser.add_argument(
        "--write-results",
        nargs="?",
        const=str(LOAD_TESTS / "RESULTS.md"),
        default=None,
        metavar="PATH",
        help="replace the '## Decide benchmark' section of this file (default RESULTS.md)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1 if args.rounds == 3 else args.rounds
        args.duration = 2.0 if args.duration == 15.0 else args.duration
        args.warmup = 1.0 if args.warmup == 3.0 else args.warmup
        args.fixed_duration = 2.0 if args.fixed_duration == 15.0 else args.fixed_duration
        args.growth_sizes = (
            "1000,10000" if args.growth_sizes == "10000,1000000" else args.growth_sizes
        )
    if args.phases is None:
        phases = ["main", "fixed"] if args.quick else ["main", "fixed", "growth"]
        if args.soak:
            phases.append("soak")
        if args.profile:
            phases.append("profile")
        args.phases = ",".join(phases)
    args.phase_list = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(args.phase_list) - {"main", "fixed", "growth", "soak", "profile"}
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if "soak" in args.phase_list and not args.soak:
        args.soak = 30.0 if args.quick else 600.0
    if "profile" in args.phase_list and not args.profile:
        args.profile = 5.0 if args.quick else 20.0
    if args.redis_url == "none":
        args.redis_url = ""
    args.scenario_list = [resolve(s.strip()) for s in args.scenarios.split(",") if s.strip()]
    args.fixed_list = [resolve(s.strip()) for s in args.fixed_scenarios.split(",") if s.strip()]
    bad = set(args.scenario_list + args.fixed_list) - set(SCENARIOS)
    if bad:
        parser.error(f"unknown scenarios: {', '.join(sorted(bad))}")
    args.profile_scenario = resolve(args.profile_scenario)
    if args.cold_units < 0 or args.line_window < 1:
        parser.error("--cold-units must be at least 0 and --line-window at least 1")
    args.gunicorn_args = []
    args.server_variants = []
    for spec in args.server or ["default="]:
        label, _, extra = spec.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,20}", label):
            parser.error(f"bad server label {label!r}")
        tokens = extra.split()
        env = dict(t.split("=", 1) for t in tokens if re.match(r"^[A-Z_][A-Z0-9_]*=", t))
        gunicorn_args = [t for t in tokens if not re.match(r"^[A-Z_][A-Z0-9_]*=", t)]
        args.server_variants.append((label, gunicorn_args, env))
    if args.quick and args.peer_warmup == 15.0:
        args.peer_warmup = 3.0
    args.gunicorn_args = args.server_variants[0][1]
    args.gunicorn_env = args.server_variants[0][2]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The servers it starts sign their cache entries with a key of the run's own.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    fronted = any(env.get("FRONT", "nginx") != "none" for _, _, env in args.server_variants)
    if fronted and not nginx_available():
        print(
            "the production front needs nginx: apt-get install -y nginx "
            "(or --server LABEL=FRONT=none for bare gunicorn)",
            file=sys.stderr,
        )
        return 2
    if args.gunicorn_config != "none" and not (ROOT / args.gunicorn_config).exists():
        print(f"{args.gunicorn_config} not found (use --gunicorn-config none)", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else Path(tempfile.gettempdir()) / f"lab-bench-{RUN_ID}"
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"run {RUN_ID}: phases {', '.join(args.phase_list)}; output in {out_dir}")
    report: dict = {
        "meta": {
            "run_id": RUN_ID,
            "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "command": f"{COMMAND} " + " ".join(argv or sys.argv[1:]),
            "machine": machine_description(),
            "wrk_threads": args.wrk_threads,
            "connections": args.connections,
            "rounds": args.rounds,
            "duration": args.duration,
            "warmup": args.warmup,
            "rate_fraction": args.rate_fraction,
            "analyzed": not args.unanalyzed,
        }
    }
    servers: list[Server] = []
    database = None
    peer = None
    if "main" in args.phase_list or "fixed" in args.phase_list:
        unusable = peer_usable()
        if args.peer and unusable:
            print(f"--peer: {unusable}", file=sys.stderr)
            return 2
        if args.peer is None and unusable:
            log(f"no peer: {unusable}")
        want_peer = args.peer is True or (args.peer is None and not unusable)
    else:
        want_peer = False
    try:
        needs_main_server = {"main", "fixed", "soak", "profile"} & set(args.phase_list)
        if needs_main_server:
            # The warm shape's units first (0 .. warm-1), then the cold shape's.
            warm_units = math.ceil(args.assignments / 3)
            measured = set(args.scenario_list) | set(args.fixed_list)
            cold_units = args.cold_units if "cold" in measured else 0
            shapes = Shapes(
                cold_offset=warm_units, cold_units=cold_units, line_window=args.line_window
            )
            database, seeded = prepare_database(
                args.database_url,
                f"lab_bench_{RUN_ID}",
                3 * (warm_units + cold_units),
                analyzed=not args.unanalyzed,
            )
            seeded.warm_units = warm_units
            report["meta"]["shapes"] = {
                "warm_units": warm_units,
                "cold_units": cold_units,
                "line_window": shapes.line_window,
                "line_min": shapes.line_min,
                "line_max": shapes.line_max,
            }
            for label, extra, extra_env in args.server_variants:
                server = Server(
                    label=label,
                    database=database,
                    seeded=seeded,
                    redis_url=args.redis_url,
                    config=args.gunicorn_config,
                    extra_args=extra,
                    extra_env=extra_env,
                    out_dir=out_dir,
                    shapes=shapes,
                )
                servers.append(server)
                server.start()
            report["servers"] = [server.describe() for server in servers]
            if want_peer:
                peer = UnleashPeer(args, out_dir, warm_units)
                try:
                    peer.start()
                except RuntimeError as exc:
                    # Asked for (--peer): fail. On by default: say why, measure Lab alone.
                    peer.stop()
                    if args.peer:
                        raise
                    log(f"no peer: {exc}")
                    report["peer_skipped"] = str(exc)
                    peer = None
                else:
                    report["peer"] = {**peer.describe(), "warmup_s": args.peer_warmup}
        summary_rows: dict = {}
        if "main" in args.phase_list or "fixed" in args.phase_list:
            scenarios = [SCENARIOS[name] for name in args.scenario_list]
            if "fixed" in args.phase_list and "main" not in args.phase_list:
                log("fixed needs the throughput from main: running main too")
            main_result = phase_main(servers, scenarios, args, peer)
            report["main"] = main_result
            report["main_summary"] = summarize_main(main_result)
            summary_rows = report["main_summary"][servers[0].label]
            log(f"assignments rows after main: {database.assignment_rows():,}")
        if peer is not None:
            peer.stop()
        if "fixed" in args.phase_list:
            report["fixed"] = phase_fixed(servers[0], args.fixed_list, summary_rows, args)
        if "profile" in args.phase_list:
            report["profile"] = phase_profile(servers[0], args.profile, args, out_dir)
        if "soak" in args.phase_list:
            report["soak"] = phase_soak(servers[0], args.soak, args)
        for server in servers:
            server.stop()
        if "growth" in args.phase_list:
            report["growth"] = phase_growth(args, out_dir)
    finally:
        if peer is not None:
            peer.stop()
        for server in servers:
            server.stop()
        if database is not None and not args.keep_db:
            database.drop()
        delete_cache_keys(args.redis_url, f"bench-{RUN_ID}")
    markdown = render_markdown(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "report.md").write_text(markdown)
    print(markdown)
    log(f"JSON and Markdown in {out_dir}")
    if args.write_results:
        write_results_section(Path(args.write_results), markdown)
        log(f"wrote the '{RESULTS_SECTION}' section of {args.write_results}")
    return 0
