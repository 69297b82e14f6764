"""The load tests' own tooling: the benchmark seed, and a few seconds of the benchmark runner."""

import json
import os
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.core.management import call_command

from deploy import front as nginx_front
from lab.dev.benchmark_seed import unit_key
from lab.models import Assignment, AssignmentSource, Experiment, Status, Unit
from rules.credentials import CLIENT_KEY_KIND, matches, split_prefix
from tests.conftest import requires_postgres

ROOT = Path(__file__).resolve().parents[2]


def seed(*args: str) -> dict:
    output = StringIO()
    call_command("seed_benchmark", *args, stdout=output)
    return json.loads(output.getvalue().strip().splitlines()[-1])


@pytest.mark.django_db
def test_seed_benchmark__prints_live_credentials_and_three_enabled_experiments(client):
    # When
    printed = seed("--assignments", "30")
    # Then three enabled experiments with 2-3 enabled variants each
    experiments = Experiment.objects.filter(product__key=printed["product"])
    assert experiments.filter(status=Status.ENABLED).count() == 3
    for experiment in experiments:
        assert 2 <= experiment.variants.filter(status=Status.ENABLED).count() <= 3
    assert printed["experiments"] == {
        e.key: list(e.variants.order_by("id").values_list("key", flat=True)) for e in experiments
    }
    # And the client key is a live key of that product
    prefix = split_prefix(printed["client_key"], CLIENT_KEY_KIND)
    key_row = experiments[0].product.client_keys.get(prefix=prefix)
    assert matches(key_row.digest, printed["client_key"])
    # And the admin token sees the product
    response = client.get(
        f"/api/admin/v1/products/{printed['product']}",
        HTTP_AUTHORIZATION=f"Bearer {printed['admin_token']}",
    )
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_seed_benchmark__assignments__units_numbered_from_zero_assigned_everywhere():
    # When
    printed = seed("--assignments", "30")
    # Then 10 units, each with one assignment per experiment, on one of its variants
    assert printed["known_units"] == {"prefix": "bench-", "digits": 9, "count": 10}
    assert printed["assignments_created"] == printed["assignments_total"] == 30
    units = Unit.objects.filter(key__in=[unit_key(n) for n in range(10)])
    assert units.count() == 10
    for assignment in Assignment.objects.select_related("variant", "experiment"):
        assert assignment.variant.experiment_id == assignment.experiment_id
        assert assignment.source == AssignmentSource.FORCED
    pairs = set(Assignment.objects.values_list("unit_id", "experiment_id"))
    assert len(pairs) == 30
    # And every variant got some units (round-robin), not all the first one
    used = set(Assignment.objects.values_list("variant__key", flat=True))
    assert used == {v for variants in printed["experiments"].values() for v in variants}


@pytest.mark.django_db
def test_seed_benchmark__twice__reuses_the_product_and_keeps_existing_rows():
    first = seed("--assignments", "30")
    # When
    second = seed("--assignments", "60")
    # Then the same product, new credentials, only the missing rows added
    assert second["product"] == first["product"]
    assert second["created"] is False
    assert second["client_key"] != first["client_key"]
    assert second["assignments_created"] == 30
    assert second["assignments_total"] == 60
    assert second["known_units"]["count"] == 20


@pytest.mark.django_db
def test_seed_benchmark__negative_assignments__command_error():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="assignments"):
        seed("--assignments", "-1")


@pytest.mark.e2e
def test_bench_quick__through_the_production_front__measures_every_shape(tmp_path):
    # Given PostgreSQL (the runner creates its own database there), wrk and nginx
    requires_postgres()
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    if nginx_front.nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx)")
    parts = urlsplit(os.environ["DATABASE_URL"])
    server_url = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    # When a few seconds of the benchmark run, as RESULTS.md's commands do
    completed = subprocess.run(
        [
            sys.executable,
            "load_tests/bench.py",
            "--quick",
            "--phases",
            "main",
            "--scenarios",
            "noop,warm,cold,line,new",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--known-warmup",
            "1",
            "--cold-units",
            "300",
            "--line-window",
            "1",
            "--database-url",
            server_url,
            "--redis-url",
            settings.REDIS_URL or "none",
            "--server",
            "default=-w 2",
            # The peer (Unleash on Node) has a benchmark of its own to be in, not the smoke.
            "--no-peer",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    # Then it prints the throughput table with every scenario and the ratio to the ceiling
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = completed.stdout
    for title in (
        "no-op ceiling",
        "decide, known unit: warm (every unit repeated)",
        "decide, known unit: cold memory (first repeat)",
        "decide, production line (3–5 times, then never)",
        "decide, new unit",
    ):
        assert f"| {title} |" in table, table
    assert "Known-unit decide (warm) vs the no-op ceiling" in table
    report = json.loads((tmp_path / "report.json").read_text())
    # And the server was the production front: deploy/serve.py's nginx before gunicorn
    (server,) = report["servers"]
    assert server["front"] == "nginx"
    assert "deploy/serve.py --front nginx" in server["command"]
    assert "nginx" in (tmp_path / "server-default.log").read_text()
    # And every shape answered without an error, the cold one from the seeded cold units
    rows = report["main_summary"]["default"]
    for name in ("warm", "cold", "line", "new"):
        assert rows[name]["errors"] == 0, rows[name]
        assert rows[name]["rps"]["median"] > 0
    assert report["meta"]["shapes"]["cold_units"] == 300
    assert len(rows["cold"]["rounds"]) == 1
