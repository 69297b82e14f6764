"""What one PostgreSQL holds at Lab's row sizes (docs/scaling.md §1).

    python load_tests/row_sizes.py                       # 10^6 assignments and measurements
    python load_tests/row_sizes.py --rows 100000 --keep  # smaller; keep the database

Creates a throwaway database (`lab_rowsizes_<random>`) on `--database-url` (default
`$DATABASE_URL`'s server), migrates it, and builds with set-based SQL:

- one product with three experiments (2, 3 and 2 variants), as the decide benchmark;
- `rows / 3` units with keys like `user-000123456`, inserted in random key order (as traffic
  brings them), each assigned in the three experiments: `rows` assignments;
- five metrics, each measured on `rows / 5` of the units: `rows` measurements.

Then `VACUUM ANALYZE`, and prints for lab_unit, lab_assignment and lab_measurement the
heap, every index and `pg_total_relation_size`, per row, as a Markdown table and one JSON
line. The database is dropped at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("lab_unit", "lab_assignment", "lab_measurement")
EXPERIMENTS = {"exp-a": ["a1", "a2"], "exp-b": ["b1", "b2", "b3"], "exp-c": ["c1", "c2"]}
METRICS = ("thickness", "width", "resistance", "flatness", "weight")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _admin(url: str):
    import psycopg

    return psycopg.connect(_with_database(url, "postgres"), autocommit=True)


def seed(rows: int) -> dict:
    from django.db import connection, transaction

    from lab.models import Experiment, Metric, Product, Variant
    from lab.services.credentials import api_token_create

    user = api_token_create(username="rowsizes").row.user
    units = -(-rows // 3)
    timings = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 0")
        product = Product.objects.create(user=user, key="rowsizes")
        experiment_variants = {}
        for key, variants in EXPERIMENTS.items():
            experiment = Experiment.objects.create(product=product, key=key)
            experiment_variants[experiment.id] = [
                Variant.objects.create(experiment=experiment, key=v).id for v in variants
            ]
        metric_ids = [Metric.objects.create(product=product, key=key).id for key in METRICS]
        cursor.execute("SELECT setseed(0.42)")
        started = time.perf_counter()
        cursor.execute(
            """
            INSERT INTO lab_unit (product_id, key, created_at)
            SELECT %s, 'user-' || lpad(g::text, 9, '0'), now()
            FROM generate_series(0, %s - 1) g ORDER BY random()
            """,
            [product.id, units],
        )
        timings["units_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for experiment_id, variant_ids in experiment_variants.items():
            cursor.execute(
                """
                INSERT INTO lab_assignment (experiment_id, unit_id, variant_id, source,
                                            created_at, updated_at)
                SELECT %s, u.id, (%s::bigint[])[1 + (u.id %% %s)], 'hash', now(), now()
                FROM lab_unit u WHERE u.product_id = %s ORDER BY u.id
                """,
                [experiment_id, variant_ids, len(variant_ids), product.id],
            )
        cursor.execute(
            "DELETE FROM lab_assignment WHERE id IN (SELECT id FROM lab_assignment "
            "ORDER BY id DESC LIMIT (SELECT count(*) - %s FROM lab_assignment))",
            [rows],
        )
        timings["assignments_s"] = time.perf_counter() - started
        started = time.perf_counter()
        per_metric = -(-rows // len(METRICS))
        for metric_id in metric_ids:
            cursor.execute(
                """
                INSERT INTO lab_measurement (metric_id, unit_id, value, measured_at)
                SELECT %s, u.id, 10 + random(), now()
                FROM (SELECT id FROM lab_unit WHERE product_id = %s ORDER BY id LIMIT %s) u
                """,
                [metric_id, product.id, per_metric],
            )
        cursor.execute(
            "DELETE FROM lab_measurement WHERE id IN (SELECT id FROM lab_measurement "
            "ORDER BY id DESC LIMIT (SELECT count(*) - %s FROM lab_measurement))",
            [rows],
        )
        timings["measurements_s"] = time.perf_counter() - started
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"VACUUM ANALYZE {table}")
    return timings


def sizes() -> dict:
    from django.db import connection

    result = {}
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"SELECT count(*) FROM {table}")
            count = cursor.fetchone()[0]
            cursor.execute(
                """
                SELECT pg_relation_size(%s::regclass),
                       pg_table_size(%s::regclass) - pg_relation_size(%s::regclass),
                       pg_indexes_size(%s::regclass),
                       pg_total_relation_size(%s::regclass)
                """,
                [table] * 5,
            )
            heap, toast_and_maps, indexes, total = cursor.fetchone()
            cursor.execute(
                """
                SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid),
                       pg_get_indexdef(i.indexrelid)
                FROM pg_index i WHERE i.indrelid = %s::regclass ORDER BY 2 DESC, 1
                """,
                [table],
            )
            result[table] = {
                "rows": count,
                "heap_bytes": heap,
                "toast_fsm_vm_bytes": toast_and_maps,
                "indexes_bytes": indexes,
                "total_bytes": total,
                "total_bytes_per_row": total / count if count else None,
                "heap_bytes_per_row": heap / count if count else None,
                "indexes": [
                    {
                        "name": name,
                        "bytes": size,
                        "bytes_per_row": size / count if count else None,
                        "definition": definition.split(" USING ", 1)[1],
                    }
                    for name, size, definition in cursor.fetchall()
                ],
            }
        cursor.execute("SHOW server_version")
        result["server_version"] = cursor.fetchone()[0]
    return result


def render(figures: dict, rows: int) -> str:
    lines = [
        f"PostgreSQL {figures['server_version']}, {rows:,} assignments and measurements "
        "(after VACUUM ANALYZE):",
        "",
        "| table | rows | heap | indexes | total (pg_total_relation_size) | bytes per row |",
        "|---|---|---|---|---|---|",
    ]
    for table in TABLES:
        t = figures[table]
        lines.append(
            f"| `{table}` | {t['rows']:,} | {t['heap_bytes'] / 2**20:.1f} MiB "
            f"| {t['indexes_bytes'] / 2**20:.1f} MiB | {t['total_bytes'] / 2**20:.1f} MiB "
            f"| {t['total_bytes_per_row']:.0f} (heap {t['heap_bytes_per_row']:.0f}) |"
        )
    lines += ["", "| index | bytes per row | definition |", "|---|---|---|"]
    for table in TABLES:
        for index in figures[table]["indexes"]:
            lines.append(
                f"| `{index['name']}` | {index['bytes_per_row']:.1f} | `{index['definition']}` |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL URL: its server gets the throwaway database",
    )
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    args = parser.parse_args(argv)
    if args.rows < 3:
        parser.error("--rows must be at least 3")
    if not args.database_url.startswith(("postgres://", "postgresql://")):
        parser.error("--database-url must be a PostgreSQL URL")
    name = f"lab_rowsizes_{secrets.token_hex(4)}"
    with _admin(args.database_url) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = _with_database(args.database_url, name)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ.setdefault("ACCESS_LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        print(f"database {name}: seeding {args.rows:,} rows per table", file=sys.stderr)
        timings = seed(args.rows)
        figures = sizes()
        figures["seed_timings"] = timings
        figures["rows"] = args.rows
        print(render(figures, args.rows))
        print("ROWSIZES_JSON " + json.dumps(figures))
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            with _admin(args.database_url) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
