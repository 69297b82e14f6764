"""Analysis reads on a streaming replica (`DATABASE_REPLICA_URL`), never decide or writes.

An analysis endpoint runs inside `analysis_reads()`, which picks the database for the
request once: the replica when it answers and its replay lag is within
`DATABASE_REPLICA_MAX_LAG_SECONDS`, else the primary (`default`), each choice counted in
`lab_replica_reads_total{outcome}`. Inside it, the ORM's reads go there through
`AnalysisReadRouter`, and the analysis modules' hand-written SQL through `connection` below,
which stands for the chosen database's connection (django.db.connection always means
`default`). Everything else — decide, the admin writes, the reads of a write — never enters
the context and stays on `default`. docs/operations.md, "Replica reads".
"""

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from prometheus_client import Counter

logger = logging.getLogger(__name__)

REPLICA_ALIAS = "replica"

replica_reads = Counter(
    "lab_replica_reads",
    "Analysis requests by where they read: replica, or the primary because the replica was "
    "down (fallback_down) or lagging past DATABASE_REPLICA_MAX_LAG_SECONDS (fallback_lag)",
    ["outcome"],
)

_alias: ContextVar[str] = ContextVar("lab_analysis_alias", default=DEFAULT_DB_ALIAS)

# Seconds of replay behind the primary. Caught up (everything received is replayed) is 0,
# however long ago the last write was; otherwise the age of the last replayed commit.
LAG_SQL = (
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)


@dataclass(frozen=True)
class AnalysisRead:
    alias: str
    replica_lag_seconds: float


class AnalysisReadRouter:
    """Reads inside `analysis_reads()` go where it chose; every write goes to `default`, and
    migrations run there only."""

    def db_for_read(self, model, **hints):
        alias = _alias.get()
        return None if alias == DEFAULT_DB_ALIAS else alias

    def db_for_write(self, model, **hints):
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS


class _AnalysisConnection:
    """django.db.connection, but of the database `analysis_reads()` chose."""

    def __getattr__(self, name):
        return getattr(connections[_alias.get()], name)


connection = _AnalysisConnection()


def replica_configured() -> bool:
    return REPLICA_ALIAS in settings.DATABASES


def _replica_lag() -> float | None:
    """The replica's lag in seconds; None when it does not answer."""
    replica = connections[REPLICA_ALIAS]
    try:
        with replica.cursor() as cursor:
            cursor.execute(LAG_SQL)
            return float(cursor.fetchone()[0])
    except DatabaseError as exc:
        logger.warning("replica unavailable, analysis reads the primary: %s", exc)
        with contextlib.suppress(DatabaseError):
            replica.close()
        return None


# The header that says an SVG's or a CSV export's staleness, as `replica_lag_seconds` does in
# a JSON answer.
LAG_HEADER = "Lab-Replica-Lag-Seconds"


def choose_analysis_read() -> AnalysisRead:
    """Where an analysis request reads, chosen once per request and counted."""
    if not replica_configured():
        return AnalysisRead(DEFAULT_DB_ALIAS, 0.0)
    lag = _replica_lag()
    if lag is None:
        outcome, read = "fallback_down", AnalysisRead(DEFAULT_DB_ALIAS, 0.0)
    elif lag > settings.DATABASE_REPLICA_MAX_LAG_SECONDS:
        outcome, read = "fallback_lag", AnalysisRead(DEFAULT_DB_ALIAS, 0.0)
    else:
        outcome, read = "replica", AnalysisRead(REPLICA_ALIAS, round(lag, 3))
    replica_reads.labels(outcome=outcome).inc()
    return read


@contextlib.contextmanager
def reading_from(read: AnalysisRead) -> Iterator[AnalysisRead]:
    """The enclosed reads (ORM and `connection`) go to the database `read` chose."""
    token = _alias.set(read.alias)
    try:
        yield read
    finally:
        _alias.reset(token)


@contextlib.contextmanager
def analysis_reads() -> Iterator[AnalysisRead]:
    with reading_from(choose_analysis_read()) as read:
        yield read


def streamed_from(read: AnalysisRead, chunks: Iterator[str]) -> Iterator[str]:
    """`chunks` produced on the database `read` chose: a streamed answer's rows are read after
    its view has returned, while the server iterates over it."""
    with reading_from(read):
        yield from chunks
