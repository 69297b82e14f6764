"""The doc examples run against the end-to-end server: a real gunicorn over a fresh database
(tests/e2e/conftest.py)."""

from tests.e2e.conftest import server  # noqa: F401  (the fixture, shared with e2e)
