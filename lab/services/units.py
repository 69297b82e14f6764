"""Units, and what every bulk write of the admin API shares: the batch limit, the
row-by-row report of bad input, and units created on the fly.

Bulk writes are set-based: a fixed number of statements whatever the batch size (up to
10,000 rows). Rows are written in a fixed order (unit keys sorted, then ids sorted) so
that concurrent batches over the same units take their row locks in the same order and
cannot deadlock each other.
"""

from collections.abc import Collection
from dataclasses import dataclass, field

from django.db import transaction

from lab.errors import BadRequest, PayloadTooLarge
from lab.models import Product, Unit

MAX_BATCH_ROWS = 10_000
# A batch with thousands of bad rows answers with the first ones; enough to fix the input.
MAX_REPORTED_PROBLEMS = 100


def check_batch_size(*, count: int, what: str) -> None:
    if count > MAX_BATCH_ROWS:
        raise PayloadTooLarge(
            f"at most {MAX_BATCH_ROWS:,} {what} per request, this one has {count:,}: "
            "split it into several requests"
        )


@dataclass
class BatchProblems:
    """The bad rows of a batch, reported together so the caller can fix them in one go.

    Each problem reads like a validation error: `loc` names the body field, the row index
    and the field of the row.
    """

    field: str
    problems: list[dict] = field(default_factory=list)
    count: int = 0

    def add(self, index: int, row_field: str, kind: str, message: str) -> None:
        self.count += 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            self.problems.append(
                {
                    "type": kind,
                    "loc": ["body", self.field, index, row_field],
                    "msg": f"{self.field}[{index}]: {message}",
                }
            )

    def raise_if_any(self) -> None:
        if not self.count:
            return
        detail = list(self.problems)
        if self.count > len(detail):
            detail.append(
                {
                    "type": "more_problems",
                    "loc": ["body", self.field],
                    "msg": f"and {self.count - len(detail):,} more bad rows",
                }
            )
        raise BadRequest(detail)


@dataclass(frozen=True)
class Upserted:
    """What a bulk write did: rows that are new, and rows that replaced a stored one."""

    created: int
    updated: int


@dataclass(frozen=True)
class UnitsCreated:
    created: int
    existing: int


@transaction.atomic
def units_create(*, product: Product, keys: Collection[str]) -> UnitsCreated:
    """Create the units of `keys` that do not exist yet; existing ones are left as they are.

    The same key given twice is one unit. Counts are exact unless another request creates
    one of the same units in the same instant: then both answers count it as created.
    """
    check_batch_size(count=len(keys), what="units")
    wanted = sorted(set(keys))
    existing = set(
        Unit.objects.filter(product=product, key__in=wanted).values_list("key", flat=True)
    )
    new = [Unit(product=product, key=key) for key in wanted if key not in existing]
    Unit.objects.bulk_create(new, ignore_conflicts=True)
    return UnitsCreated(created=len(new), existing=len(existing))


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
