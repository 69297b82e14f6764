"""CPU seconds and memory of the processes a run involves, and of the whole machine (psutil).

A process that is gone counts as 0 CPU seconds (its last reading stays in the "before"
snapshot, so what it spent in between is lost, never negative).
"""

from __future__ import annotations

import time
from typing import Protocol

import psutil

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a whole process (all its threads); 0 once it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except _GONE:
        return 0.0
    return times.user + times.system


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores.
    Idle and I/O wait are not busy; guest time is already inside user time."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(
        getattr(times, field, 0.0)
        for field in ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    )
    return total - idle, total


def children_of(pid: int) -> list[int]:
    """The direct children of a process (gunicorn's workers, nginx's workers)."""
    try:
        return sorted(child.pid for child in psutil.Process(pid).children())
    except _GONE:
        return []


def rss_kib(pid: int) -> int | None:
    try:
        return psutil.Process(pid).memory_info().rss // 1024
    except _GONE:
        return None


def threads_of(pid: int) -> int | None:
    try:
        return psutil.Process(pid).num_threads()
    except _GONE:
        return None


class Metered(Protocol):
    """A server or the peer: the processes whose CPU is "server", and its database's."""

    def process_pids(self) -> list[int]: ...

    def database_pids(self) -> list[int]: ...


class CpuMeter:
    """CPU seconds spent by the server side (its processes and their PostgreSQL backends)
    and by the whole machine between start() and stop()."""

    def __init__(self, target: Metered):
        self.target = target

    def _snapshot(self) -> dict:
        busy, total = machine_cpu_seconds()
        return {
            "server": {pid: process_cpu_seconds(pid) for pid in self.target.process_pids()},
            "postgres": {pid: process_cpu_seconds(pid) for pid in self.target.database_pids()},
            "busy": busy,
            "total": total,
            "wall": time.monotonic(),
        }

    def start(self) -> None:
        self.before = self._snapshot()

    def stop(self) -> dict:
        after = self._snapshot()
        before = self.before

        def spent(kind: str) -> float:
            return sum(
                max(0.0, cpu - before[kind].get(pid, 0.0)) for pid, cpu in after[kind].items()
            )

        return {
            "wall_s": after["wall"] - before["wall"],
            # The name predates the front: the gunicorn master and workers *and* nginx.
            "gunicorn_cpu_s": spent("server"),
            "postgres_cpu_s": spent("postgres"),
            "machine_busy_cpu_s": after["busy"] - before["busy"],
        }
