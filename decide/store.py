"""The SQL of the hot path: one statement to read, one to write.

`read_units` folds the client-key check (digest, revocation, the product's status and config
version) and the stored assignments of the asked units into ONE statement, so a warm decision
costs one round trip and the config version is read in the same snapshot as the assignments.
`insert_assignments` creates the missing units and inserts the new assignments in ONE
statement on PostgreSQL (a data-modifying CTE; two statements on SQLite); rows another
worker stored first are left alone (ON CONFLICT DO NOTHING) and read back with
`read_assignments`, so concurrent first decisions store exactly one row and agree on it.
The same statement notifies every worker's memory of known units of what it stored, one
notification per unit (decide.memory.listener, `Learn`): delivered at its commit, in commit
order with every other change.
The insert only stores a variant of the experiment it names, in the product it names: a
config that named anything else stores nothing (decide.decisions then recompiles it).

Plain tuples, raw SQL over the ORM's table and column names: no model instances per request.
Portable to PostgreSQL and SQLite (3.35+, for RETURNING).
"""

import logging
from collections.abc import Iterable, Sequence
from functools import cache
from typing import NamedTuple

import orjson
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections
from django.utils import timezone

from decide.auth import ClientCredential, InvalidClientKey
from lab.db import column, retry_on_deadlock, table
from lab.models import (
    Assignment,
    ClientKey,
    Design,
    DesignFactor,
    Experiment,
    Layer,
    Product,
    Step,
    Unit,
    Variant,
)
from rules.vocabulary import Reason, Status

# The channel and prefix of the memory of known units (decide.memory.listener, which imports
# this module: spelled here, checked equal by tests/decide/test_memory.py).
KNOWN_UNITS_CHANNEL = "lab_decide"
LEARN_PREFIX = "l:"

# SQLite allows 32766 bound parameters per statement; stay well below it.
_SQLITE_ROWS_PER_INSERT = 2000

# Every table a decision reads, here and in decide.config. The memory of known units
# (decide.memory) relies on each of them notifying its changes (migrations 0005, 0007) and
# on their identity (decide.memory.listener); tests/decide/test_memory_triggers.py checks
# this list against the SQL of both modules and against the triggers in the database.
DECIDED_FROM = (
    ClientKey,
    Product,
    Step,
    Layer,
    Experiment,
    Variant,
    Design,
    DesignFactor,
    Unit,
    Assignment,
)

logger = logging.getLogger(__name__)


class ProductState(NamedTuple):
    product_id: int
    status: str
    config_version: int


class Stored(NamedTuple):
    """A stored assignment as decide needs it."""

    variant_id: int
    source: str


class ReadBack(NamedTuple):
    """A stored assignment read back after another request stored it first."""

    variant_id: int
    variant_key: str
    source: str


class UnitRow(NamedTuple):
    unit_id: int
    assignments: dict[int, Stored]  # experiment id -> stored assignment
    # The stored attributes as the driver returned them (JSON text, or data): decoded by
    # `unit_attributes` only when an experiment with conditions needs them.
    raw_attributes: object = None


def unit_attributes(unit: UnitRow | None) -> dict:
    """The stored attributes of a unit read by `read_units` ({} for a new unit)."""
    if unit is None or unit.raw_attributes is None:
        return {}
    raw = unit.raw_attributes
    value = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    return value if isinstance(value, dict) else {}


class NewAssignment(NamedTuple):
    unit_key: str
    experiment_id: int
    variant_id: int


class Rebucketing(NamedTuple):
    unit_id: int
    experiment_id: int
    old_variant_id: int
    new_variant_id: int


class _Names:
    """Quoted table and column names, from the models (never spelled out by hand)."""

    def __init__(self) -> None:
        self.client_key = table(ClientKey)
        self.product = table(Product)
        self.unit = table(Unit)
        self.assignment = table(Assignment)
        self.experiment = table(Experiment)
        self.variant = table(Variant)
        self.ck_prefix = column(ClientKey, "prefix")
        self.ck_digest = column(ClientKey, "digest")
        self.ck_product = column(ClientKey, "product")
        self.ck_revoked = column(ClientKey, "revoked_at")
        self.p_id = column(Product, "id")
        self.p_status = column(Product, "status")
        self.p_version = column(Product, "config_version")
        self.u_id = column(Unit, "id")
        self.u_product = column(Unit, "product")
        self.u_key = column(Unit, "key")
        self.u_created = column(Unit, "created_at")
        self.u_attributes = column(Unit, "attributes")
        self.a_experiment = column(Assignment, "experiment")
        self.a_unit = column(Assignment, "unit")
        self.a_variant = column(Assignment, "variant")
        self.a_source = column(Assignment, "source")
        self.a_created = column(Assignment, "created_at")
        self.a_updated = column(Assignment, "updated_at")
        self.e_id = column(Experiment, "id")
        self.e_product = column(Experiment, "product")
        self.v_id = column(Variant, "id")
        self.v_key = column(Variant, "key")
        self.v_experiment = column(Variant, "experiment")


@cache
def _names() -> _Names:
    return _Names()


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


# The hot path's statements are few and fixed: on PostgreSQL they run as prepared
# statements (parsed and planned once per connection, from their 2nd execution on), through
# a server-side-binding cursor; the rest of the project keeps Django's default client-side
# binding. Parsing and planning were a large share of a known-unit decision's server CPU
# for statements that never change (load_tests/RESULTS.md, "Decide benchmark: tuning and
# profile", has the figures).
PREPARE_THRESHOLD = 2


def _prepared(raw) -> None:
    """DATABASE_PREPARE_THRESHOLD reaches the connection through OPTIONS; None there turns
    preparing off (transaction pooling on PgBouncer < 1.21, docs/scaling.md §4)."""
    threshold = connection.settings_dict["OPTIONS"].get("prepare_threshold", PREPARE_THRESHOLD)
    if raw.prepare_threshold != threshold:
        raw.prepare_threshold = threshold


def _cursor():
    """A cursor for the hot path's statements, wrapped by Django like connection.cursor()'s
    (errors mapped, queries counted and logged in DEBUG)."""
    if not _is_postgres():
        return connection.cursor()
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    _prepared(raw)
    with connection.wrap_database_errors:
        return connection._prepare_cursor(psycopg.Cursor(raw))


def _rows(sql: str, params: list) -> list[tuple]:
    """The rows of one of the hot path's statements (`sql` with %s placeholders).

    On PostgreSQL, outside a transaction, with queries not being recorded (DEBUG, a test
    counting them) and no execute wrapper installed (connection.execute_wrapper: a probe of
    the plans, an instrumentation), it runs on psycopg's raw cursor with the statement's $n
    form: the same prepared statement, errors mapped by Django as its cursors' are, without
    the wrappers around them (Django's cursor wrapper, psycopg's query conversion, a cursor
    per statement: about half of the read's CPU in the worker, load_tests/RESULTS.md, "The
    database path, unwrapped"). Otherwise through `_cursor()`, counted, logged and wrapped as
    every query is."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor != "postgresql" or db.queries_logged or db.in_atomic_block or db.execute_wrappers:
        with _cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    import psycopg

    db.ensure_connection()
    raw = db.connection
    # One cursor kept per connection (a new one per statement cost a fifth of it).
    cursor = getattr(db, "_lab_hot_cursor", None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        _prepared(raw)
        cursor = db._lab_hot_cursor = psycopg.RawCursor(raw)
    with db.wrap_database_errors:
        cursor.execute(_numbered(sql), params)
        return cursor.fetchall()


@cache
def _numbered(sql: str) -> str:
    """`sql` with its %s placeholders numbered as PostgreSQL's ($1, $2, ...): psycopg's
    RawCursor sends it as it is, with nothing to convert."""
    if "%%" in sql or "%(" in sql:
        raise ValueError("the hot path's statements hold only plain %s placeholders")
    parts = sql.split("%s")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


# --- Read: the key, its product and the units' assignments, in one statement.


@cache
def _read_sql(postgres: bool, unit_count: int) -> str:
    n = _names()
    if unit_count == 0:
        unit_join = assignment_join = ""
        unit_cols = "NULL, NULL, NULL"
        assignment_cols = "NULL, NULL, NULL"
    else:
        if unit_count == 1:
            key_match = f"u.{n.u_key} = %s"
        elif postgres:
            key_match = None
        else:
            key_match = f"u.{n.u_key} IN ({_placeholders(unit_count)})"
        if key_match:
            unit_join = f"LEFT JOIN {n.unit} u ON u.{n.u_product} = p.{n.p_id} AND {key_match}"
        else:
            # One probe of the (product, key) unique index per key. With `key = ANY(...)` a
            # database without statistics reads every unit of the product and filters them;
            # LIMIT 1 keeps the planner from flattening the probe into that scan.
            unit_join = (
                f"LEFT JOIN LATERAL (SELECT found.* FROM unnest(%s::text[]) AS asked(k) "
                f"CROSS JOIN LATERAL (SELECT x.{n.u_key}, x.{n.u_id}, x.{n.u_attributes} "
                f"FROM {n.unit} x "
                f"WHERE x.{n.u_product} = p.{n.p_id} AND x.{n.u_key} = asked.k LIMIT 1) found"
                f") u ON true"
            )
        unit_cols = f"u.{n.u_key}, u.{n.u_id}, u.{n.u_attributes}"
        assignment_join = f"LEFT JOIN {n.assignment} a ON a.{n.a_unit} = u.{n.u_id}"
        assignment_cols = f"a.{n.a_experiment}, a.{n.a_variant}, a.{n.a_source}"
    return (
        f"SELECT k.{n.ck_digest}, p.{n.p_id}, p.{n.p_status}, p.{n.p_version}, "
        f"{unit_cols}, {assignment_cols} "
        f"FROM {n.client_key} k "
        f"JOIN {n.product} p ON p.{n.p_id} = k.{n.ck_product} "
        f"{unit_join} {assignment_join} "
        f"WHERE k.{n.ck_prefix} = %s AND k.{n.ck_revoked} IS NULL"
    )


def read_units(
    credential: ClientCredential, unit_keys: Sequence[str]
) -> tuple[ProductState, dict[str, UnitRow]]:
    """Check the client key and read the stored assignments of `unit_keys` (distinct).

    Raises InvalidClientKey for an unknown, revoked or wrong key and for a key whose
    product is removed. Units that do not exist yet are absent from the result.
    """
    postgres = _is_postgres()
    count = len(unit_keys)
    if count == 1:
        params: list = [unit_keys[0]]
    elif count and postgres:
        params = [list(unit_keys)]
    else:
        params = list(unit_keys)
    params.append(credential.prefix)
    rows = _read_rows(_read_sql(postgres, count), params)
    if not rows:
        raise InvalidClientKey()
    digest, product_id, status, version = rows[0][:4]
    credential.check(digest)
    if status == Status.REMOVED:
        raise InvalidClientKey()
    units: dict[str, UnitRow] = {}
    for *_, unit_key, unit_id, attributes, experiment_id, variant_id, source in rows:
        if unit_id is None:
            continue
        unit = units.get(unit_key)
        if unit is None:
            unit = units[unit_key] = UnitRow(unit_id, {}, attributes)
        if experiment_id is not None:
            unit.assignments[experiment_id] = Stored(variant_id, source)
    return ProductState(product_id, status, version), units


def _read_rows(sql: str, params: list) -> list[tuple]:
    """The read's rows. A connection kept from an earlier request may have been ended by
    the server since (a switchover or restart: Django checks a kept connection only before
    its own cursors, and this one is not). The read is then run once more on a new
    connection, which waits for a primary (lab/postgresql/base.py): a read changes nothing,
    so running it again is safe. Any other failure, or one inside a transaction, is raised."""
    kept = connection.connection is not None
    try:
        return _rows(sql, params)
    except OperationalError:
        if not kept or connection.in_atomic_block or connection.is_usable():
            raise
    logger.warning("decide: the kept database connection was closed by the server; reconnecting")
    connection.close()
    return _rows(sql, params)


def check_client_key(credential: ClientCredential) -> ProductState:
    """The key check alone (for requests refused before any unit is read): raises
    InvalidClientKey exactly when `read_units` would."""
    state, _ = read_units(credential, ())
    return state


# --- Write: new units and their first assignments.


@cache
def _insert_sql_postgres(learn: bool) -> str:
    """The insert; with `learn`, it also notifies each unit's first assignments to every
    worker (decide.memory.listener)."""
    n = _names()
    learnt = f"""
        , learnt AS (
            SELECT pg_notify('{KNOWN_UNITS_CHANNEL}', payload)
            FROM (
                SELECT '{LEARN_PREFIX}' || %s::text || ':' || units.id || ':'
                    || CASE WHEN units.created THEN 'n' ELSE 'm' END || ':'
                    || string_agg(
                        i.{n.a_experiment} || '.' || i.{n.a_variant}, ','
                        ORDER BY i.{n.a_experiment}
                    )
                    || ':' || units.ukey AS payload
                FROM inserted i JOIN units ON units.id = i.{n.a_unit}
                GROUP BY units.id, units.ukey, units.created
            ) learn
            WHERE octet_length(payload) < {MAX_NOTIFY_BYTES}
        )"""
    return f"""
        WITH new_units AS (
            INSERT INTO {n.unit} ({n.u_product}, {n.u_key}, {n.u_created}, {n.u_attributes})
            SELECT %s, fresh.k, %s, fresh.a
            FROM json_to_recordset(%s::json) AS fresh(k text, a jsonb)
            ON CONFLICT ({n.u_product}, {n.u_key}) DO UPDATE SET {n.u_key} = EXCLUDED.{n.u_key}
            RETURNING {n.u_id}, {n.u_key}, xmax = 0 AS created
        ), units AS (
            SELECT {n.u_id} AS id, {n.u_key} AS ukey, created FROM new_units
            UNION ALL
            SELECT id, ukey, false FROM json_to_recordset(%s::json) AS known(id bigint, ukey text)
        ), inserted AS (
            INSERT INTO {n.assignment}
                ({n.a_experiment}, {n.a_unit}, {n.a_variant}, {n.a_source},
                 {n.a_created}, {n.a_updated})
            SELECT d.experiment_id, units.id, d.variant_id, '{Reason.HASH}', %s, %s
            FROM json_to_recordset(%s::json)
                AS d(ukey text, experiment_id bigint, variant_id bigint)
            JOIN units ON units.ukey = d.ukey
            JOIN {n.variant} v
                ON v.{n.v_id} = d.variant_id AND v.{n.v_experiment} = d.experiment_id
            JOIN {n.experiment} e ON e.{n.e_id} = d.experiment_id AND e.{n.e_product} = %s
            ORDER BY units.id, d.experiment_id
            ON CONFLICT ({n.a_experiment}, {n.a_unit}) DO NOTHING
            RETURNING {n.a_unit}, {n.a_experiment}, {n.a_variant}
        ){learnt if learn else ""}
        SELECT {n.u_id}, {n.u_key}, NULL FROM new_units
        UNION ALL
        SELECT {n.a_unit}, NULL, {n.a_experiment} FROM inserted
        {"UNION ALL SELECT NULL, NULL, count(*) FROM learnt" if learn else ""}
    """


# What a notification can carry (PostgreSQL refuses 8000 bytes and more): a unit whose
# first decision does not fit is not learnt, only read again on its next decision.
MAX_NOTIFY_BYTES = 8000


@retry_on_deadlock
def _run_insert_postgres(params: list, learn: bool) -> list[tuple]:
    """One statement: idempotent (units upserted, assignments `ON CONFLICT DO NOTHING`), so
    it is simply run again when it loses a deadlock against a bulk forced assignment."""
    return _rows(_insert_sql_postgres(learn), params)


def insert_assignments(
    *,
    product_id: int,
    known_units: dict[str, int],
    new: Sequence[NewAssignment],
    new_unit_attributes: dict[str, dict] | None = None,
) -> tuple[dict[str, int], set[tuple[int, int]]]:
    """Store first assignments (source `hash`), creating the units they need.

    A unit created here stores the attributes of `new_unit_attributes` given for its key
    (none: {}); a unit that exists, or that a concurrent request creates first, keeps its own.

    `known_units` maps the unit keys that exist already to their ids. Returns the ids of
    every unit involved and the (unit id, experiment id) pairs actually inserted; a pair
    missing from them was stored first by a concurrent request (read it back), or names a
    variant that is not its experiment's in this product (nothing to read back).
    """
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    missing = sorted({a.unit_key for a in new if a.unit_key not in known_units})
    new_unit_attributes = new_unit_attributes or {}
    ordered = sorted(new)
    unit_ids = {key: known_units[key] for key in {a.unit_key for a in new} if key in known_units}
    inserted: set[tuple[int, int]] = set()
    if _is_postgres():
        # The rows as JSON documents, one per set (json_to_recordset): one string each to
        # send, where arrays cost psycopg a dumper per array and a look at every element.
        params = [
            product_id,
            now,
            _json([{"k": key, "a": new_unit_attributes.get(key) or {}} for key in missing]),
            _json([{"id": unit_id, "ukey": key} for key, unit_id in unit_ids.items()]),
            now,
            now,
            _json(
                [
                    {
                        "ukey": a.unit_key,
                        "experiment_id": a.experiment_id,
                        "variant_id": a.variant_id,
                    }
                    for a in ordered
                ]
            ),
            product_id,
        ]
        # Only a decision of one unit teaches the other workers: a batch's units (up to
        # 1,000 a call, thousands a second) would each be learnt by every worker, evicting
        # the units their lines are deciding again (load_tests/RESULTS.md, "Batches do not
        # teach"): a worker that does not hold a batch's unit reads it on its next decision.
        learn = len({a.unit_key for a in new}) == 1
        if learn:
            params.append(product_id)  # the product of the learnt notification
        for unit_id, unit_key, experiment_id in _run_insert_postgres(params, learn):
            if unit_id is None:
                continue  # the count of units learnt (what makes them be sent)
            if unit_key is not None:
                unit_ids[unit_key] = unit_id
            else:
                inserted.add((unit_id, experiment_id))
        return unit_ids, inserted

    missing_attributes = [
        orjson.dumps(new_unit_attributes.get(key) or {}).decode() for key in missing
    ]
    n = _names()
    with connection.cursor() as cursor:
        with_attributes = list(zip(missing, missing_attributes, strict=True))
        for chunk in _chunks(with_attributes, _SQLITE_ROWS_PER_INSERT):
            cursor.execute(
                f"INSERT INTO {n.unit} ({n.u_product}, {n.u_key}, {n.u_created}, "
                f"{n.u_attributes}) "
                f"VALUES {', '.join(['(%s, %s, %s, %s)'] * len(chunk))} "
                f"ON CONFLICT ({n.u_product}, {n.u_key}) "
                f"DO UPDATE SET {n.u_key} = excluded.{n.u_key} "
                f"RETURNING {n.u_id}, {n.u_key}",
                [v for key, attrs in chunk for v in (product_id, key, now, attrs)],
            )
            unit_ids.update((key, unit_id) for unit_id, key in cursor.fetchall())
        rows = [(a.experiment_id, unit_ids[a.unit_key], a.variant_id) for a in ordered]
        for chunk in _chunks(rows, _SQLITE_ROWS_PER_INSERT):
            cursor.execute(
                f"INSERT INTO {n.assignment} ({n.a_experiment}, {n.a_unit}, {n.a_variant}, "
                f"{n.a_source}, {n.a_created}, {n.a_updated}) "
                f"SELECT d.column1, d.column2, d.column3, '{Reason.HASH}', %s, %s "
                f"FROM (VALUES {', '.join(['(%s, %s, %s)'] * len(chunk))}) AS d "
                f"JOIN {n.variant} v "
                f"ON v.{n.v_id} = d.column3 AND v.{n.v_experiment} = d.column1 "
                f"JOIN {n.experiment} e ON e.{n.e_id} = d.column1 AND e.{n.e_product} = %s "
                # WHERE true: SQLite needs it to parse an upsert after INSERT ... SELECT.
                f"WHERE true "
                f"ON CONFLICT ({n.a_experiment}, {n.a_unit}) DO NOTHING "
                f"RETURNING {n.a_unit}, {n.a_experiment}",
                [now, now, *(value for row in chunk for value in row), product_id],
            )
            inserted.update(cursor.fetchall())
    return unit_ids, inserted


def rebucket_assignments(moves: Sequence[Rebucketing]) -> set[tuple[int, int]]:
    """Move assignments off removed variants (source `rebucketed`), in one statement.

    An assignment is only moved if it still holds the old variant, so when two requests
    race, one moves it and the other reads the result back. Returns the (unit id,
    experiment id) pairs this call moved.
    """
    if not moves:
        return set()
    n = _names()
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    if _is_postgres():
        source = "unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])"
        source += " AS d(unit_id, experiment_id, old_variant, new_variant)"
        columns = ("d.unit_id", "d.experiment_id", "d.old_variant", "d.new_variant")
        params = [now, *(list(column) for column in zip(*moves, strict=True))]
    else:
        source = f"(VALUES {', '.join(['(%s, %s, %s, %s)'] * len(moves))}) AS d"
        columns = ("d.column1", "d.column2", "d.column3", "d.column4")
        params = [now, *(value for move in moves for value in move)]
    unit_id, experiment_id, old_variant, new_variant = columns
    sql = (
        f"UPDATE {n.assignment} SET {n.a_variant} = {new_variant}, "
        f"{n.a_source} = '{Reason.REBUCKETED}', {n.a_updated} = %s "
        f"FROM {source} "
        f"WHERE {n.assignment}.{n.a_unit} = {unit_id} "
        f"AND {n.assignment}.{n.a_experiment} = {experiment_id} "
        f"AND {n.assignment}.{n.a_variant} = {old_variant} "
        f"RETURNING {n.assignment}.{n.a_unit}, {n.assignment}.{n.a_experiment}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return set(cursor.fetchall())


def read_assignments(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], ReadBack]:
    """The stored assignments of (unit id, experiment id) pairs, with their variant keys:
    what a racer stored (its variant may be newer than the config this request used)."""
    pairs = set(pairs)
    if not pairs:
        return {}
    n = _names()
    unit_ids = sorted({unit_id for unit_id, _ in pairs})
    experiment_ids = sorted({experiment_id for _, experiment_id in pairs})
    if _is_postgres():
        where = f"a.{n.a_unit} = ANY(%s::bigint[]) AND a.{n.a_experiment} = ANY(%s::bigint[])"
        params = [unit_ids, experiment_ids]
    else:
        where = (
            f"a.{n.a_unit} IN ({_placeholders(len(unit_ids))}) "
            f"AND a.{n.a_experiment} IN ({_placeholders(len(experiment_ids))})"
        )
        params = [*unit_ids, *experiment_ids]
    sql = (
        f"SELECT a.{n.a_unit}, a.{n.a_experiment}, a.{n.a_variant}, v.{n.v_key}, a.{n.a_source} "
        f"FROM {n.assignment} a JOIN {n.variant} v ON v.{n.v_id} = a.{n.a_variant} "
        f"WHERE {where}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {
            (unit_id, experiment_id): ReadBack(variant_id, variant_key, source)
            for unit_id, experiment_id, variant_id, variant_key, source in cursor.fetchall()
            if (unit_id, experiment_id) in pairs
        }


def _json(rows: list) -> str:
    return orjson.dumps(rows).decode()


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
