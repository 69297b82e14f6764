"""Drill: Redis goes away under load, then comes back.

Decide keeps answering from the database while Redis is down (never a 5xx), counts the
failed lookups as lab_config_cache_total{result="error"}, and uses the shared cache again by
itself once Redis is back: hits grow again and errors stop growing, without restarting Lab.
"""

import itertools
import time

import pytest

from tests.drills.harness import (
    Load,
    batch_request,
    call,
    decide_request,
    describe,
    metric_total,
    ofrep_request,
    scrape_metrics,
    wait_until,
)

pytestmark = pytest.mark.e2e

CACHE = "lab_config_cache_total"


def test_redis_stopped_during_load__no_5xx_and_cache_used_again_after_restart(
    start_lab, redis, seed
):
    # Given Lab under a steady mix of warm decisions, first decisions, batches and OFREP
    lab = start_lab()

    def make_request(thread: int, i: int):
        if i % 5 == 4:
            return batch_request([f"redis-{thread}-{i}-{n}" for n in range(3)])
        if i % 5 == 3:
            return ofrep_request(f"redis-{thread}-{i}", "color")
        if i % 2:
            return decide_request(f"redis-{thread}-{i}")
        return decide_request(f"redis-warm-{i % 10}")

    # A worker reads the shared cache only when its memory holds an older config version,
    # so the drill changes the config (the "knob" experiment's coverage) to make it look.
    coverages = itertools.cycle([0.5, 0.6])
    admin_replies = []

    def change_config():
        reply = call(
            lab.base_url,
            "PATCH",
            f"/api/admin/v1/products/{seed.product}/experiments/knob",
            {"coverage": next(coverages)},
            token=seed.admin_token,
        )
        admin_replies.append(reply)
        time.sleep(0.3)  # lets both workers decide at the new version

    def cache(samples, result):
        return metric_total(samples, CACHE, result=result)

    def lookups(samples):
        return cache(samples, "hit") + cache(samples, "miss") + cache(samples, "error")

    with Load(lab.base_url, seed.client_key, make_request, threads=3, max_seconds=40) as load:
        time.sleep(0.5)
        change_config()
        healthy = scrape_metrics(lab.base_url)

        # When Redis stops and the config changes twice while it is down
        redis.stop()
        change_config()
        change_config()
        during_outage = scrape_metrics(lab.base_url)

        # And Redis comes back on the same port
        redis.start()
        restarted_at = time.monotonic()
        after_restart = scrape_metrics(lab.base_url)

        def cache_hit_again() -> bool:
            change_config()
            return cache(scrape_metrics(lab.base_url), "hit") > cache(after_restart, "hit")

        wait_until(cache_hit_again, 10, "a shared-cache hit after Redis restarted", step=0)
        recovered = scrape_metrics(lab.base_url)
        for _ in range(3):
            change_config()
        final = scrape_metrics(lab.base_url)

    # Then no request failed, during the outage or after it
    failed = [(req, rep) for req, rep in load.replies if rep.status != 200]
    assert not failed, f"{len(failed)} of {len(load.replies)} failed:\n{describe(failed)}"
    assert [r.status for r in admin_replies] == [200] * len(admin_replies), admin_replies
    assert len(load.since(restarted_at)) > 0
    # And the outage was seen and counted, not silently skipped
    assert cache(during_outage, "error") > cache(healthy, "error")
    # And once Redis is back the shared cache serves hits again and errors stop growing
    assert cache(recovered, "hit") > cache(after_restart, "hit")
    assert lookups(final) > lookups(recovered)
    assert cache(final, "error") == cache(recovered, "error"), (recovered, final)
