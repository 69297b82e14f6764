"""Benchmark of a design's analysis (docs/designs.md: 10^6 measured units in under 2 s, tables
never analyzed).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/lab \\
        python load_tests/design_benchmark.py --units 1000000

Seeds its own PostgreSQL database (`lab_bench_designs` by default, created and migrated by the
script, dropped at the end unless `--keep`), like load_tests/results_benchmark.py: a 2^(7-4)
design over seven experiments, `units` units each assigned the levels of a run (7 rows each)
and measured once, with set-based SQL and no ANALYZE afterwards (a bulk import that autovacuum
has not reached; the script prints each table's statistics state). It then calls
`GET .../designs/screen/analysis?metric=yield` through the whole Django stack, `--runs` times
after one warm-up call, and prints min / median / max.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from load_tests.results_benchmark import (  # noqa: E402
    _create_database,
    _drop_database,
    _print_statistics_state,
    _with_database,
)

PRODUCT = "bench-design"
FACTORS = ["a", "b", "c", "d", "e", "f", "g"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database", default="lab_bench_designs")
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the database of an earlier --keep run instead of seeding a new one",
    )
    args = parser.parse_args()

    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url.startswith(("postgres://", "postgresql://")):
        sys.exit("set DATABASE_URL to a PostgreSQL server, e.g. postgres://postgres@127.0.0.1/lab")
    _create_database(base_url, args.database, reuse=args.reuse)
    os.environ["DATABASE_URL"] = _with_database(base_url, args.database)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("ACCESS_LOG_LEVEL", "WARNING")

    import django

    django.setup()
    try:
        from django.core.management import call_command

        from lab.models import Product

        call_command("migrate", verbosity=0)
        if args.reuse and Product.objects.filter(key=PRODUCT).exists():
            print(f"{PRODUCT}: reusing the seeded database {args.database}")
        else:
            started = time.perf_counter()
            _seed(args.units)
            elapsed = time.perf_counter() - started
            print(f"{PRODUCT}: seeded {args.units:,} units in {elapsed:.1f} s")
        _print_statistics_state()
        _time_analysis(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _drop_database(base_url, args.database)


def _seed(units: int) -> None:
    """Units in run (id mod 8) + 1, every factor at that run's level, one measurement each."""
    from django.db import connection, transaction

    from lab.models import Experiment, Metric, Product, Variant
    from lab.selectors.designs import design_fraction
    from lab.services.credentials import api_token_create
    from lab.services.designs import design_create

    user = api_token_create(username="bench").row.user
    product = Product.objects.create(user=user, key=PRODUCT)
    for key in FACTORS:
        experiment = Experiment.objects.create(product=product, key=key)
        for variant in ("low", "high"):
            Variant.objects.create(experiment=experiment, key=variant)
    design = design_create(product=product, actor="bench", key="screen", factors=FACTORS, runs=8)
    fraction = design_fraction(design)
    metric = Metric.objects.create(product=product, key="yield")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")
        cursor.execute(
            """
            INSERT INTO lab_unit (product_id, key, created_at)
            SELECT %s, 'D-SN-' || lpad(g::text, 8, '0'), now() FROM generate_series(1, %s) g
            """,
            [product.id, units],
        )
        # Unit by unit, every factor of a unit together: the order in which decide stores a
        # design's assignments (all factors of a unit's run in one statement).
        experiment_ids, by_run = [], []
        for position, key in enumerate(FACTORS):
            experiment = Experiment.objects.get(product=product, key=key)
            ids = dict(experiment.variants.values_list("key", "id"))
            experiment_ids.append(experiment.id)
            by_run.append(
                [
                    ids["high" if fraction.level(run, position) else "low"]
                    for run in range(1, fraction.runs + 1)
                ]
            )
        cursor.execute(
            """
            INSERT INTO lab_assignment (experiment_id, unit_id, variant_id, source,
                                        created_at, updated_at)
            SELECT (%s::bigint[])[f], u.id, (%s::bigint[])[f][1 + mod(u.id, 8)::int], 'hash',
                   now(), now()
            FROM lab_unit u CROSS JOIN generate_series(1, %s) f
            WHERE u.product_id = %s
            ORDER BY u.id, f
            """,
            [experiment_ids, by_run, len(FACTORS), product.id],
        )
        cursor.execute(
            """
            INSERT INTO lab_measurement (metric_id, unit_id, value, measured_at)
            SELECT %s, u.id, 80 + mod(u.id, 8) + sqrt(-2 * ln(1 - random()))
                   * cos(2 * pi() * random()), now()
            FROM lab_unit u WHERE u.product_id = %s
            """,
            [metric.id, product.id],
        )


def _time_analysis(args: argparse.Namespace) -> None:
    from django.test import Client

    from lab.services.credentials import api_token_create

    token = api_token_create(username="bench").secret
    client = Client()
    path = f"/api/admin/v1/products/{PRODUCT}/designs/screen/analysis"
    durations = []
    for _ in range(args.runs + 1):
        started = time.perf_counter()
        response = client.get(path, {"metric": "yield"}, HTTP_AUTHORIZATION=f"Bearer {token}")
        durations.append(time.perf_counter() - started)
        assert response.status_code == 200, response.content[:500]
        assert response.json()["n"] == args.units, response.json()
    durations = durations[1:]  # the first call warms up
    print(
        f"design analysis over {args.units:,} measured units: {args.runs} runs  "
        f"min {min(durations) * 1000:.0f} ms  "
        f"median {statistics.median(durations) * 1000:.0f} ms  "
        f"max {max(durations) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
