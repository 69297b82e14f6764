"""Django's PostgreSQL backend with a bounded wait for a read-write connection.

During a planned switchover (or a failover once the new primary is promoted) there is a
moment of a second or two with no server that accepts writes: the old primary is shutting
down and the standby is not yet promoted, so libpq's multi-host form with
`target_session_attrs=read-write` finds no host. Only the *connection* is tried again here,
never a statement: nothing has been sent on a connection that was never made, so trying
again cannot run anything twice. A statement on an established connection that fails stays
an error (503, docs/operations.md "High availability (Patroni)"), since its outcome may be
unknown.

The wait is bounded by `RECONNECT_WAIT_SECONDS` in the alias' settings
(`DATABASE_RECONNECT_WAIT_SECONDS`, config/settings.py). A worker that waits is a worker that
serves nobody else, so after a wait that found no primary the worker tries only once per
connection until one succeeds: a long outage answers 503 at once instead of holding every
worker for the whole bound on every request.
"""

import logging
import time

from django.db.backends.postgresql import base

logger = logging.getLogger(__name__)

# Between two attempts: a refused connection on loopback or a LAN fails in a millisecond.
ATTEMPT_INTERVAL_SECONDS = 0.1
# Errors no wait cures: wrong credentials (class 28) and a database that does not exist.
HOPELESS_SQLSTATE_PREFIXES = ("28", "3D")


def _hopeless(exc: Exception) -> bool:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate.startswith(HOPELESS_SQLSTATE_PREFIXES)


class DatabaseWrapper(base.DatabaseWrapper):
    # Per worker process (each has its own wrappers): set when a wait ended without a
    # connection, cleared by the next connection made.
    _gave_up = False

    def get_new_connection(self, conn_params):
        bound = float(self.settings_dict.get("RECONNECT_WAIT_SECONDS") or 0)
        if bound <= 0 or DatabaseWrapper._gave_up:
            connection = super().get_new_connection(conn_params)
            DatabaseWrapper._gave_up = False
            return connection
        deadline = time.monotonic() + bound
        attempts = 0
        while True:
            attempts += 1
            try:
                connection = super().get_new_connection(conn_params)
            except base.Database.OperationalError as exc:
                if _hopeless(exc) or time.monotonic() + ATTEMPT_INTERVAL_SECONDS >= deadline:
                    DatabaseWrapper._gave_up = not _hopeless(exc)
                    raise
                time.sleep(ATTEMPT_INTERVAL_SECONDS)
                continue
            DatabaseWrapper._gave_up = False
            if attempts > 1:
                logger.warning(
                    "database connection made after %d attempts in %.2f s",
                    attempts,
                    bound - (deadline - time.monotonic()),
                )
            return connection
