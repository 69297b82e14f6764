"""The CSV export: GET /products/{p}/export.csv, read back with pandas."""

import io

import pandas as pd
import pytest

EXPORT = "/products/widget/export.csv"


@pytest.fixture
def exported(plant):
    plant.experiment("etch", ["short", "long"])
    plant.experiment("anneal", ["cool", "hot"])
    plant.metric("thickness")
    plant.metric("width")
    plant.units(
        [{"etch": "short", "anneal": "hot"}, {"etch": "long"}, {"anneal": "cool"}],
        {"thickness": [1.0000000000000002, 0.1 + 0.2, None], "width": [1e-300, None, -2.5]},
        keys=["SN-2", 'lot 7, wafer "3"', "0001"],
    )
    plant.units([{}], {}, keys=["never-touched"])
    return plant


def read(response) -> pd.DataFrame:
    body = b"".join(response.streaming_content)
    # float_precision="round_trip": pandas' default float parser may differ in the last bit
    return pd.read_csv(
        io.BytesIO(body),
        dtype={"unit": str},
        keep_default_na=False,
        na_values=[""],
        float_precision="round_trip",
    )


def test_export__round_trip__pandas_reads_every_value_and_type(tenant, exported):
    # When
    response = tenant.get(EXPORT)
    # Then a streamed CSV
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    frame = read(response)
    assert list(frame.columns) == ["unit", "etch", "anneal", "thickness", "width"]
    # One row per unit with something to export, by unit key
    assert list(frame.unit) == ["0001", "SN-2", 'lot 7, wafer "3"']
    assert frame.thickness.dtype == "float64" and frame.width.dtype == "float64"
    rows = frame.set_index("unit")
    # Doubles come back bit for bit
    assert rows.loc["SN-2", "thickness"] == 1.0000000000000002
    assert rows.loc['lot 7, wafer "3"', "thickness"] == 0.1 + 0.2
    assert rows.loc["SN-2", "width"] == 1e-300
    assert (rows.loc["SN-2", "etch"], rows.loc["SN-2", "anneal"]) == ("short", "hot")
    assert pd.isna(rows.loc["0001", "etch"]) and rows.loc["0001", "anneal"] == "cool"
    assert pd.isna(rows.loc["0001", "thickness"]) and rows.loc["0001", "width"] == -2.5


def test_export__chosen_columns__in_the_order_asked(tenant, exported):
    frame = read(tenant.get(EXPORT, experiments="anneal", metrics="width,thickness"))
    assert list(frame.columns) == ["unit", "anneal", "width", "thickness"]
    assert len(frame) == 3


def test_export__many_units__streamed_in_chunks(tenant, plant):
    plant.experiment("etch", ["a", "b"])
    plant.metric("y")
    count = 4500
    plant.units([{"etch": "ab"[i % 2]} for i in range(count)], {"y": [i / 7 for i in range(count)]})
    response = tenant.get(EXPORT)
    chunks = list(response.streaming_content)
    assert len(chunks) >= 3  # header + rows leave in several pieces, not one buffer
    frame = pd.read_csv(
        io.BytesIO(b"".join(chunks)), dtype={"unit": str}, float_precision="round_trip"
    )
    assert len(frame) == count
    assert sorted(frame.y) == sorted(i / 7 for i in range(count))


@pytest.mark.parametrize(
    ("query", "status"),
    [
        # Not distinct keys separated by commas (or repeated): refused by the schema.
        ({"experiments": "etch,etch"}, 422),
        ({"experiments": ["etch", "etch"]}, 422),
        ({"metrics": "thickness,,width"}, 422),
        ({"metrics": ",".join(f"m{i}" for i in range(21))}, 422),
        ({"experiments": "nope"}, 404),
        ({"metrics": "NOPE"}, 422),
    ],
)
def test_export__bad_query__clear_error(tenant, exported, query, status):
    response = tenant.get(EXPORT, **query)
    assert response.status_code == status
    assert response.json()["detail"]


def test_export__another_tenant__404(other_tenant, exported):
    assert other_tenant.get(EXPORT).status_code == 404


def test_export__postgresql__its_statements_get_the_export_timeout(tenant, plant, settings):
    """The first fetch sorts every unit, past the default timeout at 10^6 units: the export
    runs under EXPORT_STATEMENT_TIMEOUT_MS, not the 5 s default (set_config local to its
    transaction)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("statement timeouts are PostgreSQL's")
    plant.experiment("etch", ["a", "b"])
    plant.metric("y")
    plant.units([{"etch": "ab"[i % 2]} for i in range(4500)], {"y": [1.0] * 4500})
    settings.EXPORT_STATEMENT_TIMEOUT_MS = 123_456
    response = tenant.get(EXPORT)
    chunks = iter(response.streaming_content)
    next(chunks)  # a first chunk of rows: the export's transaction is open
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        during = cursor.fetchone()[0]
    list(chunks)
    assert during == "123456ms"


def test_export__repeated_parameter_or_empty_list__like_commas(tenant, exported):
    # Repeated keys, and keys separated by commas, in one list
    frame = read(tenant.get(EXPORT, experiments="anneal", metrics=["width", "thickness"]))
    assert list(frame.columns) == ["unit", "anneal", "width", "thickness"]
    # `?experiments=` alone: no experiment column
    frame = read(tenant.get(EXPORT, experiments="", metrics="width"))
    assert list(frame.columns) == ["unit", "width"]
