"""Notify decide's workers per product: one product's admin writes no longer empty the
memory of every other product.

PostgreSQL only, like 0005. After this migration the triggers send, on channel `lab_decide`:

- `p:<product id>[,<product id>...]` after a statement that inserts, updates or deletes client
  keys, products, steps, experiments, variants or layers: the products of the rows it changed
  (a variant's through its experiment; `*` when a product cannot be found, or beyond 200);
  nothing for a statement that changed no row;
- `*` after a TRUNCATE of any table decide reads;
- as in 0005 for units and assignments (`u:<id>,...`), except that an assignment statement
  touching more than 200 units names their products instead of sending `*`.

See decide/memory/listener.py and docs/decide.md, "Known units in memory".
"""

from django.db import migrations

CHANNEL = "lab_decide"
MAX_IDS_PER_NOTIFICATION = 200
# Tables with a product_id column (the product table is keyed by id; variants reach their
# product through their experiment).
PRODUCT_ID_TABLES = ("lab_clientkey", "lab_step", "lab_experiment", "lab_layer")
CONFIG_TABLES = (
    "lab_clientkey",
    "lab_product",
    "lab_step",
    "lab_experiment",
    "lab_variant",
    "lab_layer",
)


def _rows_function(name: str, product_ids_of: str) -> str:
    """A statement trigger function that notifies the products of the rows changed;
    `product_ids_of` selects them from a transition table named `changed_rows`."""
    return f"""
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            PERFORM lab_decide_notify_products(ARRAY(
                {product_ids_of.replace("changed_rows", "new_rows")}));
        ELSIF TG_OP = 'UPDATE' THEN
            PERFORM lab_decide_notify_products(ARRAY(
                {product_ids_of.replace("changed_rows", "old_rows")}
                UNION {product_ids_of.replace("changed_rows", "new_rows")}));
        ELSE
            PERFORM lab_decide_notify_products(ARRAY(
                {product_ids_of.replace("changed_rows", "old_rows")}));
        END IF;
        RETURN NULL;
    END $$
    """


_ASSIGNMENTS_CHANGED = """
    CREATE OR REPLACE FUNCTION lab_decide_notify_assignments_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        units bigint;
        payload text;
    BEGIN
        SELECT count(*) INTO units
        FROM (SELECT DISTINCT unit_id FROM changed LIMIT {limit_plus_one}) d;
        IF units = 0 THEN
            RETURN NULL;
        ELSIF units > {limit} THEN
            {beyond}
        ELSE
            SELECT 'u:' || string_agg(DISTINCT unit_id::text, ',') INTO payload FROM changed;
            PERFORM pg_notify('{channel}', payload);
        END IF;
        RETURN NULL;
    END $$
"""


def _assignments_changed(beyond: str) -> str:
    return _ASSIGNMENTS_CHANGED.format(
        limit=MAX_IDS_PER_NOTIFICATION,
        limit_plus_one=MAX_IDS_PER_NOTIFICATION + 1,
        channel=CHANNEL,
        beyond=beyond,
    )


FORWARD = [
    f"""
    CREATE FUNCTION lab_decide_notify_products(product_ids bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
        IF cardinality(product_ids) = 0 THEN
            RETURN;
        ELSIF array_position(product_ids, NULL) IS NOT NULL
            OR cardinality(product_ids) > {MAX_IDS_PER_NOTIFICATION} THEN
            PERFORM pg_notify('{CHANNEL}', '*');
        ELSE
            PERFORM pg_notify('{CHANNEL}', 'p:' || array_to_string(product_ids, ','));
        END IF;
    END $$
    """,
    _rows_function(
        "lab_decide_notify_rows_of_products",
        "SELECT DISTINCT product_id FROM changed_rows",
    ),
    _rows_function("lab_decide_notify_products_changed", "SELECT DISTINCT id FROM changed_rows"),
    _rows_function(
        "lab_decide_notify_rows_of_experiments",
        "SELECT DISTINCT e.product_id FROM changed_rows r "
        "LEFT JOIN lab_experiment e ON e.id = r.experiment_id",
    ),
    _assignments_changed(
        "PERFORM lab_decide_notify_products(ARRAY(SELECT DISTINCT e.product_id FROM changed c "
        "LEFT JOIN lab_experiment e ON e.id = c.experiment_id));"
    ),
    *(f"DROP TRIGGER {table}_decide_notify ON {table}" for table in CONFIG_TABLES),
]
for _table in CONFIG_TABLES:
    _function = {
        "lab_product": "lab_decide_notify_products_changed",
        "lab_variant": "lab_decide_notify_rows_of_experiments",
    }.get(_table, "lab_decide_notify_rows_of_products")
    FORWARD += [
        f"""
        CREATE TRIGGER {_table}_decide_notify_inserted
        AFTER INSERT ON {_table} REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {_function}()
        """,
        f"""
        CREATE TRIGGER {_table}_decide_notify_updated
        AFTER UPDATE ON {_table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {_function}()
        """,
        f"""
        CREATE TRIGGER {_table}_decide_notify_deleted
        AFTER DELETE ON {_table} REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {_function}()
        """,
        f"""
        CREATE TRIGGER {_table}_decide_notify_truncated
        AFTER TRUNCATE ON {_table} FOR EACH STATEMENT EXECUTE FUNCTION lab_decide_notify_all()
        """,
    ]

BACKWARD = [
    *(
        f"DROP TRIGGER {table}_decide_notify_{event} ON {table}"
        for table in CONFIG_TABLES
        for event in ("inserted", "updated", "deleted", "truncated")
    ),
    *(
        f"""
        CREATE TRIGGER {table}_decide_notify
        AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION lab_decide_notify_all()
        """
        for table in CONFIG_TABLES
    ),
    _assignments_changed(f"PERFORM pg_notify('{CHANNEL}', '*');"),
    "DROP FUNCTION lab_decide_notify_rows_of_products()",
    "DROP FUNCTION lab_decide_notify_products_changed()",
    "DROP FUNCTION lab_decide_notify_rows_of_experiments()",
    "DROP FUNCTION lab_decide_notify_products(bigint[])",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("lab", "0006_measurement_metric_value_index")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD), elidable=False)]
