"""How decide.store runs the hot path's statements: on PostgreSQL outside a transaction, on a
psycopg RawCursor kept per connection; inside a transaction or with queries recorded, through
Django's cursor. Either way the same rows, and the database's errors as Django raises them.

Committed for real (transactional): the test transaction would send every statement the
other way.
"""

import logging

import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections, transaction

from decide import store
from decide.auth import bearer_credential
from tests.conftest import requires_postgres
from tests.decide.conftest import make_experiment

pytestmark = pytest.mark.django_db(transaction=True)


def _forget_cursor():
    vars(connections[DEFAULT_DB_ALIAS]).pop("_lab_hot_cursor", None)


@pytest.fixture(autouse=True)
def _no_kept_cursor():
    """Each test starts without a kept cursor (the connection outlives a test)."""
    _forget_cursor()
    yield
    _forget_cursor()


def _credential(decider):
    return bearer_credential({"HTTP_AUTHORIZATION": f"Bearer {decider.secret}"})


def _kept_cursor():
    return getattr(connections[DEFAULT_DB_ALIAS], "_lab_hot_cursor", None)


def test_numbered__placeholders_in_order_and_nothing_else_changed():
    # Given a statement with %s placeholders, one at each end
    sql = "%s = a AND b = %s AND c = '%s' || %s"
    # When it is numbered for the raw cursor
    numbered = store._numbered(sql)
    # Then each placeholder becomes $n in order, literally everywhere (the hot path's
    # statements hold no %s inside a literal: they are the project's own)
    assert numbered == "$1 = a AND b = $2 AND c = '$3' || $4"


@pytest.mark.parametrize("sql", ["SELECT 100%% FROM x WHERE a = %s", "SELECT %(a)s"])
def test_numbered__refuses_escapes_and_named_placeholders(sql):
    # A statement Django's cursor would read otherwise is never sent differently
    with pytest.raises(ValueError, match="plain %s placeholders"):
        store._numbered(sql)


def test_hot_statements__numbered_the_same_as_django_binds_them():
    requires_postgres()
    # Every shape of the hot path's statements on PostgreSQL holds plain %s only
    statements = [store._read_sql(True, count) for count in (0, 1, 2)]
    statements += [store._insert_sql_postgres(learn) for learn in (True, False)]
    for sql in statements:
        numbered = store._numbered(sql)
        assert "%s" not in numbered
        assert numbered.count("$") == sql.count("%s")


def test_read__outside_a_transaction__raw_cursor_kept_and_the_same_rows(decider, settings):
    requires_postgres()
    settings.DEBUG = False
    experiment = make_experiment(decider.product, "exp")
    decider.decide("SN-1")
    credential = _credential(decider)
    _forget_cursor()
    # Given the rows of the read through Django's cursor (queries recorded)
    connection.force_debug_cursor = True
    try:
        state, units = store.read_units(credential, ["SN-1", "SN-2"])
    finally:
        connection.force_debug_cursor = False
    assert _kept_cursor() is None
    # When the same read runs as the hot path runs it, twice
    assert store.read_units(credential, ["SN-1", "SN-2"]) == (state, units)
    cursor = _kept_cursor()
    assert store.read_units(credential, ["SN-1", "SN-2"]) == (state, units)
    # Then on psycopg's raw cursor, kept for the connection, with the same answer
    assert isinstance(cursor, psycopg.RawCursor)
    assert _kept_cursor() is cursor
    assert cursor.connection is connection.connection
    assert units["SN-1"].assignments[experiment.id].source == "hash"
    assert "SN-2" not in units


def test_read__connection_replaced__a_new_cursor_on_the_new_one(decider, settings):
    requires_postgres()
    settings.DEBUG = False
    credential = _credential(decider)
    store.read_units(credential, ["SN-1"])
    first = _kept_cursor()
    # When Django closes its connection and opens another
    connection.close()
    state, _ = store.read_units(credential, ["SN-1"])
    # Then the statement runs on a cursor of the new connection
    assert state.product_id == decider.product.id
    assert _kept_cursor() is not first
    assert _kept_cursor().connection is connection.connection


def test_rows__in_a_transaction_or_recorded__through_djangos_cursor(
    decider, settings, django_assert_num_queries
):
    requires_postgres()
    settings.DEBUG = False
    credential = _credential(decider)
    _forget_cursor()
    # A statement in a transaction is Django's (its broken-transaction check, its cursor)
    with transaction.atomic():
        store.read_units(credential, ["SN-1"])
    assert _kept_cursor() is None
    # and one while queries are recorded is counted like any other
    with django_assert_num_queries(1) as recorded:
        store.read_units(credential, ["SN-1"])
    assert '"lab_assignment"' in recorded.captured_queries[0]["sql"]
    assert _kept_cursor() is None


def test_rows__a_statement_timeout__djangos_operational_error(decider, settings):
    requires_postgres()
    settings.DEBUG = False
    store._rows("SELECT %s", [1])
    with connection.connection.cursor() as raw:
        raw.execute("SET statement_timeout = 50")
    try:
        # When the database cancels a statement on the raw cursor
        with pytest.raises(OperationalError) as raised:
            store._rows("SELECT pg_sleep(%s)", [1])
        # Then it is Django's error (the hot path's 503), marked for Django's usability check
        assert isinstance(raised.value.__cause__, psycopg.errors.QueryCanceled)
        assert connection.errors_occurred
    finally:
        with connection.connection.cursor() as raw:
            raw.execute("RESET statement_timeout")
    # and the connection and its cursor serve the next statement
    assert store._rows("SELECT %s::int + 1", [1]) == [(2,)]


def test_read__kept_connection_ended_by_the_server__read_again_on_a_new_one(
    decider, settings, caplog
):
    requires_postgres()
    settings.DEBUG = False
    credential = _credential(decider)
    store.read_units(credential, ["SN-1"])
    ended = connection.connection.info.backend_pid
    # Given the server ends the kept connection (a restart, a switchover)
    with psycopg.connect(**_conninfo(), autocommit=True) as other:
        # With a timeout it returns once the session is gone, not when it is signalled: a
        # busy machine could otherwise run the next read on it first.
        other.execute("SELECT pg_terminate_backend(%s, 10000)", [ended])
    # When the next read runs
    with caplog.at_level(logging.WARNING, logger="decide.store"):
        state, _ = store.read_units(credential, ["SN-1"])
    # Then it is read again on a new connection, with a warning
    assert state.product_id == decider.product.id
    assert connection.connection.info.backend_pid != ended
    assert "closed by the server" in caplog.text


def _conninfo() -> dict:
    params = connection.get_connection_params()
    for unused in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(unused, None)
    return params


def test_rows__an_execute_wrapper_installed__sees_the_statement(decider, settings):
    requires_postgres()
    settings.DEBUG = False
    credential = _credential(decider)
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    # Given an execute wrapper (a plan probe, an instrumentation) on the connection
    with connection.execute_wrapper(wrapper):
        store.read_units(credential, ["SN-1"])
    # Then the hot path's statement goes through Django's cursor, and the wrapper sees it
    assert len(seen) == 1 and '"lab_assignment"' in seen[0]
    assert _kept_cursor() is None
