"""Every table decide reads notifies the memory of known units of its changes (migrations
0005 and 0007), per product where the change is a product's.

The list of those tables is declared once, decide.store.DECIDED_FROM; the first test checks it
against the SQL of decide.store and decide.config, so a table added to a statement there
without its trigger fails the second.
"""

import inspect
import re

import psycopg
import pytest
from django.db import connection, transaction

from decide import config, store
from decide.memory import CHANNEL, listener_connection_params
from lab.models import ClientKey, Experiment, Layer, Product, Step, Variant
from lab.services.credentials import client_key_create
from tests.conftest import requires_postgres
from tests.decide.conftest import make_experiment
from tests.factories import ProductFactory

# pg_trigger.tgtype bits (PostgreSQL's catalog/pg_trigger.h)
_ROW, _BEFORE, _INSERT, _DELETE, _UPDATE, _TRUNCATE, _INSTEAD = 1, 2, 4, 8, 16, 32, 64
_EVENTS = {"INSERT": _INSERT, "UPDATE": _UPDATE, "DELETE": _DELETE, "TRUNCATE": _TRUNCATE}
# Events with no notification, and why no remembered answer can depend on them.
_NOT_NOTIFIED = {
    # A unit that does not exist yet is never remembered (decide.memory.policy: a unit is
    # remembered once its stored assignments answer), so inserting one changes no entry.
    ("lab_unit", "INSERT"),
}


def _tables_in(sql: str) -> set[str]:
    return set(re.findall(r'"(lab_[a-z_]+)"', sql))


def test_decided_from__every_table_in_the_sql_of_decide():
    # The statements decide.store and decide.config build, in every shape
    statements = [
        store._read_sql(postgres, count) for postgres in (True, False) for count in (0, 1, 2)
    ]
    statements += [store._insert_sql_postgres(learn) for learn in (True, False)]
    statements += [config._load_sql()]
    mentioned = set().union(*map(_tables_in, statements))
    # and the tables the rest of decide.store names (the statements built inline)
    names = store._names()
    for attribute in set(re.findall(r"\bn\.([a-z_]+)\b", inspect.getsource(store))):
        mentioned |= _tables_in(getattr(names, attribute))
    # and every model decide.config reads
    for model_name in set(re.findall(r"\btable\((\w+)\)", inspect.getsource(config))):
        mentioned.add(getattr(config, model_name)._meta.db_table)
    declared = {model._meta.db_table for model in store.DECIDED_FROM}
    assert mentioned == declared


@pytest.mark.django_db
def test_every_table_decide_reads__notifies_insert_update_delete_and_truncate():
    requires_postgres()
    missing = []
    for model in store.DECIDED_FROM:
        name = model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT t.tgtype, t.tgenabled FROM pg_trigger t "
                "JOIN pg_proc p ON p.oid = t.tgfoid "
                "WHERE t.tgrelid = to_regclass(%s) AND NOT t.tgisinternal "
                "AND p.proname LIKE 'lab_decide_notify%%'",
                [name],
            )
            triggers = cursor.fetchall()
        for event, bit in _EVENTS.items():
            covered = any(
                tgtype & bit and not tgtype & (_BEFORE | _INSTEAD) and enabled in ("O", "A")
                for tgtype, enabled in triggers
            )
            if not covered and (name, event) not in _NOT_NOTIFIED:
                missing.append(f"{name} {event}")
    assert missing == []


@pytest.fixture
def listener():
    requires_postgres()
    with psycopg.connect(**listener_connection_params(), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")

        def received(wait: float = 0.5) -> list[str]:
            return [n.payload for n in conn.notifies(timeout=wait)]

        yield received


@pytest.mark.django_db(transaction=True)
def test_config_writes__notify_their_product_only(listener):
    product = ProductFactory(key="widget")
    other = ProductFactory(key="other")
    experiment = make_experiment(product, "etch")
    make_experiment(other, "etch")
    listener(0.2)
    p = f"p:{product.pk}"
    writes = {
        "client key created": lambda: client_key_create(product=product, name="k"),
        "client key revoked": lambda: ClientKey.objects.filter(product=product).update(name="x"),
        "product updated": lambda: Product.objects.filter(pk=product.pk).update(name="x"),
        "step created": lambda: Step.objects.create(product=product, key="s"),
        "layer created": lambda: Layer.objects.create(product=product, key="l", salt="s"),
        "experiment updated": lambda: Experiment.objects.filter(pk=experiment.pk).update(
            coverage=0.5
        ),
        "variant created": lambda: Variant.objects.create(experiment=experiment, key="c"),
        "variant updated": lambda: Variant.objects.filter(experiment=experiment).update(weight=2),
        "variant deleted": lambda: Variant.objects.filter(key="c").delete(),
        "step deleted": lambda: Step.objects.filter(key="s").delete(),
        "nothing matched": lambda: Experiment.objects.filter(key="none").update(coverage=0),
    }
    received = {}
    for name, write in writes.items():
        write()
        received[name] = listener(0.3)
    assert received == {name: [p] for name in writes} | {"nothing matched": []}


@pytest.mark.django_db(transaction=True)
def test_truncate__forgets_everything(listener):
    make_experiment(ProductFactory(key="widget"), "etch")
    listener(0.2)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE lab_layer CASCADE")
    assert "*" in listener()
