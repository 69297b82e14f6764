"""Database helpers: quoted SQL names for hand-written statements, deadlock retries."""

import functools
import logging

from django.db import OperationalError, connection

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
