"""The one-row-per-unit CSV export (docs/results.md §14), for pandas, JMP or Minitab.

Columns: ``unit``, then one per experiment (the key of the unit's variant, empty when it has
no assignment), then one per metric (its value, written with the shortest text that reads back
as the same double; empty when not measured). Rows: every unit of the product with an
assignment in one of the experiments or a measurement of one of the metrics, by unit key.

One query with a join per column, read through a server-side cursor on PostgreSQL (a chunked
iterator elsewhere): memory stays flat whatever the number of units.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from django.conf import settings
from django.db.models import FilteredRelation, Q

from lab.analysis.moments import hash_join_plan
from lab.errors import BadRequest
from lab.models import Experiment, Metric, Product, Status, Unit
from lab.replica import connection
from lab.selectors.experiments import experiment_get
from lab.selectors.metrics import metric_get

MAX_COLUMNS = 50
CHUNK_ROWS = 2000


def export_columns(
    *, product: Product, experiments: list[str] | None, metrics: list[str] | None
) -> tuple[list[Experiment], list[Metric]]:
    """The experiments and metrics asked for (by key, in the order given; distinct keys, as
    the API's query schema checks), or by default every one that is not removed (creation
    order)."""
    experiment_keys, metric_keys = experiments, metrics
    if experiment_keys is None:
        chosen_experiments = list(
            Experiment.objects.filter(product=product).exclude(status=Status.REMOVED).order_by("id")
        )
    else:
        chosen_experiments = [experiment_get(product=product, key=k) for k in experiment_keys]
    if metric_keys is None:
        chosen_metrics = list(
            Metric.objects.filter(product=product).exclude(status=Status.REMOVED).order_by("id")
        )
    else:
        chosen_metrics = [metric_get(product=product, key=k) for k in metric_keys]
    if len(chosen_experiments) + len(chosen_metrics) > MAX_COLUMNS:
        raise BadRequest(
            f"at most {MAX_COLUMNS} experiments and metrics in one export; list the ones "
            "you need with ?experiments= and ?metrics="
        )
    if not chosen_experiments and not chosen_metrics:
        raise BadRequest("nothing to export: the product has no experiment and no metric")
    return chosen_experiments, chosen_metrics


def header(experiments: list[Experiment], metrics: list[Metric]) -> list[str]:
    """Experiment keys, then metric keys; a metric whose key is also an experiment's gets
    the suffix ``:value`` so that every column name is unique."""
    experiment_keys = {e.key for e in experiments}
    return (
        ["unit"]
        + [e.key for e in experiments]
        + [f"{m.key}:value" if m.key in experiment_keys else m.key for m in metrics]
    )


def export_rows(
    *, product: Product, experiments: list[Experiment], metrics: list[Metric]
) -> Iterator[tuple]:
    relations = {}
    present = Q()
    columns = ["key"]
    for i, experiment in enumerate(experiments):
        relations[f"e{i}"] = FilteredRelation(
            "assignments", condition=Q(assignments__experiment_id=experiment.id)
        )
        present |= Q(**{f"e{i}__id__isnull": False})
        columns.append(f"e{i}__variant__key")
    for i, metric in enumerate(metrics):
        relations[f"m{i}"] = FilteredRelation(
            "measurements", condition=Q(measurements__metric_id=metric.id)
        )
        present |= Q(**{f"m{i}__id__isnull": False})
        columns.append(f"m{i}__value")
    rows = (
        Unit.objects.filter(product=product)
        .annotate(**relations)
        .filter(present)
        .order_by("key")
        .values_list(*columns)
    )
    return rows.iterator(chunk_size=CHUNK_ROWS)


def _cell(value) -> str | float:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same double
    return value


def _allow_long_first_fetch() -> None:
    """The export's first FETCH joins and sorts every unit before its first row, which at 10^6
    units outlasts the default statement timeout (load_tests/RESULTS.md has the figures):
    EXPORT_STATEMENT_TIMEOUT_MS applies instead, for this transaction only."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, true)",
            [str(settings.EXPORT_STATEMENT_TIMEOUT_MS)],
        )


def csv_stream(
    *, product: Product, experiments: list[Experiment], metrics: list[Metric]
) -> Iterator[str]:
    """The CSV text, a chunk of rows at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header(experiments, metrics))
    # Inside one transaction: the server-side cursor streams from PostgreSQL (no result set
    # materialised for WITH HOLD), with the plan of every analysis.
    with hash_join_plan():
        _allow_long_first_fetch()
        rows = export_rows(product=product, experiments=experiments, metrics=metrics)
        for count, row in enumerate(rows, start=1):
            writer.writerow([_cell(value) for value in row])
            if count % CHUNK_ROWS == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()
