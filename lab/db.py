"""Database helpers: quoted SQL names for hand-written statements, deadlock retries."""

import functools
import logging
from collections.abc import Iterable

from django.db import DatabaseError, OperationalError, connection, transaction

logger = logging.getLogger(__name__)


def quoted(name: str) -> str:
    """`name` quoted as an SQL identifier for the database in use."""
    return connection.ops.quote_name(name)


def table(model) -> str:
    """The quoted table name of a model, for raw SQL (never spelled out by hand)."""
    return quoted(model._meta.db_table)


def column(model, field: str) -> str:
    """The quoted column name of a model's field (`product` gives `"product_id"`)."""
    return quoted(model._meta.get_field(field).column)


# PostgreSQL: deadlock_detected, serialization_failure. Both mean "run it again".
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
ATTEMPTS = 3


def is_retryable(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) in RETRYABLE_SQLSTATES


def retry_on_deadlock(func):
    """Run `func` again (up to three attempts in all) when PostgreSQL aborts it as one side
    of a deadlock. Only outside an enclosing transaction: inside one, the abort belongs to
    the caller, whose work is rolled back with it."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return func(*args, **kwargs)
            except OperationalError as exc:
                if attempt == ATTEMPTS or connection.in_atomic_block or not is_retryable(exc):
                    raise
                logger.warning("%s: deadlock, attempt %d of %d", func.__name__, attempt, ATTEMPTS)
        raise AssertionError("unreachable")

    return wrapper


# A bulk write of at least this many rows may leave the planner's statistics behind.
ANALYZE_AFTER_ROWS = 1_000


def refresh_statistics_after_commit(*, tables: Iterable[str], changed_rows: int) -> None:
    """After a bulk write commits, ANALYZE the tables it changed whose statistics are out of
    date: never analyzed, or the write is at least a tenth of the rows the planner thinks they
    hold. PostgreSQL's autovacuum does this eventually, or never where it is off; the plans
    are chosen so that they stay fast without it (docs/operations.md, "Query plans"), and
    this keeps the estimates honest for everything else."""
    if changed_rows < ANALYZE_AFTER_ROWS or connection.vendor != "postgresql":
        return
    tables = tuple(tables)
    transaction.on_commit(lambda: _analyze_if_stale(tables, changed_rows))


def _analyze_if_stale(tables: tuple[str, ...], changed_rows: int) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s)", [list(tables)]
            )
            estimated = dict(cursor.fetchall())
            for table in tables:
                rows = estimated.get(table, -1)
                if rows < 0 or changed_rows * 10 >= rows:
                    cursor.execute(f"ANALYZE {connection.ops.quote_name(table)}")
    except DatabaseError:
        # The write has committed; fresher statistics are a nicety, not part of it.
        logger.warning("ANALYZE after a bulk write failed", exc_info=True)
