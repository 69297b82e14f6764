"""Small helpers every analysis module shares: finite floats for JSON, quoted SQL names."""

from __future__ import annotations

import math


def finite(x: float | None) -> float | None:
    """``x`` as a plain float, or ``None`` when it is missing, NaN or infinite (JSON carries
    neither, and no reader should have to decode them)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def quoted(name: str) -> str:
    """``name`` quoted as an SQL identifier for the analysis connection."""
    # Imported here: lab.analysis.statistics uses ``finite`` and imports nothing from Django.
    from lab.replica import connection

    return connection.ops.quote_name(name)


def table(model) -> str:
    """The quoted table name of a Django model."""
    return quoted(model._meta.db_table)
