"""Measurements from a CSV file: `python manage.py import_measurements FILE --product KEY`.

The file has a header row naming the columns `unit`, `metric`, `value` and, optionally,
`measured_at` (in any order). It is read twice, as a stream, never whole:

1. check (`measurements_csv_check`): every row is validated — the unit key, a known metric
   that is not removed, a finite number, an ISO 8601 `measured_at` with a time-zone offset
   (empty means the time of the import, the same for every row), and no (metric, unit)
   twice. The first problems are reported with their line numbers and nothing is written.
2. write (`measurements_csv_write`): in ONE transaction, chunk after chunk of at most 10,000
   rows through the same set-based upsert as the bulk measurements API
   (lab.services.measurements): units are created as needed, an existing (metric, unit) gets
   the new value. Either every row is stored or none.

Memory grows with the number of distinct (metric, unit) pairs of the file only (the
duplicate check), about 150 bytes each; the rows themselves are never all held at once.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from django.db import transaction
from django.utils import timezone

from lab.errors import ApplicationError, BadRequest, NotFound
from lab.models import Metric, Product, Status
from lab.schema_types import utc_problem
from lab.services.bulk import MAX_BATCH_ROWS, Problems, Upserted
from lab.services.measurements import MeasurementRow, measurements_record
from rules.keys import unit_key_problem

REQUIRED_COLUMNS = ("unit", "metric", "value")
OPTIONAL_COLUMNS = ("measured_at",)
HEADER_HELP = "unit,metric,value[,measured_at]"
# A file with thousands of bad rows answers with the first ones: enough to fix the file.
MAX_REPORTED_PROBLEMS = 20
CHUNK_ROWS = MAX_BATCH_ROWS
PROGRESS_EVERY = 1_000

Progress = Callable[[int], None]


@dataclass(frozen=True)
class CheckedFile:
    rows: int
    # A digest of every cell read, so that the write pass notices a file that changed.
    digest: str


class FileRejected(BadRequest):
    """The file cannot be imported; `detail` lists the problems as "line N: ..." strings."""


def import_product(*, key: str, username: str | None = None) -> Product:
    """The product to import into: by key, and by its owner's username when several
    tenants use the same key."""
    products = Product.objects.filter(key=key)
    if username is not None:
        products = products.filter(user__username=username)
    found = list(products.select_related("user")[:2])
    if not found:
        owner = f" of user {username!r}" if username is not None else ""
        raise NotFound(f"no product {key!r}{owner}")
    if len(found) > 1:
        raise BadRequest(f"several users have a product {key!r}: name its owner with --user")
    return found[0]


def measurements_csv_check(
    *, product: Product, file: TextIO, progress: Progress | None = None
) -> CheckedFile:
    """Validate every row of `file`; raise FileRejected naming the first bad lines."""
    problems = _Problems()
    first_line_of: dict[tuple[int, str], int] = {}
    rows = 0
    digest = hashlib.blake2b()
    for line, row, problem in _rows(product, file, timezone.now(), progress, digest):
        if problem:
            problems.add(line, problem)
            continue
        pair = (row.metric_id, row.unit)
        if pair in first_line_of:
            problems.add(
                line,
                f"metric {row.metric!r} of unit {row.unit!r} is given already on line "
                f"{first_line_of[pair]}",
            )
            continue
        first_line_of[pair] = line
        rows += 1
    problems.raise_if_any()
    return CheckedFile(rows=rows, digest=digest.hexdigest())


@transaction.atomic
def measurements_csv_write(
    *, product: Product, file: TextIO, checked: CheckedFile, progress: Progress | None = None
) -> Upserted:
    """Write a file that `measurements_csv_check` accepted, in one transaction."""
    created = updated = 0
    chunk: list[MeasurementRow] = []
    digest = hashlib.blake2b()

    def flush() -> None:
        nonlocal created, updated
        try:
            result = measurements_record(product=product, rows=chunk)
        except ApplicationError as exc:
            raise FileRejected(
                [f"the product's metrics changed during the import: {exc.detail}"]
            ) from exc
        created += result.created
        updated += result.updated
        if progress:
            progress(len(chunk))
        chunk.clear()

    for line, row, problem in _rows(product, file, timezone.now(), None, digest):
        if problem:
            raise FileRejected([f"line {line}: {problem} (the file changed during the import)"])
        chunk.append(row.row)
        if len(chunk) == CHUNK_ROWS:
            flush()
    if chunk:
        flush()
    if digest.hexdigest() != checked.digest:
        # Raised inside the transaction: everything written so far is rolled back.
        raise FileRejected(["the file changed during the import"])
    return Upserted(created=created, updated=updated)


# --- parsing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    metric_id: int
    row: MeasurementRow

    @property
    def metric(self) -> str:
        return self.row.metric

    @property
    def unit(self) -> str:
        return self.row.unit


def open_csv(path: Path) -> TextIO:
    """The file opened for both passes.

    utf-8-sig: a byte order mark, as spreadsheet programs write it, is not part of the first
    column's name. newline="": the csv module handles line ends inside quoted cells.
    """
    return open(path, encoding="utf-8-sig", newline="")


def _rows(
    product: Product,
    file: TextIO,
    now: datetime,
    progress: Progress | None,
    digest: hashlib.blake2b,
) -> Iterator[tuple[int, _Row | None, str | None]]:
    """(line, row, None) for each good row, (line, None, problem) for each bad one; every
    cell read goes into `digest`."""
    metrics = {metric.key: metric for metric in Metric.objects.filter(product=product)}
    reader = csv.reader(file, strict=True)
    line = 0
    try:
        header = next(reader, None)
        if header is None:
            raise FileRejected([f"the file is empty: the first line must be {HEADER_HELP}"])
        columns = _columns(header)
        width = len(header)
        digest.update(repr(header).encode())
        counted = 0
        for cells in reader:
            line = reader.line_num
            if not cells:
                continue  # a blank line
            digest.update(repr(cells).encode())
            counted += 1
            if progress and counted == PROGRESS_EVERY:
                progress(counted)
                counted = 0
            if len(cells) != width:
                yield line, None, f"expected {width} columns, found {len(cells)}"
                continue
            yield line, *_parse(dict(zip(columns, cells, strict=True)), metrics, product, now)
        if progress and counted:
            progress(counted)
    except UnicodeDecodeError as exc:
        raise FileRejected([f"line {line + 1}: the file is not UTF-8 text ({exc.reason})"]) from exc
    except csv.Error as exc:
        raise FileRejected([f"line {reader.line_num}: {exc}"]) from exc


def _columns(header: list[str]) -> list[str]:
    columns = [name.strip().lower() for name in header]
    known = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    problems = [f"unknown column {name!r}" for name in columns if name not in known]
    problems += [f"column {name!r} is given twice" for name in known if columns.count(name) > 1]
    problems += [f"column {name!r} is missing" for name in REQUIRED_COLUMNS if name not in columns]
    if problems:
        raise FileRejected([f"line 1: {problem} (expected {HEADER_HELP})" for problem in problems])
    return columns


def _parse(
    cells: dict[str, str], metrics: dict[str, Metric], product: Product, now: datetime
) -> tuple[_Row | None, str | None]:
    unit = cells["unit"]
    problem = unit_key_problem(unit)
    if problem:
        return None, f"unit {unit!r}: {problem}"
    metric = metrics.get(cells["metric"])
    if metric is None:
        return None, f"no metric {cells['metric']!r} in product {product.key!r}"
    if metric.status == Status.REMOVED:
        return None, f"metric {metric.key!r} is removed"
    try:
        value = float(cells["value"])
    except ValueError:
        return None, f"value {cells['value']!r} is not a number"
    if not math.isfinite(value):
        return None, f"value {cells['value']!r} is not a finite number"
    measured_at = now
    raw_time = cells.get("measured_at", "")
    if raw_time:
        try:
            measured_at = datetime.fromisoformat(raw_time)
        except ValueError:
            return None, f"measured_at {raw_time!r} is not an ISO 8601 date and time"
        if timezone.is_naive(measured_at):
            # As in the measurements API: a time without an offset is refused, not guessed.
            return None, (
                f"measured_at {raw_time!r} has no time-zone offset (add Z or +01:00, say)"
            )
        if problem := utc_problem(measured_at):
            return None, f"measured_at {raw_time!r}: {problem}"
    row = MeasurementRow(metric=metric.key, unit=unit, value=value, measured_at=measured_at)
    return _Row(metric_id=metric.id, row=row), None


class _Problems(Problems):
    """Bad lines of the file, as "line N: ..." strings."""

    def __init__(self) -> None:
        super().__init__(limit=MAX_REPORTED_PROBLEMS)

    def add(self, line: int, problem: str) -> None:
        self._record(f"line {line}: {problem}")

    def _error(self, detail: list) -> Exception:
        return FileRejected(detail)
