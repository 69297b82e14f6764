"""Run by tests/deploy/test_replica_reads.py in a process of its own, with DATABASE_URL (the
primary) and DATABASE_REPLICA_URL (its standby) set: drives the admin API with Django's test
client and prints what it saw as one JSON object."""

import json
import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

import psycopg  # noqa: E402
from django.test import Client  # noqa: E402

from lab.replica import replica_reads  # noqa: E402
from lab.services.credentials import api_token_create  # noqa: E402


def counts() -> dict[str, float]:
    return {
        outcome: replica_reads.labels(outcome=outcome)._value.get()
        for outcome in ("replica", "fallback_down", "fallback_lag")
    }


def main() -> None:
    nonce = sys.argv[1]
    standby = os.environ.get("PROBE_STANDBY_URL", "")
    token = api_token_create(username=f"replica-{nonce}").secret
    client = Client(headers={"authorization": f"Bearer {token}"})
    base = f"/api/admin/v1/products/p{nonce}"

    def post(path, body):
        response = client.post(path, json.dumps(body), content_type="application/json")
        assert response.status_code in (200, 201), (path, response.status_code, response.content)
        return response.json()

    def measurements():
        response = client.get(f"{base}/measurements")
        assert response.status_code == 200, response.content
        return response.json()

    def export():
        """The CSV export's units and the staleness its header gives."""
        response = client.get(f"{base}/export.csv")
        assert response.status_code == 200, response.content
        text = b"".join(response.streaming_content).decode()
        units = [line.split(",")[0] for line in text.splitlines()[1:]]
        return {"units": units, "lag": float(response["Lab-Replica-Lag-Seconds"])}

    post("/api/admin/v1/products", {"key": f"p{nonce}"})
    post(f"{base}/metrics", {"key": "thickness"})
    post(f"{base}/experiments", {"key": "etch", "variants": [{"key": "a"}, {"key": "b"}]})
    post(f"{base}/experiments", {"key": "anneal", "variants": [{"key": "c"}, {"key": "d"}]})
    post(f"{base}/designs", {"key": "screen", "factors": ["etch", "anneal"], "runs": 4})
    rows = [{"metric": "thickness", "unit": f"u{i}", "value": float(i)} for i in range(3)]
    post(f"{base}/measurements", {"measurements": rows})
    seen: dict = {"counts_before": counts()}
    if standby:
        deadline = time.monotonic() + 20
        while measurements()["count"] < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        seen["caught_up"] = measurements()
        seen["results"] = client.get(f"{base}/experiments/etch/results").json()
        seen["control_chart"] = client.get(
            f"{base}/experiments/etch/control-chart?metric=thickness"
        ).json()
        seen["design"] = client.get(f"{base}/designs/screen/analysis?metric=thickness").json()
        svg = client.get(f"{base}/experiments/etch/results.svg?metric=thickness")
        seen["results_svg"] = {
            "status": svg.status_code,
            "lag": float(svg["Lab-Replica-Lag-Seconds"]),
        }
        seen["export_caught_up"] = export()
        with psycopg.connect(standby, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
            try:
                # A write while the standby stands still: it lands on the primary...
                post(
                    f"{base}/measurements",
                    {"measurements": [{"metric": "thickness", "unit": "late", "value": 9.0}]},
                )
                time.sleep(float(os.environ["PROBE_LAG_WAIT"]))
                # ...and a read within the lag bound does not see it (the replica answered)
                seen["paused"] = measurements()
                seen["export_paused"] = export()
            finally:
                conn.execute("SELECT pg_wal_replay_resume()")
    else:
        seen["down"] = measurements()
        seen["export_down"] = export()
    seen["counts_after"] = counts()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
