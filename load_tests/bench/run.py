"""What every part of one benchmark run shares: its id, the project's paths, the progress log
and the nonces that keep new unit keys unique across runs."""

from __future__ import annotations

import secrets
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOAD_TESTS = ROOT / "load_tests"
WRK_DIR = LOAD_TESTS / "wrk"
OPENLOOP = LOAD_TESTS / "openloop.py"
RUN_ID = f"{datetime.now(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(2)}"

_nonce_counter = 0


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def new_nonce() -> str:
    """A fresh LAB_RUN_NONCE for one load generator run: its new units are new to the server."""
    global _nonce_counter
    _nonce_counter += 1
    return f"{RUN_ID}-{_nonce_counter}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
