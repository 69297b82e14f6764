"""Runs Lab's hot-path, report and analysis statements through EXPLAIN ANALYZE (with the
analysis plan settings where the analysis set them) on a never-analyzed database, as
`python tests/lab/plan_probe.py` with DATABASE_URL naming an empty database.

It migrates the database, fills it with bulk inserts (no ANALYZE: the state of a fresh
restore or a bulk import with autovacuum behind), captures every statement that decide,
the results report and the analyses run, explains each one with the parameters it ran with,
and prints one JSON line: for every scan of a large table, how many rows it read.
tests/lab/test_plans.py asserts on it.
"""

import json
import os
import sys
from pathlib import Path

UNITS = 20_000  # per product; two products, so a scan of a whole table reads 40,000 rows
LARGE_TABLES = ("lab_unit", "lab_assignment", "lab_measurement")


def seed():
    from django.utils import timezone

    from lab.models import Assignment, Experiment, Measurement, Metric, Unit, Variant
    from lab.services.config_version import product_config_changed
    from lab.services.credentials import api_token_create, client_key_create
    from lab.services.products import product_create

    token = api_token_create(username="planner")
    now = timezone.now()
    products = []
    for p in range(2):
        product = product_create(user=token.row.user, key=f"plan-{p}")
        experiments = []
        for key in ("etch", "anneal", "litho"):
            experiment = Experiment.objects.create(product=product, key=key)
            variants = [
                Variant.objects.create(experiment=experiment, key=k) for k in ("a", "b", "c")
            ]
            experiments.append((experiment, variants))
        metric = Metric.objects.create(
            product=product, key="thickness", lower_limit=0, upper_limit=2
        )
        units = Unit.objects.bulk_create(
            [Unit(product=product, key=f"SN-{i}") for i in range(UNITS)], batch_size=5000
        )
        Assignment.objects.bulk_create(
            [
                Assignment(experiment=e, unit=u, variant=vs[i % 3], source="hash")
                for e, vs in experiments
                for i, u in enumerate(units)
            ],
            batch_size=5000,
        )
        Measurement.objects.bulk_create(
            [
                Measurement(metric=metric, unit=u, value=1 + (i % 7) / 100, measured_at=now)
                for i, u in enumerate(units)
            ],
            batch_size=5000,
        )
        product_config_changed(product)
        products.append(product)
    client_key = client_key_create(product=products[0])
    return token.secret, client_key.secret


def capture(run):
    from django.db import connection

    statements = []

    def wrapper(execute, sql, params, many, context):
        statements.append((sql, params, many))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        run()
    return [(sql, params) for sql, params, many in statements if not many]


def scans(plan, found):
    relation = plan.get("Relation Name")
    if relation in LARGE_TABLES:
        rows = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
        rows += plan.get("Rows Removed by Index Recheck", 0)
        found.append(
            {
                "relation": relation,
                "node": plan["Node Type"],
                "index": plan.get("Index Name"),
                "rows_read": rows * plan.get("Actual Loops", 1),
            }
        )
    for child in plan.get("Plans", []):
        scans(child, found)
    return found


def explain(statements):
    from django.db import connection, transaction

    results = []
    settings = None  # the analysis plan's settings, once a statement of the scenario set them
    for sql, params in statements:
        head = sql.lstrip().split(None, 1)[0].upper()
        if head not in ("SELECT", "WITH", "INSERT", "UPDATE"):
            continue
        if sql.lstrip().startswith("SELECT set_config("):
            settings = (sql, params)
            continue
        with transaction.atomic():
            with connection.cursor() as cursor:
                if settings is not None:
                    cursor.execute(*settings)
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
            transaction.set_rollback(True)
        if isinstance(plan, str):
            plan = json.loads(plan)
        results.append({"sql": " ".join(sql.split())[:160], "scans": scans(plan[0]["Plan"], [])})
    return results


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", verbosity=0)
    token, client_key = seed()
    client = Client()
    decide_auth = {"HTTP_AUTHORIZATION": f"Bearer {client_key}"}
    admin_auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def decide(body, path="/api/v1/decide"):
        def run():
            response = client.post(
                path, json.dumps(body), content_type="application/json", **decide_auth
            )
            assert response.status_code == 200, response.content

        return run

    def admin_get(path):
        def run():
            response = client.get("/api/admin/v1/products/plan-0" + path, **admin_auth)
            assert response.status_code == 200, response.content

        return run

    results = admin_get("/experiments/etch/results")

    decide({"unit": "WARM-UP"})()  # compiles the config: later decisions are the hot path
    scenarios = {
        "decide_known_unit": decide({"unit": "SN-1234"}),
        "decide_new_unit": decide({"unit": "NEW-1"}),
        "batch_known_units": decide(
            {"units": [f"SN-{i}" for i in range(100)]}, "/api/v1/decide/batch"
        ),
        "results_report": results,
        "factorial": admin_get("/analysis/factorial?experiments=etch,anneal&metric=thickness"),
        "control_chart": admin_get("/experiments/etch/control-chart?metric=thickness"),
    }
    report = {name: explain(capture(run)) for name, run in scenarios.items()}
    print(json.dumps({"units_per_product": UNITS, "scenarios": report}))


if __name__ == "__main__":
    main()
