"""Units: created in bulk with their attributes, or on the fly by the other bulk writes.

Bulk writes are set-based: a fixed number of statements whatever the batch size (up to
10,000 rows). Rows are written in a fixed order (unit keys sorted, then ids sorted) so
that concurrent batches over the same units take their row locks in the same order and
cannot deadlock each other.
"""

from collections.abc import Collection
from dataclasses import dataclass

from django.db import transaction

from lab.models import Product, Unit
from lab.services.bulk import (  # noqa: F401 (re-exported: the bulk writes import them here)
    MAX_BATCH_ROWS,
    BatchProblems,
    Upserted,
    check_batch_size,
)


@dataclass(frozen=True)
class UnitsCreated:
    created: int
    existing: int
    # Existing units whose attributes the request replaced.
    updated: int = 0


@dataclass(frozen=True)
class UnitRow:
    """One unit of a bulk upsert: its key and, when given, the attributes it gets."""

    key: str
    attributes: dict | None = None


@transaction.atomic
def units_create(*, product: Product, keys: Collection[str | UnitRow]) -> UnitsCreated:
    """Create the units that do not exist yet and set the attributes given.

    A bare key (or a row without attributes) creates the unit if needed and leaves an
    existing one as it is; a row with attributes creates the unit with them, or replaces
    the stored attributes of an existing one. All or nothing: the same key may not be
    given attributes twice. Three statements whatever the batch size. Attributes must be
    valid already (rules.targeting.check_attributes, applied by the request schema).
    """
    check_batch_size(count=len(keys), what="units")
    rows = [row if isinstance(row, UnitRow) else UnitRow(key=row) for row in keys]
    attributes: dict[str, dict] = {}
    problems = BatchProblems("units")
    first_index: dict[str, int] = {}
    for index, row in enumerate(rows):
        if row.attributes is None:
            continue
        if row.key in attributes:
            problems.add(
                index,
                "attributes",
                "duplicate",
                f"unit {row.key!r} is given attributes already at index {first_index[row.key]}",
            )
            continue
        attributes[row.key] = row.attributes
        first_index[row.key] = index
    problems.raise_if_any()

    wanted = sorted({row.key for row in rows})
    existing = set(
        Unit.objects.select_for_update(no_key=True)
        .filter(product=product, key__in=wanted)
        .order_by("id")
        .values_list("key", flat=True)
    )
    plain = [Unit(product=product, key=key) for key in wanted if key not in attributes]
    if plain:
        Unit.objects.bulk_create(plain, ignore_conflicts=True)
    if attributes:
        Unit.objects.bulk_create(
            [
                Unit(product=product, key=key, attributes=attributes[key])
                for key in sorted(attributes)
            ],
            update_conflicts=True,
            unique_fields=["product", "key"],
            update_fields=["attributes"],
        )
    return UnitsCreated(
        created=len(wanted) - len(existing),
        existing=len(existing),
        updated=len(existing.intersection(attributes)),
    )


def unit_set_attributes(*, unit: Unit, attributes: dict) -> Unit:
    """Replace a unit's attributes (already valid). Decide reads them with the unit's
    assignments, so the next decision uses them: no config version to bump."""
    unit.attributes = attributes
    unit.save(update_fields=["attributes"])
    return unit


def units_ensure(*, product_id: int, keys: Collection[str]) -> dict[str, int]:
    """The ids of the units `keys` of a product, creating those that do not exist yet, and
    locked until the transaction ends. Call it inside a transaction.

    Two statements whatever the number of keys: an INSERT that skips the existing ones
    (and any created concurrently), then one SELECT ... FOR NO KEY UPDATE in id order.
    The lock makes bulk writes over the same units take turns, so what each one reads
    before writing (to count created and updated rows, to audit the variant a unit
    leaves) is still true when it writes. It does not block decide, whose inserts only
    take the weaker KEY SHARE lock on a unit. (SQLite serialises writers anyway.)
    """
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    Unit.objects.bulk_create(
        [Unit(product_id=product_id, key=key) for key in wanted], ignore_conflicts=True
    )
    return dict(
        Unit.objects.select_for_update(no_key=True)
        .filter(product_id=product_id, key__in=wanted)
        .order_by("id")
        .values_list("key", "id")
    )
