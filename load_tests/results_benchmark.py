"""Benchmark of the results report (docs/contract.md, "Performance targets": 10^6
measurements in under 2 s).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/lab \\
        python load_tests/results_benchmark.py --measurements 1000000

Seeds its own PostgreSQL database (`lab_bench_results` by default, created and migrated by
the script, dropped at the end unless `--keep`): one experiment with 3 variants, 5 metrics
(`--metrics N`: the first N) with spec limits, `measurements / N` units each assigned and
measured on every metric. The
seed is set-based SQL (INSERT ... SELECT generate_series), a few seconds for 10^6 rows;
`--reuse` keeps a database seeded earlier with the same size.

It then calls the report through the whole Django stack (middleware, auth, router,
renderer) with Django's test client, `--runs` times after one warm-up call, and prints
min / median / max, the peak RSS of this process before and after the calls (flat memory:
compare a run at 10^5 with one at 10^6), the Python allocation peak of one report, and the
EXPLAIN ANALYZE plan of the aggregate query. With `--import-rows N` it also times
`manage.py import_measurements` on a generated N-row CSV (into a second product), twice:
once creating every measurement, once updating them all.

With `--analysis-units N` it also seeds a third product, `bench-factorial`: N units, each
assigned in two experiments (`etch`: 3 variants, `anneal`: 2 variants) and measured once
(`thickness`: N measurements), and times through the same stack the factorial analysis
(`etch,anneal`), the control chart of `etch`, and the CSV export of the N units (streamed;
its peak RSS is sampled while the stream is read). `--no-analyze` leaves every seeded table
without planner statistics (PostgreSQL right after a bulk import with autovacuum off).

With `--lots N` the experiment is randomized by lot (`randomize_by` = `lot`): each unit has a
`lot` attribute (N lots of equal size) and every unit of a lot gets the lot's variant, so the
report is the cluster inference of docs/results.md §17. With `--covariate` the report is also
timed with `?covariate=thickness` (docs/results.md §18) over the same data.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
METRICS = [
    # key, lower, nominal, upper, standard deviation of the seeded process
    ("thickness", 0.9, 1.0, 1.1, 0.04),
    ("width", 9.5, 10.0, 10.5, 0.2),
    ("resistance", None, 50.0, 55.0, 2.0),
    ("flatness", 0.0, None, None, 0.01),
    ("weight", 95.0, 100.0, 105.0, 1.5),
]
VARIANTS = [("a", 0.0), ("b", 0.01), ("c", -0.005)]  # key, shift of the mean in SDs × 10
PRODUCT = "bench"
FACTORIAL_PRODUCT = "bench-factorial"
NOISE = "other-tenant"  # another tenant's data in the same tables, which the report skips
EXPERIMENT = "etch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measurements", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--database", default="lab_bench_results")
    parser.add_argument("--reuse", action="store_true", help="keep an earlier seed of this size")
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--import-rows", type=int, default=0, help="also time a CSV import")
    parser.add_argument(
        "--other-tenants",
        type=int,
        default=0,
        help="measurements of another tenant's product in the same tables",
    )
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE")
    parser.add_argument(
        "--analysis-units",
        type=int,
        default=0,
        help="also time the factorial analysis, control chart and export over N units",
    )
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="leave the seeded tables without planner statistics (never analyzed)",
    )
    parser.add_argument(
        "--lots", type=int, default=0, help="randomize the experiment by lot, with N lots"
    )
    parser.add_argument(
        "--covariate", action="store_true", help="also time the report with ?covariate="
    )
    parser.add_argument(
        "--metrics",
        type=int,
        default=len(METRICS),
        choices=range(1, len(METRICS) + 1),
        metavar=f"1..{len(METRICS)}",
        help="measure each unit on the first N metrics: `measurements / N` units "
        "(1: one unit per measurement)",
    )
    args = parser.parse_args()
    if args.covariate and args.metrics < 2:
        parser.error("--covariate needs --metrics 2 or more (the covariate and a response)")
    METRICS[:] = METRICS[: args.metrics]

    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url.startswith(("postgres://", "postgresql://")):
        sys.exit("set DATABASE_URL to a PostgreSQL server, e.g. postgres://postgres@127.0.0.1/lab")
    _create_database(base_url, args.database, reuse=args.reuse)
    os.environ["DATABASE_URL"] = _with_database(base_url, args.database)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("ACCESS_LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))

    import django

    django.setup()
    try:
        _run(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            _drop_database(base_url, args.database)


def _run(args: argparse.Namespace) -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    for product, measurements in ((PRODUCT, args.measurements), (NOISE, args.other_tenants)):
        units = measurements // len(METRICS)
        if _seeded_size(product) == units * len(METRICS):
            if units:
                print(f"{product}: reusing the seed of {units * len(METRICS):,} measurements")
            continue
        started = time.perf_counter()
        _seed(
            product, units, analyze=not args.no_analyze, lots=args.lots if product == PRODUCT else 0
        )
        print(
            f"{product}: seeded {units * len(METRICS):,} measurements "
            f"in {time.perf_counter() - started:.1f} s"
        )

    if args.analysis_units and _seeded_size(FACTORIAL_PRODUCT) != args.analysis_units:
        started = time.perf_counter()
        _seed_factorial(args.analysis_units, analyze=not args.no_analyze)
        print(
            f"{FACTORIAL_PRODUCT}: seeded {args.analysis_units:,} units "
            f"in {time.perf_counter() - started:.1f} s"
        )
    _print_statistics_state()
    _time_report(args)
    if args.analysis_units:
        _time_analyses(args)
    if args.explain:
        _explain()
    if args.import_rows:
        _time_import(args.import_rows)


# --- database ------------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin_connection(url: str):
    import psycopg

    return psycopg.connect(_with_database(url, "postgres"), autocommit=True)


def _create_database(url: str, name: str, *, reuse: bool) -> None:
    from psycopg import sql

    with _admin_connection(url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and reuse:
            return
        if exists:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _drop_database(url: str, name: str) -> None:
    from psycopg import sql

    with _admin_connection(url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _seeded_size(product: str) -> int:
    from lab.models import Measurement

    return Measurement.objects.filter(metric__product__key=product).count()


def _seed(product_key: str, units: int, *, analyze: bool = True, lots: int = 0) -> None:
    """One product's dataset, with set-based SQL: seconds for 10^6 measurements."""
    from django.db import connection, transaction

    from lab.models import Experiment, Metric, Product, Variant
    from lab.services.credentials import api_token_create

    user = api_token_create(username=product_key).row.user
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")
        stale = Product.objects.filter(key=product_key).values_list("id", flat=True).first()
        for table, column in (
            ("lab_measurement", "metric_id IN (SELECT id FROM lab_metric WHERE product_id = %s)"),
            (
                "lab_assignment",
                "variant_id IN (SELECT v.id FROM lab_variant v "
                "JOIN lab_experiment e ON e.id = v.experiment_id WHERE e.product_id = %s)",
            ),
            (
                "lab_variant",
                "experiment_id IN (SELECT id FROM lab_experiment WHERE product_id = %s)",
            ),
            ("lab_experiment", "product_id = %s"),
            ("lab_metric", "product_id = %s"),
            ("lab_unit", "product_id = %s"),
            ("lab_product", "id = %s"),
        ):
            cursor.execute(f"DELETE FROM {table} WHERE {column}", [stale or 0])
        if not units:
            return

        product = Product.objects.create(user=user, key=product_key)
        experiment = Experiment.objects.create(
            product=product, key=EXPERIMENT, randomize_by="lot" if lots else None
        )
        variant_ids = [
            Variant.objects.create(experiment=experiment, key=key, is_control=(key == "a")).id
            for key, _ in VARIANTS
        ]
        for key, lower, nominal, upper, _ in METRICS:
            Metric.objects.create(
                product=product,
                key=key,
                lower_limit=lower,
                nominal=nominal,
                upper_limit=upper,
                unit_of_measure="mm",
            )
        cursor.execute("SELECT setseed(%s)", [0.42 if product_key == PRODUCT else 0.17])
        cursor.execute(
            """
            INSERT INTO lab_unit (product_id, key, created_at, attributes)
            SELECT %s, %s || lpad(g::text, 8, '0'), now(),
                   CASE WHEN %s > 0 THEN jsonb_build_object('lot', 'L' || (g %% %s))
                   ELSE '{}'::jsonb END
            FROM generate_series(1, %s) g
            """,
            [product.id, f"{product_key}-SN-", lots, max(lots, 1), units],
        )
        # By lot: every unit of lot L<i> on variant i mod 3; otherwise a random variant.
        cursor.execute(
            """
            INSERT INTO lab_assignment (experiment_id, unit_id, variant_id, source,
                                        created_at, updated_at)
            SELECT %s, u.id,
                   (%s::bigint[])[1 + CASE WHEN %s > 0
                       THEN substring(u.attributes ->> 'lot' from 2)::int %% 3
                       ELSE floor(random() * 3)::int END],
                   'hash', now(), now()
            FROM lab_unit u WHERE u.product_id = %s
            """,
            [experiment.id, variant_ids, lots, product.id],
        )
        # Normal values by Box–Muller: nominal (or a limit) + shift + sd · z.
        shifts = ", ".join(
            f"({variant_id}, {shift})"
            for variant_id, (_, shift) in zip(variant_ids, VARIANTS, strict=True)
        )
        spreads = ", ".join(
            f"('{key}', {nominal if nominal is not None else lower}, {sd})"
            for key, lower, nominal, _, sd in METRICS
        )
        cursor.execute(
            f"""
            INSERT INTO lab_measurement (metric_id, unit_id, value, measured_at)
            SELECT m.id, a.unit_id,
                   spec.centre + spec.sd * (10 * s.shift
                       + sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())),
                   now()
            FROM lab_assignment a
            JOIN (VALUES {shifts}) AS s(variant_id, shift) ON s.variant_id = a.variant_id
            CROSS JOIN lab_metric m
            JOIN (VALUES {spreads}) AS spec(key, centre, sd) ON spec.key = m.key
            WHERE a.experiment_id = %s AND m.product_id = %s
            """,
            [experiment.id, product.id],
        )
    if not analyze:
        return
    # Fresh statistics and visibility map, as autovacuum would leave them on a live server.
    with connection.cursor() as cursor:
        for table in ("lab_unit", "lab_assignment", "lab_measurement", "lab_metric"):
            cursor.execute(f"VACUUM ANALYZE {table}")


# --- measurements --------------------------------------------------------------------------


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _time_report(args: argparse.Namespace) -> None:
    from django.test import Client

    from lab.services.credentials import api_token_create

    token = api_token_create(username="bench").secret
    client = Client()
    url = f"/api/admin/v1/products/{PRODUCT}/experiments/{EXPERIMENT}/results"

    def call():
        response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 200, response.content[:500]
        return response

    call()  # warm-up: imports, connection, PostgreSQL caches
    rss_before = _max_rss_mb()
    durations = []
    for _ in range(args.runs):
        started = time.perf_counter()
        response = call()
        durations.append(time.perf_counter() - started)
    rss_after = _max_rss_mb()
    tracemalloc.start()
    call()
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    report = response.json()
    counted = sum(v["n"] for m in report["metrics"] for v in m["variants"].values())
    print(f"report over {counted:,} measurements, {len(report['metrics'])} metrics")
    print(
        f"results: {args.runs} runs  min {min(durations) * 1000:.0f} ms  "
        f"median {statistics.median(durations) * 1000:.0f} ms  max {max(durations) * 1000:.0f} ms"
    )
    print(
        f"peak RSS: {rss_before:.1f} MB before the runs, {rss_after:.1f} MB after; "
        f"Python allocations during one report: {python_peak / 1024:.0f} KiB"
    )
    print(f"srm: {report['srm']}")
    print(f"inference: {report['inference']}")
    if args.covariate:
        covariate_url = f"{url}?covariate=thickness"
        client.get(covariate_url, HTTP_AUTHORIZATION=f"Bearer {token}")  # warm-up
        durations = []
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.get(covariate_url, HTTP_AUTHORIZATION=f"Bearer {token}")
            durations.append(time.perf_counter() - started)
            assert response.status_code == 200, response.content[:500]
        print(
            f"results?covariate=thickness: {args.runs} runs  min {min(durations) * 1000:.0f} ms  "
            f"median {statistics.median(durations) * 1000:.0f} ms  "
            f"max {max(durations) * 1000:.0f} ms"
        )


def _explain() -> None:
    from django.db import connection

    from lab.analysis.results import experiment_results
    from lab.models import Experiment

    experiment = Experiment.objects.get(product__key=PRODUCT, key=EXPERIMENT)
    with connection.execute_wrapper(_explaining):
        experiment_results(experiment=experiment)


def _explaining(execute, sql, params, many, context):
    if sql.lstrip().upper().startswith("SELECT"):
        execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params, many, context)
        rows = context["cursor"].fetchall()
        print(f"\n{sql}\n" + "\n".join(row[0] for row in rows))
        return execute(sql, params, many, context)
    return execute(sql, params, many, context)


def _time_import(rows: int) -> None:
    from django.core.management import call_command

    from lab.models import Measurement, Metric, Product, Unit

    product, _ = Product.objects.get_or_create(
        user=Product.objects.get(key=PRODUCT).user, key="bench-import"
    )
    # The first import creates every measurement, the second updates them all.
    Measurement.objects.filter(metric__product=product).delete()
    Unit.objects.filter(product=product).delete()
    metric_keys = []
    for key, lower, nominal, upper, _ in METRICS:
        Metric.objects.get_or_create(
            product=product,
            key=key,
            defaults={"lower_limit": lower, "nominal": nominal, "upper_limit": upper},
        )
        metric_keys.append(key)
    rng = random.Random(7)
    with tempfile.NamedTemporaryFile("w", suffix=".csv", newline="", delete=False) as handle:
        writer = csv.writer(handle)
        writer.writerow(["unit", "metric", "value", "measured_at"])
        for i in range(rows):
            writer.writerow(
                [
                    f"LOT7-{i // len(metric_keys):07d}",
                    metric_keys[i % len(metric_keys)],
                    repr(rng.gauss(1.0, 0.05)),
                    "2025-03-01T08:00:00Z",
                ]
            )
        path = handle.name
    try:
        for label in ("create", "update"):
            output = StringIO()
            started = time.perf_counter()
            call_command(
                "import_measurements",
                path,
                "--product",
                product.key,
                "--user",
                "bench",
                "--no-progress",
                stdout=output,
            )
            elapsed = time.perf_counter() - started
            print(
                f"import {rows:,} rows ({label}): {elapsed:.1f} s, "
                f"peak RSS {_max_rss_mb():.1f} MB — {output.getvalue().strip()}"
            )
    finally:
        os.unlink(path)


# --- the analyses over 10^6 units ----------------------------------------------------------


def _seed_factorial(units: int, *, analyze: bool) -> None:
    from django.db import connection, transaction

    from lab.models import Experiment, Metric, Product, Variant
    from lab.services.credentials import api_token_create

    user = api_token_create(username="bench").row.user
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")
        product = Product.objects.create(user=user, key=FACTORIAL_PRODUCT)
        metric = Metric.objects.create(
            product=product, key="thickness", lower_limit=0.9, nominal=1.0, upper_limit=1.1
        )
        cursor.execute(
            """
            INSERT INTO lab_unit (product_id, key, created_at)
            SELECT %s, 'F-SN-' || lpad(g::text, 8, '0'), now() FROM generate_series(1, %s) g
            """,
            [product.id, units],
        )
        for key, variants in (("etch", ["short", "mid", "long"]), ("anneal", ["cool", "hot"])):
            experiment = Experiment.objects.create(product=product, key=key)
            ids = [Variant.objects.create(experiment=experiment, key=v).id for v in variants]
            cursor.execute(
                """
                INSERT INTO lab_assignment (experiment_id, unit_id, variant_id, source,
                                            created_at, updated_at)
                SELECT %s, u.id, (%s::bigint[])[1 + floor(random() * %s)::int], 'hash',
                       now(), now()
                FROM lab_unit u WHERE u.product_id = %s
                """,
                [experiment.id, ids, len(ids), product.id],
            )
        cursor.execute(
            """
            INSERT INTO lab_measurement (metric_id, unit_id, value, measured_at)
            SELECT %s, u.id, 1.0 + 0.04 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()),
                   now() - mod(u.id, 100000) * interval '1 second'
            FROM lab_unit u WHERE u.product_id = %s
            """,
            [metric.id, product.id],
        )
    if analyze:
        with connection.cursor() as cursor:
            for table in ("lab_unit", "lab_assignment", "lab_measurement"):
                cursor.execute(f"VACUUM ANALYZE {table}")


def _print_statistics_state() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, last_analyze, last_autoanalyze FROM pg_stat_user_tables "
            "WHERE relname IN ('lab_unit', 'lab_assignment', 'lab_measurement', 'lab_designunit') "
            "ORDER BY relname"
        )
        for name, manual, auto in cursor.fetchall():
            state = "never analyzed" if manual is None and auto is None else "analyzed"
            print(f"{name}: {state}")


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _time_analyses(args: argparse.Namespace) -> None:
    from django.test import Client

    from lab.services.credentials import api_token_create

    token = api_token_create(username="bench").secret
    client = Client()
    base = f"/api/admin/v1/products/{FACTORIAL_PRODUCT}"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    for label, path, query in (
        ("factorial", "/analysis/factorial", {"experiments": "etch,anneal", "metric": "thickness"}),
        ("control chart", "/experiments/etch/control-chart", {"metric": "thickness"}),
    ):
        durations = []
        for _ in range(args.runs + 1):
            started = time.perf_counter()
            response = client.get(base + path, query, **auth)
            durations.append(time.perf_counter() - started)
            assert response.status_code == 200, response.content[:500]
        durations = durations[1:]  # the first call warms up
        print(
            f"{label} over {args.analysis_units:,} measurements: {args.runs} runs  "
            f"min {min(durations) * 1000:.0f} ms  "
            f"median {statistics.median(durations) * 1000:.0f} ms  "
            f"max {max(durations) * 1000:.0f} ms"
        )
    baseline = _current_rss_mb()
    peak, size, rows = baseline, 0, 0
    started = time.perf_counter()
    response = client.get(base + "/export.csv", **auth)
    assert response.status_code == 200
    for chunk in response.streaming_content:
        size += len(chunk)
        rows += chunk.count(b"\n")
        peak = max(peak, _current_rss_mb())
    elapsed = time.perf_counter() - started
    print(
        f"export.csv: {rows - 1:,} units, {size / 2**20:.1f} MiB in {elapsed:.1f} s; "
        f"RSS {baseline:.1f} MB before, peak {peak:.1f} MB while streaming"
    )


if __name__ == "__main__":
    main()
