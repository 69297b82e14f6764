"""Lab's settings take libpq's multi-host DATABASE_URL of the Patroni cluster (deploy/ha)."""

import os
import subprocess
import sys
from pathlib import Path

import environ
import pytest
from django.db import connection

from tests.conftest import requires_postgres
from tests.drills.harness import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_settings__multi_host_url__keeps_every_host_and_the_session_attrs():
    # Given the DATABASE_URL `make ha-up` prints
    url = "postgres://postgres@127.0.0.1:5440,127.0.0.1:5441/lab?target_session_attrs=read-write"
    # When the settings parse it
    database = environ.Env.db_url_config(url)
    # Then libpq gets both hosts, in order, and connects only to the one that takes writes
    assert database["HOST"] == "127.0.0.1,127.0.0.1"
    assert database["PORT"] == "5440,5441"
    assert database["OPTIONS"]["target_session_attrs"] == "read-write"
    assert database["NAME"] == "lab"


@pytest.mark.django_db
def test_settings__multi_host_url_whose_first_host_is_down__lab_uses_the_next():
    requires_postgres()
    # Given a DATABASE_URL whose first host answers nothing and whose second is the database
    settings = connection.settings_dict
    dead = free_port()
    url = (
        f"postgres://{settings['USER']}@127.0.0.1:{dead},{settings['HOST']}:{settings['PORT']}"
        f"/{settings['NAME']}?target_session_attrs=read-write"
    )
    # When Lab's settings connect with it (a process of its own, as gunicorn would)
    probe = (
        "import django; django.setup(); from django.db import connection; "
        "from decide.memory.listener import listener_connection_params; import psycopg; "
        "c = connection.cursor(); c.execute('SELECT inet_server_port()'); "
        "print(c.fetchone()[0]); "
        "p = psycopg.connect(**listener_connection_params()); "
        "print(p.execute('SELECT inet_server_port()').fetchone()[0])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_NAME"}
    env.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="lab.settings")
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    # Then both Django's connection and the known-unit listener's reach the second host
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [str(settings["PORT"])] * 2
