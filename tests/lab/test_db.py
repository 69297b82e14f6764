"""Deadlock retries: a write that loses a PostgreSQL deadlock is run again, not failed."""

import pytest
from django.db import OperationalError, transaction

from lab.db import ATTEMPTS, retry_on_deadlock


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
