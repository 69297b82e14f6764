"""What every bulk write shares (the admin API's batches and the CSV import): the batch
limit, the count of what was written, and the report of bad rows.

A bulk write validates every row first and writes nothing unless all are good; the bad
rows are reported together (the first ones: enough to fix the input) so that a caller
fixes them in one go.
"""

from dataclasses import dataclass, field

from lab.errors import BadRequest, PayloadTooLarge

MAX_BATCH_ROWS = 10_000
# A batch with thousands of bad rows answers with the first ones; enough to fix the input.
MAX_REPORTED_PROBLEMS = 100


def check_batch_size(*, count: int, what: str) -> None:
    if count > MAX_BATCH_ROWS:
        raise PayloadTooLarge(
            f"at most {MAX_BATCH_ROWS:,} {what} per request, this one has {count:,}: "
            "split it into several requests"
        )


@dataclass(frozen=True)
class Upserted:
    """What a bulk write did: rows that are new, and rows that replaced a stored one."""

    created: int
    updated: int


@dataclass
class Problems:
    """The bad rows of a bulk write: every one counted, the first `limit` kept.

    Subclasses say how a problem reads (`_item`), how "N more" reads (`_more`) and which
    error carries them (`_error`).
    """

    limit: int = MAX_REPORTED_PROBLEMS
    items: list = field(default_factory=list)
    count: int = 0

    def _record(self, item) -> None:
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append(item)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = self.count - len(self.items)
        raise self._error(self.items + ([self._more(more)] if more else []))

    def _more(self, more: int):
        return f"and {more:,} more bad rows"

    def _error(self, detail: list) -> Exception:
        return BadRequest(detail)


class BatchProblems(Problems):
    """Bad rows of a JSON batch, each reading like a validation error: `loc` names the body
    field, the row index and the field of the row."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self.field = field

    @property
    def problems(self) -> list[dict]:
        return self.items

    def add(self, index: int, row_field: str, kind: str, message: str) -> None:
        self._record(
            {
                "type": kind,
                "loc": ["body", self.field, index, row_field],
                "msg": f"{self.field}[{index}]: {message}",
            }
        )

    def _more(self, more: int) -> dict:
        return {
            "type": "more_problems",
            "loc": ["body", self.field],
            "msg": f"and {more:,} more bad rows",
        }
