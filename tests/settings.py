"""Settings for the test suite: config.settings, moved into a space of the suite's own.

Whatever DATABASE_URL and REDIS_URL point at, the suite never touches data it did not
create: PostgreSQL tests run in a database of their own (pytest-django creates and drops
it; see TEST NAME below), and every cache key the suite or the servers it starts write is
under a prefix unique to this test run, which is all the suite ever deletes.
"""

import os
import uuid

# Set before config.settings is read, so that the gunicorns and management commands the
# tests start (they inherit this environment) write under the same prefix.
TEST_CACHE_KEY_PREFIX = os.environ.setdefault(
    "CACHE_KEY_PREFIX", f"labtest-{uuid.uuid4().hex[:12]}"
)

# A signing key of the run's own, for the servers the tests start too (config.wsgi refuses the
# built-in development key with DEBUG off).
os.environ.setdefault("SECRET_KEY", f"labtest-{uuid.uuid4().hex}")

from config.settings import *  # noqa: E402, F403
from config.settings import BASE_DIR, DATABASES, POSTGRESQL_ENGINE  # noqa: E402

# In-process tests run inside transactions that are rolled back, whose notifications are
# never sent: the memory of known units stays off here, and the tests of decide.memory (and
# every server the e2e tests start) turn it on.
DECIDE_KNOWN_UNITS = False

if DATABASES["default"]["ENGINE"] == POSTGRESQL_ENGINE:
    # A name no user database has: one per checkout, so two checkouts never share one.
    import hashlib

    _checkout = hashlib.sha1(str(BASE_DIR).encode()).hexdigest()[:8]
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get(
        "TEST_DATABASE_NAME", f"lab_test_{_checkout}"
    )
