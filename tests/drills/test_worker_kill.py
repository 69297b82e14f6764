"""Drill: a gunicorn worker is killed (SIGKILL) under load.

The master replaces it and requests keep succeeding. The only failures allowed are
connection errors of the requests the dead worker held at the moment it died: at most one
per client connection open then, so at most CLIENT_THREADS (the load sends one request at
a time per thread). No 5xx at all: gunicorn's master does not proxy, so a dead worker shows
as a reset connection, never as an HTTP error.

/metrics stays consistent: in multiprocess mode the dead worker's counters stay in its
files, so the total of lab_decide_requests_total never drops from one scrape to the next,
and over the drill it grows by at least the number of 200 answers the clients received
(each is counted before it is sent) and at most the number of requests sent.
"""

import itertools
import os
import signal
import threading
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
    parse_metrics,
    scrape_metrics,
    wait_until,
)

pytestmark = pytest.mark.e2e

CLIENT_THREADS = 4
REQUESTS = "lab_decide_requests_total"


def test_worker_killed_during_load__replaced_and_requests_total_never_drops(start_lab, seed):
    # Given Lab under load and a scraper reading /metrics every 0.1 s
    lab = start_lab()
    first = metric_total(scrape_metrics(lab.base_url), REQUESTS)
    totals: list[float] = []
    scrape_errors: list[str] = []
    done = threading.Event()

    def scrape_repeatedly():
        while not done.is_set():
            reply = call(lab.base_url, "GET", "/metrics", timeout=5)
            if reply.status == 200:
                totals.append(metric_total(parse_metrics(reply.body), REQUESTS))
            else:
                scrape_errors.append(f"{reply.status} {reply.error}")
            time.sleep(0.1)

    def make_request(thread: int, i: int):
        if i % 10 == 9:
            return batch_request([f"kill-{thread}-{i}-{n}" for n in range(5)])
        if i % 10 == 7:
            return ofrep_request(f"kill-{thread}-{i}", "size")
        return decide_request(f"kill-{thread}-{i}" if i % 2 else f"kill-warm-{i % 10}")

    scraper = threading.Thread(target=scrape_repeatedly, daemon=True)
    load = Load(lab.base_url, seed.client_key, make_request, threads=CLIENT_THREADS, max_seconds=40)
    with load:
        scraper.start()
        time.sleep(1.5)
        # When one worker is killed outright
        victim = min(lab.worker_pids())
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        def replaced() -> bool:
            pids = lab.worker_pids()
            return victim not in pids and len(pids) == lab.workers

        wait_until(replaced, 15, "the master to replace the killed worker")
        # A new worker answers once it has imported the application.
        wait_until(lambda: call(lab.base_url, "GET", "/healthz").status == 200, 10, "healthz")
        replaced_at = time.monotonic()
        time.sleep(2)
    done.set()
    scraper.join(10)
    last = metric_total(scrape_metrics(lab.base_url), REQUESTS)

    replies = load.replies
    errors = [(q, r) for q, r in replies if r.status is None]
    http_failures = [(q, r) for q, r in replies if r.status is not None and r.status != 200]
    # Then no request got an HTTP error
    assert not http_failures, describe(http_failures)
    # And the connection errors are the dead worker's requests, at most one per client
    assert len(errors) <= CLIENT_THREADS, describe(errors, limit=10)
    assert all(r.started <= killed_at for _, r in errors), describe(errors)
    # And once the new worker is up every request succeeds
    after = [(q, r) for q, r in replies if r.started > replaced_at]
    assert after and all(r.status == 200 for _, r in after)
    assert len(scrape_errors) <= 1, scrape_errors
    # And the request total never drops across scrapes
    assert len(totals) > 10
    drops = [(a, b) for a, b in itertools.pairwise(totals) if b < a]
    assert not drops, f"lab_decide_requests_total dropped: {drops}"
    # And it accounts for every answer the clients got, and no more than they asked
    answered = sum(1 for _, r in replies if r.status == 200)
    assert answered <= last - first <= len(replies), (first, last, answered, len(replies))
