"""manage.py import_measurements: a CSV file of measurements, all rows or none."""

from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from lab.models import Measurement, Metric, Product, Status, Unit
from lab.services import measurement_import
from lab.services.units import Upserted
from tests.factories import ProductFactory, UserFactory

HEADER = "unit,metric,value,measured_at\n"


@pytest.fixture
def widget(product) -> Product:
    widget = Product.objects.get(key="widget", user__username="alice")
    Metric.objects.create(product=widget, key="thickness", lower_limit=0.9, upper_limit=1.1)
    Metric.objects.create(product=widget, key="width")
    Metric.objects.create(product=widget, key="retired", status=Status.REMOVED)
    return widget


@pytest.fixture
def write_csv(tmp_path):
    def write(text: str, name: str = "measurements.csv", encoding: str = "utf-8"):
        path = tmp_path / name
        path.write_text(text, encoding=encoding)
        return path

    return write


def run_import(path, *args: str) -> str:
    output = StringIO()
    call_command(
        "import_measurements",
        str(path),
        "--product",
        "widget",
        *args,
        stdout=output,
        stderr=StringIO(),
    )
    return output.getvalue().strip()


def rejected(path, *args: str) -> str:
    with pytest.raises(CommandError) as error:
        run_import(path, *args)
    return str(error.value)


def stored() -> dict[tuple[str, str], float]:
    return {
        (m.metric.key, m.unit.key): m.value
        for m in Measurement.objects.select_related("metric", "unit")
    }


# --- happy paths -------------------------------------------------------------------------


def test_import__good_file__stores_every_row_and_creates_units(widget, write_csv):
    # Given
    path = write_csv(
        HEADER
        + "SN-1,thickness,1.01,2025-03-01T08:00:00Z\n"
        + "SN-1,width,10.2,2025-03-01T08:00:00+02:00\n"
        + "SN-2,thickness,0.97,2025-03-01 09:30:00.5-01:00\n"
        + "SN-3,thickness,-1e-3,\n"
    )
    # When
    output = run_import(path, "--user", "alice")
    # Then
    assert output == "Imported 4 measurements into product 'widget': 4 created, 0 updated."
    assert stored() == {
        ("thickness", "SN-1"): 1.01,
        ("width", "SN-1"): 10.2,
        ("thickness", "SN-2"): 0.97,
        ("thickness", "SN-3"): -0.001,
    }
    assert set(Unit.objects.values_list("key", flat=True)) == {"SN-1", "SN-2", "SN-3"}
    times = {
        (m.metric.key, m.unit.key): m.measured_at
        for m in Measurement.objects.select_related("metric", "unit")
    }
    assert times[("thickness", "SN-1")] == datetime(2025, 3, 1, 8, tzinfo=UTC)
    assert times[("width", "SN-1")] == datetime(2025, 3, 1, 6, tzinfo=UTC)
    assert times[("thickness", "SN-2")] == datetime(2025, 3, 1, 10, 30, 0, 500000, tzinfo=UTC)
    # No time at all is the time of the import
    assert times[("thickness", "SN-3")] > datetime(2025, 3, 2, tzinfo=UTC)


def test_import__again_with_changes__counts_created_and_updated(widget, write_csv):
    # Given SN-1 and SN-2 measured already
    run_import(write_csv(HEADER + "SN-1,thickness,1.0,\nSN-2,thickness,1.0,\n", "first.csv"))
    # When a file replaces SN-2's value and adds SN-3
    output = run_import(
        write_csv(HEADER + "SN-2,thickness,1.05,\nSN-3,thickness,0.95,\n", "second.csv")
    )
    # Then
    assert output.endswith("1 created, 1 updated.")
    assert stored() == {
        ("thickness", "SN-1"): 1.0,
        ("thickness", "SN-2"): 1.05,
        ("thickness", "SN-3"): 0.95,
    }


def test_import__columns_in_any_order_bom_quotes_and_blank_lines__accepted(widget, write_csv):
    path = write_csv(
        'Value , METRIC,unit\n1.5,width,"LOT 7, wafer 3"\n\n2.5,width,Ünit-é\n',
        encoding="utf-8-sig",
    )
    assert run_import(path).endswith("2 created, 0 updated.")
    assert stored() == {("width", "LOT 7, wafer 3"): 1.5, ("width", "Ünit-é"): 2.5}


def test_import__header_only__nothing_to_do(widget, write_csv):
    assert run_import(write_csv(HEADER)).endswith("0 created, 0 updated.")


def test_import__more_rows_than_one_batch__written_in_chunks(widget, write_csv, monkeypatch):
    # Given chunks of 3 rows and a file of 8
    monkeypatch.setattr(measurement_import, "CHUNK_ROWS", 3)
    rows = "".join(f"SN-{i},width,{i}.5,\n" for i in range(8))
    # When
    output = run_import(write_csv(HEADER + rows))
    # Then
    assert output.endswith("8 created, 0 updated.")
    assert Measurement.objects.count() == 8


def test_import__a_later_chunk_fails__earlier_chunks_rolled_back(widget, write_csv, monkeypatch):
    # Given the second chunk's write fails (e.g. the database refuses it)
    monkeypatch.setattr(measurement_import, "CHUNK_ROWS", 3)
    calls = []
    original = measurement_import.measurements_record

    def failing_second_time(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(**kwargs)

    monkeypatch.setattr(measurement_import, "measurements_record", failing_second_time)
    rows = "".join(f"SN-{i},width,{i},\n" for i in range(8))
    # When
    with pytest.raises(RuntimeError):
        run_import(write_csv(HEADER + rows))
    # Then nothing of the first chunk is left
    assert Measurement.objects.count() == 0
    assert Unit.objects.count() == 0


# --- bad rows: the line is named and nothing is written -----------------------------------


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("SN-9,nope,1.0,", "line 4: no metric 'nope' in product 'widget'"),
        ("SN-9,retired,1.0,", "line 4: metric 'retired' is removed"),
        ("SN-9,width,nan,", "line 4: value 'nan' is not a finite number"),
        ("SN-9,width,inf,", "line 4: value 'inf' is not a finite number"),
        ("SN-9,width,-Infinity,", "line 4: value '-Infinity' is not a finite number"),
        ("SN-9,width,1e400,", "line 4: value '1e400' is not a finite number"),
        ("SN-9,width,1.0.0,", "line 4: value '1.0.0' is not a number"),
        ("SN-9,width,,", "line 4: value '' is not a number"),
        ("SN-9,width,1.0,yesterday", "line 4: measured_at 'yesterday' is not an ISO 8601"),
        ("SN-9,width,1.0,2025-02-30T00:00:00Z", "line 4: measured_at '2025-02-30T00:00:00Z'"),
        ("SN-9,width,1.0,2025-03-01T08:00:00", "line 4: measured_at '2025-03-01T08:00:00' has no"),
        (
            "SN-9,width,1.0,0001-01-01T00:00:00+01:00",
            "line 4: measured_at '0001-01-01T00:00:00+01:00': the time is out of range",
        ),
        (",width,1.0,", "line 4: unit '': a unit key has 1 to 128 characters"),
        (" SN-9,width,1.0,", "line 4: unit ' SN-9': a unit key may not start or end"),
        ("SN/9,width,1.0,", "line 4: unit 'SN/9': a unit key may not contain \"/\""),
        ("SN-9,width,1.0", "line 4: expected 4 columns, found 3"),
        (
            "SN-1,thickness,1.0,",
            "line 4: metric 'thickness' of unit 'SN-1' is given already on line 2",
        ),
    ],
)
def test_import__bad_row__names_its_line_and_writes_nothing(widget, write_csv, row, message):
    # Given a measurement stored before, and a file whose third row is bad
    run_import(write_csv(HEADER + "SN-0,width,7.0,\n", "before.csv"))
    path = write_csv(HEADER + "SN-1,thickness,1.0,\nSN-2,thickness,1.1,\n" + row + "\n")
    # When
    error = rejected(path)
    # Then
    assert "nothing was imported" in error
    assert message in error, error
    assert stored() == {("width", "SN-0"): 7.0}
    assert set(Unit.objects.values_list("key", flat=True)) == {"SN-0"}


def test_import__line_numbers__count_the_header_and_blank_lines(widget, write_csv):
    path = write_csv(HEADER + "SN-1,width,1,\n\n\nSN-2,width,x,\n")
    assert "line 5: value 'x' is not a number" in rejected(path)


def test_import__many_bad_rows__first_ones_listed_then_a_count(widget, write_csv):
    rows = "".join(f"SN-{i},width,bad,\n" for i in range(50))
    error = rejected(write_csv(HEADER + rows))
    assert "line 2: value 'bad'" in error
    assert f"line {measurement_import.MAX_REPORTED_PROBLEMS + 1}:" in error
    assert f"line {measurement_import.MAX_REPORTED_PROBLEMS + 2}:" not in error
    assert f"and {50 - measurement_import.MAX_REPORTED_PROBLEMS} more bad rows" in error


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("unit,metric\nSN-1,width\n", "line 1: column 'value' is missing"),
        ("unit,metric,value,colour\n", "line 1: unknown column 'colour'"),
        ("unit,metric,value,value\n", "line 1: column 'value' is given twice"),
    ],
)
def test_import__bad_header__refused(widget, write_csv, text, message):
    assert message in rejected(write_csv(text))


def test_import__not_utf8__refused_with_a_line(widget, write_csv, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(HEADER.encode() + "SN-1,width,1,\nSN-é,width,2,\n".encode("latin-1"))
    assert "not UTF-8" in rejected(path)
    assert Measurement.objects.count() == 0


def test_import__missing_file__error(widget, tmp_path):
    assert "no such file" in rejected(tmp_path / "nope.csv")


# --- which product -----------------------------------------------------------------------


def test_import__unknown_product__error(widget, write_csv):
    path = write_csv(HEADER)
    with pytest.raises(CommandError, match="no product 'gadget'"):
        call_command("import_measurements", str(path), "--product", "gadget", stdout=StringIO())


def test_import__key_shared_by_two_tenants__needs_user(widget, write_csv):
    # Given another tenant with a product of the same key
    other = ProductFactory(user=UserFactory(username="mallory"), key="widget")
    Metric.objects.create(product=other, key="width")
    path = write_csv(HEADER + "SN-1,width,3.0,\n")
    # When / Then
    assert "name its owner with --user" in rejected(path)
    run_import(path, "--user", "mallory")
    assert Measurement.objects.get().metric.product == other
    assert "no product 'widget' of user 'nobody'" in rejected(path, "--user", "nobody")


# --- the write pass on its own -----------------------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [
        "SN-1,width,1,\nSN-2,width,2,\n",  # a row more
        "SN-1,width,1.5,\n",  # as many rows, another value
        "SN-1,width,x,\n",  # a row that is bad now
    ],
)
def test_write__file_changed_after_the_check__refused_and_nothing_written(
    widget, write_csv, changed
):
    path = write_csv(HEADER + "SN-1,width,1,\n")
    with measurement_import.open_csv(path) as rows:
        checked = measurement_import.measurements_csv_check(product=widget, file=rows)
    path.write_text(HEADER + changed)
    with (
        measurement_import.open_csv(path) as rows,
        pytest.raises(measurement_import.FileRejected, match="changed during the import"),
    ):
        measurement_import.measurements_csv_write(product=widget, file=rows, checked=checked)
    assert Measurement.objects.count() == 0
    assert Unit.objects.count() == 0


def test_write__returns_counts(widget, write_csv):
    path = write_csv(HEADER + "SN-1,width,1,\n")
    with measurement_import.open_csv(path) as rows:
        checked = measurement_import.measurements_csv_check(product=widget, file=rows)
    with measurement_import.open_csv(path) as rows:
        result = measurement_import.measurements_csv_write(
            product=widget, file=rows, checked=checked
        )
    assert result == Upserted(created=1, updated=0)
