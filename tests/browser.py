"""Headless Chromium for tests that need a real browser (Debian's `chromium`).

    render_dom(url) -> str        the page's DOM after its scripts ran (`--dump-dom`)
    screenshot(url, path) -> Path a PNG of the page

Each call starts a fresh Chromium with an empty profile of its own and no background
traffic (no QUIC, sync, component updates or first-run pages), so nothing but the page's own
requests leaves it. Scripts get a virtual-time budget: Chromium fast-forwards timers and
waits for the page's network requests before it dumps or shoots.

Locally a test skips when Chromium is not installed; under CI=true it fails (`.ci/run`
installs it). `CHROMIUM` names another binary.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
DEFAULT_BUDGET_MS = 10_000
TIMEOUT_SECONDS = 90


def chromium() -> str:
    """The Chromium binary; skips the test (fails it under CI=true) when there is none."""
    named = os.environ.get("CHROMIUM")
    found = (
        shutil.which(named) if named else next(filter(None, map(shutil.which, CANDIDATES)), None)
    )
    if found:
        return found
    reason = f"Chromium is not installed (looked for {named or ', '.join(CANDIDATES)})"
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _run(url: str, *flags: str, budget_ms: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="lab-chromium-") as profile:
        completed = subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *flags,
                url,
            ],
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    if completed.returncode != 0:
        raise AssertionError(
            f"chromium exited {completed.returncode} on {url}:\n"
            f"{completed.stderr.decode(errors='replace')[-3000:]}"
        )
    return completed


def render_dom(url: str, *, budget_ms: int = DEFAULT_BUDGET_MS) -> str:
    """The serialized DOM of `url` once its scripts ran (not the HTML the server sent)."""
    return _run(url, "--dump-dom", budget_ms=budget_ms).stdout.decode(errors="replace")


def screenshot(
    url: str,
    path: str | Path,
    *,
    width: int = 1280,
    height: int = 900,
    budget_ms: int = DEFAULT_BUDGET_MS,
) -> Path:
    """A PNG of `url` at width × height pixels, written to `path` (returned)."""
    path = Path(path).resolve()
    _run(
        url,
        f"--screenshot={path}",
        f"--window-size={width},{height}",
        budget_ms=budget_ms,
    )
    if not path.exists():
        raise AssertionError(f"chromium wrote no screenshot of {url} to {path}")
    return path
