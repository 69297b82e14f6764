"""Lab as an OpenFeature provider, for the three real OpenFeature clients, against a real
gunicorn:

- the Python SDK with its OFREP provider (openfeature-sdk, openfeature-provider-ofrep);
- the JavaScript server SDK with its OFREP provider (@openfeature/server-sdk,
  @openfeature/ofrep-provider), under Node: tests/e2e/js/server-provider.mjs;
- the JavaScript web SDK with its OFREP web provider (@openfeature/web-sdk,
  @openfeature/ofrep-web-provider), under Node (tests/e2e/js/web-provider.mjs) and in a page of
  another origin in headless Chromium (tests/e2e/js/browser.mjs), which needs CORS.

Every provider evaluates the same cases. A unit in the experiment gets its variant; a unit
decide answers null for (paused experiment, outside coverage, targeted out) gets the default
the caller passed, as Lab answers those without a value (OFREP's codeDefaultFlag): with no
error from the Python and web providers, and with the GENERAL error the JavaScript server
provider (0.1.3, which predates codeDefaultFlag) reports for it. An unknown flag is
FLAG_NOT_FOUND. Every answer the clients got is validated against the OFREP schema
(tests/contract/ofrep_schema.py). The JavaScript packages are pinned in
tests/e2e/js/package-lock.json (see docs/decide.md, "OpenFeature: OFREP").
"""

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from openfeature import api as openfeature
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import ErrorCode, Reason

from tests.contract import ofrep_schema
from tests.contract.ofrep_schema import REASONS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "e2e" / "js"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# The caller's default: what a unit decide answers null for must read, and what every
# error reads.
DEFAULT = "standard"
UNIT = "OF-1"
# The unit's context: line "3".
ATTRIBUTES = {"line": "3"}

# The cases every client evaluates: flag -> what the unit gets.
EXPERIMENTS = [
    {"key": "etch", "variants": [["short", 1], ["long", 1]]},
    {"key": "etch-time", "variants": [["short", 1], ["long", 1]], "status": "disabled"},
    {"key": "litho", "variants": [["x", 1], ["y", 1]], "coverage": 0.0},
    {
        "key": "dose",
        "variants": [["low", 1], ["high", 1]],
        "fields": {"conditions": [{"attribute": "line", "operator": "in", "values": ["9"]}]},
    },
]
EXPECTED = {
    "etch": ("variant", {"short", "long"}, "SPLIT"),
    "etch-time": ("default", None, "DISABLED"),  # paused
    "litho": ("default", None, "SPLIT"),  # outside coverage
    "dose": ("default", None, "TARGETING_MATCH"),  # targeted out
    "no-such-flag": ("error", None, "FLAG_NOT_FOUND"),
}

# What the JavaScript server provider (@openfeature/ofrep-provider 0.1.3) reports for an
# answer without a value: it predates the protocol's codeDefaultFlag, takes a 200 without
# `value` for a malformed answer and reports an error, but hands the caller its default all
# the same (docs/decide.md, "OpenFeature: OFREP").
JS_SERVER_WITHOUT_VALUE = {
    "reason": "ERROR",
    "errorCode": "GENERAL",
    "errorMessage": "The OFREP response does not match the expected format",
}


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {what}")
    pytest.skip(what)


@pytest.fixture(scope="module")
def node() -> str:
    """Node with the pinned JavaScript clients installed (npm ci when missing or stale)."""
    path = shutil.which("node")
    if not path or not shutil.which("npm"):
        _missing("node and npm are not installed")
    installed = subprocess.run(
        ["bash", str(JS / "install.sh")], capture_output=True, text=True, timeout=600
    )
    if installed.returncode != 0:
        _missing(f"npm ci failed in {JS}: {installed.stderr[-2000:]}")
    return path


@pytest.fixture
def flags(server) -> dict:
    """A fresh product with the cases above."""
    suffix = f"{os.getpid()}-{time.monotonic_ns()}"
    seeded = server.orm(
        "seed", username=f"of-{suffix}", product=f"of-{suffix}"[:64], experiments=EXPERIMENTS
    )
    return {**seeded, "expected": dict(EXPECTED)}


def _check(provider: str, flag: str, result: dict, expected: tuple, decided: dict) -> None:
    """One evaluation, as the client reported it: {"value", "variant", "reason", "errorCode"}."""
    kind, variants, reason = expected
    where = (provider, flag, result)
    if kind == "variant":
        assert result["value"] in variants, where
        assert result["variant"] == result["value"], where
        assert result["reason"] == reason, where
        assert result["errorCode"] is None, where
        assert decided[flag] == result["value"], (where, decided)
    elif kind == "default":
        # The caller's default, never "" or a variant
        assert result["value"] == DEFAULT, where
        assert decided.get(flag) is None, (where, decided)
        if provider == "js-server":
            seen = {k: result[k] for k in JS_SERVER_WITHOUT_VALUE}
            assert seen == JS_SERVER_WITHOUT_VALUE, where
        else:
            assert result["reason"] == reason, where
            assert result["reason"] in REASONS, where
            assert result["errorCode"] is None, where
            assert result["variant"] == "", where
    else:
        assert result["value"] == DEFAULT, where
        assert result["errorCode"] == reason, where
        assert result["reason"] == "ERROR", where


def _decided(server, flags) -> dict:
    """What /api/v1/decide answers for the unit, for every flag."""
    return server.decide(flags["client_key"], UNIT, experiments=list(flags["expected"]))


def _validate_exchanges(exchanges: list[dict]) -> None:
    """Every HTTP answer a JavaScript client got is a valid OFREP answer."""
    assert exchanges
    for exchange in exchanges:
        endpoint = "bulk" if exchange["url"].endswith("/ofrep/v1/evaluate/flags") else "single"
        status, body = exchange["status"], exchange.get("body")
        if status is None and "error" not in exchange:
            # A web provider's poll still in flight when its requests were read: no answer yet
            continue
        found = ofrep_schema.problems(endpoint, status, body)
        assert not found, (exchange, found)
        content_type = exchange.get("contentType") or ""
        if status == 304:
            assert "text/html" not in content_type, exchange
        elif body is not None:
            assert content_type.startswith("application/json"), exchange


# --- Python -------------------------------------------------------------------------------


def _python_client(server, key: str, domain: str):
    provider = OFREPProvider(
        server.base_url, headers_factory=lambda: {"Authorization": f"Bearer {key}"}, timeout=10
    )
    openfeature.set_provider(provider, domain=domain)
    return openfeature.get_client(domain)


def test_e2e__python_provider__every_case_without_error(server, flags):
    # Given the Python SDK with its OFREP provider
    client = _python_client(server, flags["client_key"], f"lab-{flags['product']}")
    context = EvaluationContext(targeting_key=UNIT, attributes=ATTRIBUTES)
    # When it evaluates every case
    for flag, expected in flags["expected"].items():
        details = client.get_string_details(flag, DEFAULT, context)
        result = {
            "value": details.value,
            "variant": details.variant,
            "reason": str(details.reason.value if details.reason else None),
            "errorCode": details.error_code.value if details.error_code else None,
        }
        # Then it gets the unit's variant, or the caller's default, with no error
        _check("python", flag, result, expected, _decided(server, flags))
        if expected[0] == "default":
            assert client.get_string_value(flag, DEFAULT, context) == DEFAULT
        # And the raw answer it got is a valid OFREP answer
        raw = server.post(
            f"/ofrep/v1/evaluate/flags/{flag}",
            {"context": {"targetingKey": UNIT, **ATTRIBUTES}},
            flags["client_key"],
        )
        ofrep_schema.assert_valid("single", raw)


def test_e2e__python_provider__errors_that_are_errors(server, flags):
    client = _python_client(server, flags["client_key"], f"lab-{flags['product']}-errors")
    # No targeting key: TARGETING_KEY_MISSING
    anonymous = client.get_string_details("etch", DEFAULT, EvaluationContext())
    assert (anonymous.value, anonymous.error_code) == (DEFAULT, ErrorCode.TARGETING_KEY_MISSING)
    # A value of another type: TYPE_MISMATCH, default kept
    as_bool = client.get_boolean_details("etch", False, EvaluationContext(targeting_key=UNIT))
    assert (as_bool.value, as_bool.error_code) == (False, ErrorCode.TYPE_MISMATCH)


def test_e2e__python_provider__bad_key__default_with_error(server, seeded):
    client = _python_client(server, "lck_0123456789ab_wrong", "lab-bad-key")
    details = client.get_string_details("etch", DEFAULT, EvaluationContext(targeting_key="U"))
    assert details.value == DEFAULT
    assert details.error_code == ErrorCode.GENERAL


def test_e2e__ofrep_bulk__etag_round_trip(server, seeded):
    key = seeded["client_key"]
    body = {"context": {"targetingKey": "OF-BULK"}}
    first = server.post("/ofrep/v1/evaluate/flags", body, key)
    assert first.status_code == 200
    ofrep_schema.assert_valid("bulk", first)
    assert [flag["key"] for flag in first.json()["flags"]] == ["etch", "anneal", "litho"]
    again = server.post(
        "/ofrep/v1/evaluate/flags", body, key, **{"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304
    ofrep_schema.assert_valid("bulk", again)


# --- JavaScript server SDK ------------------------------------------------------------------


def _run_node(node: str, script: str, spec: dict) -> dict:
    completed = subprocess.run(
        [node, str(JS / script), json.dumps(spec)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_e2e__js_server_provider__every_case__the_callers_default_where_no_variant(
    server, flags, node
):
    # Given the Node server SDK with its OFREP provider
    evaluations = [
        {"flag": flag, "default": DEFAULT, "targetingKey": UNIT, "attributes": ATTRIBUTES}
        for flag in flags["expected"]
    ]
    # When it evaluates every case (and the errors that are errors)
    evaluations += [
        {"flag": "etch", "default": DEFAULT},
        {"flag": "etch", "default": False, "targetingKey": UNIT, "type": "boolean"},
    ]
    out = _run_node(
        node,
        "server-provider.mjs",
        {"baseUrl": server.base_url, "clientKey": flags["client_key"], "evaluations": evaluations},
    )
    results = out["results"]
    # Then each is what the unit gets, with no error where there is none
    decided = _decided(server, flags)
    for flag, result in zip(flags["expected"], results, strict=False):
        _check("js-server", flag, result, flags["expected"][flag], decided)
    anonymous, as_bool = results[-2:]
    assert (anonymous["value"], anonymous["errorCode"]) == (DEFAULT, "TARGETING_KEY_MISSING")
    assert (as_bool["value"], as_bool["errorCode"]) == (False, "TYPE_MISMATCH")
    # And every answer it got is a valid OFREP answer, those without a value included
    _validate_exchanges(out["responses"])
    without_value = {r["body"]["key"] for r in out["responses"] if "value" not in (r["body"] or {})}
    assert without_value >= {"etch-time", "litho", "dose"}, out["responses"]


def test_e2e__js_server_provider__bad_key__default_with_error(server, seeded, node):
    out = _run_node(
        node,
        "server-provider.mjs",
        {
            "baseUrl": server.base_url,
            "clientKey": "lck_0123456789ab_wrong",
            "evaluations": [{"flag": "etch", "default": DEFAULT, "targetingKey": "U"}],
        },
    )
    (result,) = out["results"]
    assert result["value"] == DEFAULT
    assert result["reason"] == "ERROR"
    assert result["errorCode"] == "GENERAL"


# --- JavaScript web SDK ---------------------------------------------------------------------


class _Interactive:
    """A node process that prints one JSON object per step and waits on stdin between steps."""

    def __init__(self, command: list[str], cwd: Path):
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(
            target=self._pump, args=(self.process.stdout, self.lines), daemon=True
        ).start()
        threading.Thread(target=self._drain, daemon=True).start()

    @staticmethod
    def _pump(stream, lines):
        for line in stream:
            lines.put(line)
        lines.put(None)

    def _drain(self):
        for line in self.process.stderr:
            self.stderr.append(line)

    def step(self, name: str, timeout: float = 60) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no {name!r} step in {timeout} s: {''.join(self.stderr)}"
            ) from None
        assert line is not None, f"exited before {name!r}: {''.join(self.stderr)[-3000:]}"
        data = json.loads(line)
        assert data["step"] == name, data
        return data

    def proceed(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def close(self) -> None:
        # SIGTERM first: playwright-core then closes the Chromium it launched.
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(timeout=30)


def _web_spec(server, flags) -> dict:
    return {
        "baseUrl": server.base_url,
        "clientKey": flags["client_key"],
        "targetingKey": UNIT,
        "attributes": ATTRIBUTES,
        "flags": [{"flag": flag, "default": DEFAULT} for flag in flags["expected"]],
        "pollIntervalMs": 300,
    }


def _check_web_run(provider: str, run: _Interactive, server, flags) -> None:
    """The steps of web-flow.mjs: evaluate, see a 304 poll, see a change arrive by polling."""
    # When the provider starts
    initial = run.step("initial")
    # Then it fetched every flag in one bulk evaluation, and reports no error but for the
    # unknown flag
    assert initial["ready"] is True, initial
    if "shown" in initial:  # in a page: what it wrote into its DOM
        assert (initial["status"], initial["shown"]) == ("ready", initial["results"]), initial
    decided = _decided(server, flags)
    for result in initial["results"]:
        _check(provider, result["flag"], result, flags["expected"][result["flag"]], decided)
    first = initial["requests"][0]
    assert (first["status"], first["ifNoneMatch"]) == (200, None), first
    assert first["etag"], first
    # And its polls send the ETag back and get 304 while nothing changed
    polled = run.step("polled")
    not_modified = [r for r in polled["requests"] if r["status"] == 304]
    assert not_modified[0]["ifNoneMatch"] == first["etag"], polled["requests"]
    # When an operator pauses etch
    server.orm(
        "set_experiment_status", product=flags["product"], experiment="etch", status="disabled"
    )
    run.proceed()
    # Then the next poll brings it: a 200 with a new ETag, ConfigurationChanged for etch
    changed = run.step("changed")
    fresh = [r for r in changed["requests"][1:] if r["status"] == 200]
    assert fresh and fresh[0]["etag"] != first["etag"], changed["requests"]
    assert fresh[0]["ifNoneMatch"] == first["etag"], fresh
    assert {"event": "ConfigurationChanged", "flagsChanged": ["etch"]} in changed["events"]
    etch = next(r for r in changed["results"] if r["flag"] == "etch")
    _check(provider, "etch", etch, ("default", None, "DISABLED"), {})
    # And every answer it got was a valid OFREP answer
    _validate_exchanges(changed["requests"])


def test_e2e__js_web_provider_in_node__bulk_and_etag_polling(server, flags, node):
    run = _Interactive([node, "web-provider.mjs", json.dumps(_web_spec(server, flags))], JS)
    try:
        _check_web_run("js-web-node", run, server, flags)
    finally:
        run.close()


@pytest.fixture(scope="module")
def test_page(node, page_host) -> str:
    """tests/e2e/js/page with its script bundled by esbuild (npm packages only, no CDN)."""
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (Debian's chromium package)")
    shutil.copy(JS / "page" / "index.html", page_host.folder / "index.html")
    bundled = subprocess.run(
        [
            str(JS / "node_modules" / ".bin" / "esbuild"),
            "page/entry.mjs",
            "--bundle",
            "--format=esm",
            "--platform=browser",
            "--target=es2022",
            f"--outfile={page_host.folder / 'bundle.js'}",
            "--log-level=warning",
        ],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bundled.returncode == 0, bundled.stderr
    return "index.html"


def _browser(node: str, page_url: str, wait_for_poll: bool = True) -> _Interactive:
    spec = {"pageUrl": page_url, "chromium": CHROMIUM, "waitForPoll": wait_for_poll}
    return _Interactive([node, "browser.mjs", json.dumps(spec)], JS)


def test_e2e__js_web_provider_in_chromium__page_of_another_origin(
    server, flags, node, page_host, test_page
):
    # Given a page served from another origin than Lab, which Lab allows (CORS_ALLOWED_ORIGINS)
    fragment = json.dumps(_web_spec(server, flags))
    run = _browser(node, f"{page_host.url(test_page)}#{fragment}")
    try:
        # Then the web provider in the page evaluates every flag, polls with its ETag and sees
        # a change, exactly as under Node
        _check_web_run("js-web-chromium", run, server, flags)
    finally:
        run.close()


def test_e2e__js_web_provider_in_chromium__origin_not_allowed__refused(
    server, flags, node, page_host, test_page
):
    # Given the same page from an origin Lab does not allow (localhost is another origin than
    # 127.0.0.1)
    fragment = json.dumps(_web_spec(server, flags))
    run = _browser(node, f"{page_host.url(test_page, host='localhost')}#{fragment}", False)
    try:
        initial = run.step("initial")
    finally:
        run.close()
    # Then the browser refuses Lab's answer: the provider cannot start, every flag is the default
    assert initial["origin"] != page_host.origin
    assert initial["ready"] is False, initial
    assert [r["status"] for r in initial["requests"]] == [None], initial["requests"]
    assert any("OFREPApiFetchError" in (e["message"] or "") for e in initial["events"]), initial
    for result in initial["results"]:
        assert (result["value"], result["errorCode"]) == (DEFAULT, "FLAG_NOT_FOUND"), result


def test_e2e__openfeature_sdk__context_attributes_get_the_targeted_answer(server, seeded):
    # Given etch targeted at line 3 through the admin API
    key, product, token = seeded["client_key"], seeded["product"], seeded["api_token"]
    response = requests.patch(
        server.url(f"/api/admin/v1/products/{product}/experiments/etch"),
        json={"conditions": [{"attribute": "line", "operator": "in", "values": ["3"]}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    client = _python_client(server, key, f"lab-targeted-{product}")
    # When the SDK evaluates it for a line-3 unit and a line-1 unit
    on_3 = client.get_string_details(
        "etch", "fallback", EvaluationContext(targeting_key="OF-T3", attributes={"line": "3"})
    )
    on_1 = client.get_string_details(
        "etch", "fallback", EvaluationContext(targeting_key="OF-T1", attributes={"line": 1})
    )
    # Then the line-3 unit gets its variant, the other the caller's default, neither an error
    assert on_3.value in ("short", "long") and on_3.error_code is None
    assert (on_1.value, on_1.reason, on_1.error_code) == ("fallback", Reason.TARGETING_MATCH, None)
    assert server.decide(key, "OF-T3", experiments=["etch"]) == {"etch": on_3.value}
