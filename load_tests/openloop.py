"""An open-loop HTTP load generator: requests at a FIXED offered rate, latency from the
moment each request was due.

wrk keeps N connections busy (closed loop): when the server slows down, wrk sends less,
and the slow period hides in fewer samples (coordinated omission). Debian has no wrk2, so
this is the fixed-rate generator the benchmark uses for "p99 at a given offered rate":

- request i is due at t0 + i / rate (or with exponential gaps, --poisson);
- a pool of connection slots sends the due requests; a request waiting for a free slot
  keeps waiting, and that wait counts in its latency (it was due, the server was not ready);
- latency = response fully read - due time; "service" latency (from the actual send) is
  reported too, so the queueing part is visible.

HTTP/1.1 over raw asyncio streams, keep-alive when the server keeps the connection open
(gunicorn's sync workers close it after every response; then each request reconnects, as
with wrk). Prints one JSON object on the last line of stdout.

    python load_tests/openloop.py --url http://127.0.0.1:8000 --scenario known \
        --rate 400 --duration 15 --warmup 3

Scenario settings come from the same environment as the wrk scripts (LAB_CLIENT_KEY,
LAB_KNOWN_UNITS, LAB_KNOWN_OFFSET, LAB_UNIT_PREFIX, LAB_UNIT_DIGITS, LAB_RUN_NONCE,
LAB_BATCH_SIZE, LAB_OFREP_FLAG, LAB_LINE_WINDOW, LAB_LINE_MIN, LAB_LINE_MAX).
"""

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

Scenario = Callable[[int], tuple[str, bytes]]


def scenarios() -> dict[str, Scenario]:
    """Per scenario: request number -> (path, JSON body). Mirrors load_tests/wrk/*.lua."""
    known_units = int(os.environ.get("LAB_KNOWN_UNITS", "1"))
    known_offset = int(os.environ.get("LAB_KNOWN_OFFSET", "0"))
    prefix = os.environ.get("LAB_UNIT_PREFIX", "bench-")
    digits = int(os.environ.get("LAB_UNIT_DIGITS", "9"))
    nonce = os.environ.get("LAB_RUN_NONCE", str(int(time.time())))
    batch_size = int(os.environ.get("LAB_BATCH_SIZE", "1000"))
    flag = os.environ.get("LAB_OFREP_FLAG", "exp-a")
    window = int(os.environ.get("LAB_LINE_WINDOW", "3"))
    line_min = int(os.environ.get("LAB_LINE_MIN", "3"))
    line_max = int(os.environ.get("LAB_LINE_MAX", "5"))

    def known() -> str:
        return f"{prefix}{known_offset + random.randrange(known_units):0{digits}d}"

    def new(i: int, j: int = 0) -> str:
        return f"new-{nonce}-o-{i}-{j}"

    def unit_body(unit: str) -> bytes:
        return json.dumps({"unit": unit}).encode()

    # The line shape (load_tests/wrk/decide_line.lua): whole second -> units due again.
    due: dict[int, list[str]] = {}
    cursor: list[int] = []

    def line(i: int) -> str:
        now = int(time.time())
        if not cursor:
            cursor.append(now)
        while cursor[0] <= now:
            units = due.get(cursor[0])
            if units:
                return units.pop()
            due.pop(cursor[0], None)
            cursor[0] += 1
        unit = f"line-{new(i)}"
        for _ in range(random.randint(line_min, line_max) - 1):
            due.setdefault(now + random.randint(1, window), []).append(unit)
        return unit

    def known_decide(i: int) -> tuple[str, bytes]:
        return "/api/v1/decide", unit_body(known())

    return {
        "floor": lambda i: ("/bench/floor", unit_body(known())),
        "noop": lambda i: ("/bench/noop", unit_body(known())),
        "warm": known_decide,
        "known": known_decide,
        "cold": known_decide,
        "line": lambda i: ("/api/v1/decide", unit_body(line(i))),
        "new": lambda i: ("/api/v1/decide", unit_body(new(i))),
        "batch": lambda i: (
            "/api/v1/decide/batch",
            json.dumps({"units": [new(i, j) for j in range(batch_size)]}).encode(),
        ),
        "ofrep": lambda i: (
            f"/ofrep/v1/evaluate/flags/{flag}",
            json.dumps({"context": {"targetingKey": known()}}).encode(),
        ),
    }


class Connection:
    """One HTTP/1.1 connection slot; reconnects when the server closed the last one."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        reused = self.writer is not None
        if not reused:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            head = await self._send(raw)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            # A kept-alive connection the server closed while it sat idle (gunicorn closes
            # them after its keepalive seconds): no byte of the answer came back, so the
            # request is sent again on a fresh connection, once, as HTTP clients do.
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            head = await self._send(raw)
        return await self._finish(head)

    async def _send(self, raw: bytes) -> bytes:
        """Send the request; the head of its answer."""
        self.writer.write(raw)
        return await self.reader.readuntil(b"\r\n\r\n")

    async def _finish(self, head: bytes) -> int:
        """Read the rest of the answer whose head is `head`; its status."""
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            await self.reader.read()
            close = True
        elif length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


async def run(
    *,
    url: str,
    scenario: Scenario,
    rate: float,
    duration: float,
    warmup: float,
    slots: int,
    poisson: bool,
    timeout: float,
) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    client_key = os.environ.get("LAB_CLIENT_KEY", "")
    total = int((warmup + duration) * rate)
    warmup_count = int(warmup * rate)
    queue: asyncio.Queue = asyncio.Queue()
    results: list[tuple[int, float, float, int]] = []  # (i, latency, service, status)
    errors: dict[str, int] = {}
    lateness: list[float] = []

    def build(i: int) -> bytes:
        path, body = scenario(i)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {client_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def slot() -> None:
        connection = Connection(host, port)
        while True:
            item = await queue.get()
            if item is None:
                connection.close()
                return
            i, due, raw = item
            sent = time.perf_counter()
            try:
                status = await asyncio.wait_for(connection.request(raw), timeout)
            except Exception as exc:  # a refused, reset or timed-out request is a result too
                connection.close()
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
                continue
            finished = time.perf_counter()
            results.append((i, finished - due, finished - sent, status))

    workers = [asyncio.create_task(slot()) for _ in range(slots)]
    started = time.perf_counter()
    due = started
    rng = random.Random(1)
    for i in range(total):
        raw = build(i)
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        lateness.append(time.perf_counter() - due)
        queue.put_nowait((i, due, raw))
        due += rng.expovariate(rate) if poisson else 1 / rate
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    measured_from = started + warmup
    kept = [r for r in results if r[0] >= warmup_count]
    latencies = sorted(r[1] * 1000 for r in kept)
    service = sorted(r[2] * 1000 for r in kept)
    statuses: dict[str, int] = {}
    for r in kept:
        statuses[str(r[3])] = statuses.get(str(r[3]), 0) + 1
    lateness.sort()
    elapsed = time.perf_counter() - measured_from
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "offered_rps": rate,
        "achieved_rps": len(kept) / elapsed if elapsed > 0 else None,
        "requests": len(kept),
        "statuses": statuses,
        "errors": errors,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "p999_ms": percentile(latencies, 99.9),
        "max_ms": latencies[-1] if latencies else None,
        "service_p50_ms": percentile(service, 50),
        "service_p99_ms": percentile(service, 99),
        "dispatch_lateness_p99_ms": (percentile(lateness, 99) or 0) * 1000,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--scenario", required=True, choices=sorted(scenarios()))
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent, not counted")
    parser.add_argument("--slots", type=int, default=64, help="concurrent connections at most")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--poisson", action="store_true", help="exponential gaps, not even ones")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    result = asyncio.run(
        run(
            url=args.url,
            scenario=scenarios()[args.scenario],
            rate=args.rate,
            duration=args.duration,
            warmup=args.warmup,
            slots=args.slots,
            poisson=args.poisson,
            timeout=args.timeout,
        )
    )
    result["scenario"] = args.scenario
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
