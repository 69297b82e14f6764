"""Analysis reads on the real standby of a Patroni cluster (deploy/ha, lab/replica.py).

One cluster for the module (a primary and its synchronous standby, free ports); each test
runs tests/deploy/replica_probe.py in a process of its own with DATABASE_URL on the primary
and DATABASE_REPLICA_URL on the standby (or on a port nobody answers), and reads what the
admin API answered and what lab_replica_reads_total counted.
"""

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deploy.ha.cluster import Cluster, Ports, postgres_bindir
from tests.drills.harness import REPO, free_port, unavailable

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("patroni") is None or shutil.which("etcd") is None:
        unavailable("patroni or etcd is not installed (apt-get install patroni etcd-server)")
    if postgres_bindir() is None:
        unavailable("PostgreSQL's server binaries are not installed")
    home = Path(tempfile.mkdtemp(prefix="lab-replica-reads-"))
    home.chmod(0o755)
    running = Cluster(home / "cluster", Ports.free())
    try:
        running.up()
        yield running
    finally:
        running.down()
        shutil.rmtree(home, ignore_errors=True)


def probe(cluster: Cluster, replica_url: str, **env: str) -> dict:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "TEST_DATABASE_NAME", "PROMETHEUS_MULTIPROC_DIR")
    }
    environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=cluster.database_url,
        PYTHONPATH=str(REPO),
        DATABASE_REPLICA_URL=replica_url,
        **env,
    )
    run = subprocess.run(
        [sys.executable, "tests/deploy/replica_probe.py", secrets.token_hex(4)],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def maintenance(cluster):
    """Patroni in maintenance mode: it would otherwise resume a standby's paused replay."""
    paused = cluster.patronictl("pause", "--wait")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    yield
    resumed = cluster.patronictl("resume", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr


def _standby_url(cluster: Cluster) -> str:
    standby = cluster.sync_standby()
    assert standby is not None, cluster.status()
    return cluster.node_url(standby)


def test_replica_reads__standby_within_the_bound__answers_with_its_lag(cluster, maintenance):
    # Given Lab with the cluster's standby as its replica, and a generous lag bound
    standby = _standby_url(cluster)
    seen = probe(
        cluster,
        standby,
        DATABASE_REPLICA_MAX_LAG_SECONDS="3600",
        PROBE_STANDBY_URL=standby,
        PROBE_LAG_WAIT="1",
    )
    # Then the analysis answers come from the standby, saying how stale they are
    assert seen["caught_up"]["count"] == 3
    assert seen["caught_up"]["replica_lag_seconds"] == 0.0
    assert seen["results"]["replica_lag_seconds"] == 0.0
    assert seen["results"]["experiment"] == "etch"
    assert seen["control_chart"]["replica_lag_seconds"] == 0.0
    assert seen["design"]["replica_lag_seconds"] == 0.0
    assert seen["design"]["design"] == "screen"
    assert seen["results_svg"] == {"status": 200, "lag": 0.0}
    assert seen["export_caught_up"] == {"units": ["u0", "u1", "u2"], "lag": 0.0}
    # And while the standby stands still, a write goes to the primary (it succeeded) and the
    # list read on the standby does not show it yet, with the lag it has
    assert seen["paused"]["count"] == 3
    assert seen["paused"]["replica_lag_seconds"] >= 1.0
    # and the CSV export, streamed after its view returned, read the standby too
    assert seen["export_paused"]["units"] == ["u0", "u1", "u2"]
    assert seen["export_paused"]["lag"] >= 1.0
    after, before = seen["counts_after"], seen["counts_before"]
    assert after["replica"] - before["replica"] >= 8
    assert after["fallback_down"] == after["fallback_lag"] == 0


def test_replica_reads__standby_past_the_lag_bound__primary_answers_and_it_is_counted(
    cluster, maintenance
):
    # Given a lag bound of half a second, and the standby's replay paused for 1.5 s
    standby = _standby_url(cluster)
    seen = probe(
        cluster,
        standby,
        DATABASE_REPLICA_MAX_LAG_SECONDS="0.5",
        PROBE_STANDBY_URL=standby,
        PROBE_LAG_WAIT="1.5",
    )
    # Then the list is read on the primary: the latest write is in it, and it is fresh
    assert seen["paused"]["count"] == 4
    assert seen["paused"]["replica_lag_seconds"] == 0.0
    assert seen["export_paused"] == {"units": ["late", "u0", "u1", "u2"], "lag": 0.0}
    assert seen["counts_after"]["fallback_lag"] - seen["counts_before"]["fallback_lag"] == 2


def test_replica_reads__replica_down__primary_answers_and_it_is_counted(cluster):
    # Given a DATABASE_REPLICA_URL where nothing answers
    seen = probe(cluster, f"postgres://postgres@127.0.0.1:{free_port()}/lab")
    # Then the analysis reads go to the primary, and each such request is counted
    assert seen["down"]["count"] == 3
    assert seen["down"]["replica_lag_seconds"] == 0.0
    assert seen["export_down"] == {"units": ["u0", "u1", "u2"], "lag": 0.0}
    assert seen["counts_after"]["fallback_down"] - seen["counts_before"]["fallback_down"] == 2
