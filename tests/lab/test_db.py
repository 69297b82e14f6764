"""Database helpers: deadlock retries (a write that loses a PostgreSQL deadlock is run again,
not failed) and fresh planner statistics after bulk writes."""

import pytest
from django.db import OperationalError, connection, transaction

from lab.db import ATTEMPTS, retry_on_deadlock
from tests.conftest import requires_postgres


class _PgError(Exception):
    def __init__(self, sqlstate):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _failing(times: int, sqlstate: str = "40P01"):
    calls = []

    @retry_on_deadlock
    def write():
        calls.append(1)
        if len(calls) <= times:
            raise OperationalError("deadlock detected") from _PgError(sqlstate)
        return "stored"

    return write, calls


def test_retry__deadlock_then_success__answers_once_it_goes_through():
    write, calls = _failing(times=ATTEMPTS - 1)
    assert write() == "stored"
    assert len(calls) == ATTEMPTS


def test_retry__deadlock_every_time__gives_up_after_the_last_attempt():
    write, calls = _failing(times=ATTEMPTS)
    with pytest.raises(OperationalError):
        write()
    assert len(calls) == ATTEMPTS


def test_retry__other_database_error__not_retried():
    write, calls = _failing(times=1, sqlstate="57014")  # statement timeout
    with pytest.raises(OperationalError):
        write()
    assert len(calls) == 1


@pytest.mark.django_db
def test_retry__inside_a_callers_transaction__left_to_the_caller():
    write, calls = _failing(times=1)
    with pytest.raises(OperationalError), transaction.atomic():
        write()
    assert len(calls) == 1


def _last_analyzed(table: str):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # statistics read now, not cached
        cursor.execute(
            "SELECT last_analyze, (SELECT reltuples FROM pg_class WHERE relname = %s)"
            " FROM pg_stat_user_tables WHERE relname = %s",
            [table, table],
        )
        return cursor.fetchone()


@pytest.mark.django_db
def test_bulk_write__thousands_of_rows__analyzes_the_tables_after_commit(
    tenant, product, django_capture_on_commit_callbacks
):
    requires_postgres()
    # Given a metric and 2,000 measurements of new units in one bulk write
    assert tenant.post("/products/widget/metrics", {"key": "thickness"}).status_code == 201
    rows = [{"metric": "thickness", "unit": f"SN-{i}", "value": 1.0} for i in range(2_000)]
    before = _last_analyzed("lab_measurement")
    # When it commits
    with django_capture_on_commit_callbacks(execute=True):
        response = tenant.post("/products/widget/measurements", {"measurements": rows})
    assert response.status_code == 200, response.content
    # Then the planner's statistics were refreshed: it knows the rows are there
    last_analyze, reltuples = _last_analyzed("lab_measurement")
    assert last_analyze is not None and last_analyze != before[0]
    assert reltuples >= 2_000


@pytest.mark.django_db
def test_bulk_write__a_few_rows__leaves_statistics_alone(
    tenant, product, django_capture_on_commit_callbacks
):
    requires_postgres()
    assert tenant.post("/products/widget/metrics", {"key": "thickness"}).status_code == 201
    before = _last_analyzed("lab_measurement")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        tenant.post(
            "/products/widget/measurements",
            {"measurements": [{"metric": "thickness", "unit": "SN-1", "value": 1.0}]},
        )
    assert _last_analyzed("lab_measurement")[0] == before[0]
    assert callbacks == []
