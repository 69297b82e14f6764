"""The decide API on a real multi-worker gunicorn: metrics summed over workers, admin changes
seen by every worker on the very next decision."""

import pytest
import requests

pytestmark = pytest.mark.e2e

DECIDE_OK = ("lab_decide_requests_total", (("endpoint", "decide"), ("outcome", "ok")))
CREATED = ("lab_assignments_created_total", ())
DURATION_COUNT = ("lab_decide_duration_seconds_count", (("endpoint", "decide"),))


def test_e2e__n_decisions__every_scrape_counts_n(server, seeded):
    # Given
    key = seeded["client_key"]
    before = server.metrics()
    n = 45
    # When n new units are decided, spread over the workers
    answers = server.in_parallel(
        [lambda i=i: server.decide(key, f"M-{i}") for i in range(n)], threads=6
    )
    # Then every scrape (each may be served by another worker) sums all workers' values
    assert all(set(a) == {"etch", "anneal", "litho"} for a in answers)
    stored = sum(1 for a in answers for v in a.values() if v is not None)
    for _ in range(2 * server.workers):
        after = server.metrics()
        assert after[DECIDE_OK] - before.get(DECIDE_OK, 0) == n
        assert after[DURATION_COUNT] - before.get(DURATION_COUNT, 0) == n
        assert after[CREATED] - before.get(CREATED, 0) == stored


def test_e2e__admin_toggle__seen_by_every_worker_on_the_next_decision(server, seeded):
    # Given units with their variants
    key, product, token = seeded["client_key"], seeded["product"], seeded["api_token"]
    units = [f"T-{i}" for i in range(4)]
    before = {unit: server.decide(key, unit) for unit in units}
    admin = {"Authorization": f"Bearer {token}"}
    # When an operator disables the product through the admin API
    response = requests.patch(
        server.url(f"/api/admin/v1/products/{product}"),
        json={"status": "disabled"},
        headers=admin,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    # Then every next decision, whichever worker serves it, answers no variant
    for _ in range(3 * server.workers):
        assert set(server.decide(key, units[0]).values()) == {None}
    # And after re-enabling it, every unit gets its variants back
    requests.patch(
        server.url(f"/api/admin/v1/products/{product}"),
        json={"status": "enabled"},
        headers=admin,
        timeout=30,
    )
    for _ in range(server.workers):
        assert {unit: server.decide(key, unit) for unit in units} == before
    # And pausing one experiment is seen at once too
    server.orm("set_experiment_status", product=product, experiment="etch", status="disabled")
    for _ in range(3 * server.workers):
        assert server.decide(key, units[0], experiments=["etch"]) == {"etch": None}


def test_e2e__batch_and_bad_requests(server, seeded):
    key = seeded["client_key"]
    units = [f"B-{i}" for i in range(1000)]
    response = server.post("/api/v1/decide/batch", {"units": units}, key)
    assert response.status_code == 200
    assert [d["unit"] for d in response.json()["decisions"]] == units
    assert server.post("/api/v1/decide/batch", {"units": [*units, "x"]}, key).status_code == 413
    assert server.post("/api/v1/decide", {"unit": "a/b"}, key).status_code == 422
    assert server.post("/api/v1/decide", {"unit": "SN"}, "lck_0123456789ab_x").status_code == 401
    assert server.get("/readyz").status_code == 200


def test_e2e__sync_workers__each_answer_closes_its_connection(server, seeded):
    """gunicorn.conf.py's sync workers serve one connection per request and accept only when
    free, so nginx's requests always reach a free worker (nginx keeps the clients'
    connections alive: tests/e2e/test_production_front.py)."""
    import http.client
    import json as json_module
    from urllib.parse import urlsplit

    address = urlsplit(server.base_url)
    headers = {
        "Authorization": f"Bearer {seeded['client_key']}",
        "Content-Type": "application/json",
    }
    for unit in ("ka-1", "ka-2", "ka-1"):
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        try:
            connection.request("POST", "/api/v1/decide", json_module.dumps({"unit": unit}), headers)
            response = connection.getresponse()
            assert response.status == 200
            assert json_module.loads(response.read())["unit"] == unit
            assert response.getheader("Connection", "").lower() == "close"
        finally:
            connection.close()
