"""Known-unit decide with three targeted experiments against the same three untargeted.

    python load_tests/targeting_bench.py [--rounds 3] [--duration 10]

One throwaway PostgreSQL database seeded like the decide benchmark's (load_tests/bench/: 3
experiments, known units assigned), one Lab server through the production front as the
benchmark starts it, wrk from the same machine. Rounds
alternate two configurations of the SAME experiments and units, switched through the admin
API between runs:

- untargeted: the experiments as seeded; the request is `{"unit": ...}`;
- targeted: every experiment has two conditions (`line in ["3"]`, `fw semver_gte 2.3.0`) and
  an open schedule, and the first one is in a layer (range [0, 1)); the request also sends
  `{"attributes": {"line": "3", "fw": "2.4.0"}}`.

Units are already assigned, so both answer from stored assignments (rule 2 of
docs/decide.md, "The order of the rules"): what is measured is the cost targeting adds to a
known unit's decision (bigger config, bigger body, the schedule check). Prints the
throughput and p99 of each, and their ratio per round.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# Run as a script, sys.path[0] is load_tests/: the benchmark package is found from the root.
sys.path[:1] = [str(Path(__file__).resolve().parent.parent)]

from load_tests.bench import cli, database, drivers, run, servers  # noqa: E402
from load_tests.bench.scenarios import Scenario  # noqa: E402

TARGETED_CONDITIONS = [
    {"attribute": "line", "operator": "in", "values": ["3"]},
    {"attribute": "fw", "operator": "semver_gte", "values": ["2.3.0"]},
]
KNOWN = Scenario("known", "decide, known unit", "decide_known.lua")
KNOWN_TARGETED = Scenario(
    "known-targeted", "decide, known unit, targeted", "decide_known_targeted.lua"
)


def admin(server: servers.Server, method: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"{server.url}/api/admin/v1{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {server.seeded.admin_token}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def set_targeting(server: servers.Server, targeted: bool) -> None:
    product = server.seeded.product
    for i, experiment in enumerate(server.seeded.experiments):
        fields: dict = {"conditions": TARGETED_CONDITIONS if targeted else []}
        fields["start_at"] = "2000-01-01T00:00:00+00:00" if targeted else None
        fields["end_at"] = "2100-01-01T00:00:00+00:00" if targeted else None
        if i == 0:
            fields["layer"] = "bench-layer" if targeted else None
            if targeted:
                fields["layer_range"] = [0, 1]
        admin(server, "PATCH", f"/products/{product}/experiments/{experiment}", fields)


def main(argv: list[str] | None = None) -> int:
    # The servers it starts sign their cache entries with a key of the run's own.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--assignments", type=int, default=10_000)
    parser.add_argument("--database-url", default=cli.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=cli.DEFAULT_REDIS_URL)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    out_dir = Path(tempfile.mkdtemp(prefix="lab-targeting-bench-"))
    name = f"lab_bench_{run.RUN_ID}"
    db, seeded = database.prepare_database(args.database_url, name, args.assignments)
    server = servers.Server(
        label="main",
        database=db,
        seeded=seeded,
        redis_url=args.redis_url,
        config="gunicorn.conf.py",
        extra_args=["-w", str(args.workers)],
        out_dir=out_dir,
    )
    rows = []
    try:
        server.start()
        admin(server, "POST", f"/products/{seeded.product}/layers", {"key": "bench-layer"})
        for round_number in range(args.rounds):
            order = [False, True] if round_number % 2 == 0 else [True, False]
            results = {}
            for targeted in order:
                set_targeting(server, targeted)
                scenario = KNOWN_TARGETED if targeted else KNOWN
                drivers.run_wrk(server, scenario, args.warmup, args)
                results[targeted] = drivers.run_wrk(server, scenario, args.duration, args)
                time.sleep(0.5)
            ratio = results[True]["rps"] / results[False]["rps"]
            rows.append((results[False], results[True], ratio))
            run.log(
                f"round {round_number + 1}: untargeted {results[False]['rps']:.0f} req/s, "
                f"targeted {results[True]['rps']:.0f} req/s, ratio {ratio:.3f}"
            )
    finally:
        server.stop()
        db.drop()
        database.delete_cache_keys(args.redis_url, database.cache_prefix(db))
    print("| round | untargeted req/s | p99 ms | targeted req/s | p99 ms | targeted / untargeted |")
    print("|---|---|---|---|---|---|")
    for i, (plain, targeted, ratio) in enumerate(rows, 1):
        print(
            f"| {i} | {plain['rps']:.0f} | {plain.get('p99_ms', float('nan')):.2f} | "
            f"{targeted['rps']:.0f} | {targeted.get('p99_ms', float('nan')):.2f} | {ratio:.3f} |"
        )
    print(f"median ratio: {statistics.median(r for _, _, r in rows):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
