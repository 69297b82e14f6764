"""SECRET_KEY signs the cached configs Lab reads back: never the key printed in its source.

docs/operations.md, "SECRET_KEY": with DEBUG off, gunicorn refuses to load Lab on the built-in
development key, naming the setting; `make serve` makes a random key once and keeps it.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from deploy import serve
from tests.e2e.processes import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def lab_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A server's environment on a throwaway SQLite file, without SECRET_KEY or a key file."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SECRET_KEY", "PROMETHEUS_MULTIPROC_DIR", "GUNICORN_CMD_ARGS")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'lab.sqlite3'}",
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY_FILE=str(tmp_path / "no-such-key-file"),
        DEBUG="false",
    )
    env.update(overrides)
    return env


def gunicorn_command(port: int) -> list[str]:
    """The production command, one worker."""
    return [
        *(sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", "1"),
        *("-b", f"127.0.0.1:{port}", "config.wsgi:application"),
    ]


def run_gunicorn(env: dict[str, str], port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        gunicorn_command(port),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gunicorn__debug_off_without_secret_key__refuses_to_start_naming_the_setting(tmp_path):
    # Given no SECRET_KEY and no key file, DEBUG off
    env = lab_env(tmp_path)
    # When the production command starts
    started = run_gunicorn(env, free_port())
    # Then it exits at once with an error, whose last line names the setting
    assert started.returncode != 0
    last_line = started.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured: SECRET_KEY is not set" in last_line, started.stderr[-2000:]
    assert "SECRET_KEY_FILE" in last_line


@pytest.mark.parametrize(
    ("overrides", "expected_key"),
    [
        ({"SECRET_KEY": "a-key-from-the-environment"}, "a-key-from-the-environment"),
        ({"DEBUG": "true"}, "lab-insecure-development-key-change-me"),
    ],
    ids=["secret_key_set", "debug_on"],
)
def test_wsgi__a_key_or_debug__loads(tmp_path, overrides, expected_key):
    env = lab_env(tmp_path, **overrides)
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import config.wsgi; from django.conf import settings; print(settings.SECRET_KEY)",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip().splitlines()[-1] == expected_key


def test_ensure_secret_key__makes_a_random_key_once_and_keeps_it(tmp_path, monkeypatch):
    # Given no SECRET_KEY and no key file yet
    key_file = tmp_path / ".secret_key"
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.setenv("SECRET_KEY_FILE", str(key_file))
    # When `make serve` starts twice
    serve.ensure_secret_key()
    first = key_file.read_text()
    serve.ensure_secret_key()
    # Then the first start made a random key, owner-only, and the second kept it
    assert key_file.read_text() == first
    assert len(first.strip()) >= 50
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".secret_key"]  # no temporary file left
    # and another deployment's first start makes another key
    other = tmp_path / "other" / ".secret_key"
    other.parent.mkdir()
    monkeypatch.setenv("SECRET_KEY_FILE", str(other))
    serve.ensure_secret_key()
    assert other.read_text() != first


def test_gunicorn__key_file__serves_with_it(tmp_path):
    # Given a key file, as `make serve` leaves it, and no SECRET_KEY
    key_file = tmp_path / ".secret_key"
    key_file.write_text("a-key-from-the-file\n")
    env = lab_env(tmp_path, SECRET_KEY_FILE=str(key_file))
    port = free_port()
    process = subprocess.Popen(
        gunicorn_command(port),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Then Lab serves
        answered = None
        for _ in range(240):
            if process.poll() is not None:
                break
            try:
                answered = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
                break
            except requests.RequestException:
                time.sleep(0.25)
        assert answered is not None and answered.status_code == 200, process.stderr
    finally:
        process.terminate()
        process.wait(60)
