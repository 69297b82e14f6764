"""Drill: the PostgreSQL primary killed under load, on the Patroni cluster of deploy/ha.

`python -m deploy.ha drill` (what `make ha-drill` runs) brings up etcd and two PostgreSQL
nodes under Patroni (a primary and a synchronous standby) on free loopback ports, starts Lab
behind its production front (nginx and gunicorn) against the multi-host DATABASE_URL, loads
it with decides (new units, known units, batches) and admin writes, SIGKILLs the primary's
postmaster, then checks every acknowledged answer against the new primary's rows, the old
primary's return as a standby, and a planned switchover. Its last line is the summary.
"""

import json
import shutil
import subprocess
import sys

import pytest

from deploy.front import nginx_binary
from deploy.ha.cluster import postgres_bindir
from tests.drills.harness import REPO, unavailable

pytestmark = pytest.mark.e2e

DRILL_TIMEOUT_SECONDS = 600


def test_failover__primary_killed_under_load__nothing_acknowledged_lost_and_back_within_15s():
    for tool in ("patroni", "patronictl", "etcd"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (apt-get install patroni etcd-server)")
    if nginx_binary() is None or postgres_bindir() is None:
        unavailable("nginx or PostgreSQL's server binaries are not installed")

    # Given Lab on a Patroni cluster, under decide and admin load through its front
    # When the primary's postmaster is killed, and later a switchover is made
    run = subprocess.run(
        [sys.executable, "-m", "deploy.ha", "drill"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DRILL_TIMEOUT_SECONDS,
    )
    lines = run.stdout.strip().splitlines()
    assert len(lines) >= 2, f"no summary (exit {run.returncode}):\n{run.stderr[-4000:]}"
    summary, details = json.loads(lines[-1]), json.loads(lines[-2])
    report = f"{summary}\n{details}\n{run.stderr[-3000:]}"

    # Then every acknowledged decide and admin write is on the new primary, once, as answered
    assert summary["acknowledged_assignments"] > 0, report
    assert summary["admin_writes_acknowledged"] > 0, report
    assert summary["lost"] == summary["duplicates"] == summary["wrong"] == 0, report
    assert summary["admin_writes_lost"] == 0, report
    # And decide wrote again within 15 s of the kill, with 503 + Retry-After meanwhile
    assert summary["seconds_to_first_good_answer"] is not None, report
    assert summary["seconds_to_first_good_answer"] <= 15, report
    failover = details["failover"]
    assert all(kind.endswith(" 503") for kind in failover["errors_by_kind"]), report
    assert failover["503_without_retry_after_or_detail"] == 0, report
    # And no request hung: each was answered well within the client's 5 s timeout
    assert failover["longest_answer_seconds"] < 5, report
    # And the old primary is a standby again, and the known-unit memory follows the new one
    assert summary["old_primary_rejoined"] is True, report
    assert details["known_unit_memory_follows_new_primary"] is True, report
    # And the switchover failed only requests in flight when the old primary stopped
    # accepting; later ones waited for the new primary, within the client's timeout
    switchover = details["switchover"]
    assert switchover["old_primary_stopped_accepting_within_seconds"] is not None, report
    assert switchover["errors_outside_in_flight"] == 0, report
    assert switchover["slowest_answer_after_handover_seconds"] < 5, report
    assert switchover["lost"] == switchover["duplicates"] == switchover["wrong"] == 0, report
    assert run.returncode == 0, report
