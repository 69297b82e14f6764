"""No hot-path or report plan depends on ANALYZE having run (docs/operations.md, "Query plans").

tests/lab/plan_probe.py fills a fresh, never-analyzed PostgreSQL database with two products of
20,000 units (and their assignments and measurements), runs decide, the results report, the
factorial analysis and the control chart, and explains every statement they ran (with the
analysis plan settings they ran with). A known unit must be found through an index that is
selective on the unit, never by reading a product's units or assignments.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import requires_postgres

ROOT = Path(__file__).resolve().parents[2]

# Rows a statement may read from one large table: what it needs, with room for a few
# experiments, never a product's worth (20,000).
BUDGET = {
    "decide_known_unit": 10,
    "decide_new_unit": 10,
    "batch_known_units": 1_000,
    # The report reads the experiment's 20,000 assignments and measurements, not the other
    # product's too.
    "results_report": 25_000,
    # The factorial reads the 20,000 assignments of each experiment; the control chart also
    # the product's 20,000 units (for the order), never the other product's.
    "factorial": 25_000,
    "control_chart": 25_000,
}


@pytest.fixture(scope="module")
def plans():
    requires_postgres()
    import psycopg

    parts = urlsplit(os.environ["DATABASE_URL"])
    name = f"lab_plans_{os.getpid()}"
    admin = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {
            **os.environ,
            "DATABASE_URL": urlunsplit(parts._replace(path=f"/{name}")),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "LOG_LEVEL": "WARNING",
            "ACCESS_LOG_LEVEL": "WARNING",
        }
        env.pop("REDIS_URL", None)  # the plans are the database's; no cache needed
        probe = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "lab" / "plan_probe.py")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert probe.returncode == 0, probe.stderr[-3000:]
        yield json.loads(probe.stdout.strip().splitlines()[-1])["scenarios"]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("scenario", sorted(BUDGET))
def test_plans__never_analyzed_database__no_scan_of_a_products_rows(plans, scenario):
    statements = plans[scenario]
    assert statements, f"{scenario} ran no statement the probe could explain"
    too_wide = [
        (statement["sql"], scan)
        for statement in statements
        for scan in statement["scans"]
        if scan["rows_read"] > BUDGET[scenario] or scan["node"] == "Seq Scan"
    ]
    assert too_wide == []


def test_plans__known_unit__found_through_the_unit_key_index(plans):
    unit_scans = [
        scan
        for statement in plans["decide_known_unit"]
        for scan in statement["scans"]
        if scan["relation"] == "lab_unit"
    ]
    assert unit_scans, "decide read no unit"
    assert {scan["index"] for scan in unit_scans} == {"unit_key_unique_per_product"}
