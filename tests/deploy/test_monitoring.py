"""The SRE files in deploy/: alert rules, their unit tests, the example Prometheus config and
the Grafana dashboard, checked with Prometheus's own `promtool` (Debian's prometheus package;
`.ci/run` installs it) and against the metrics Lab really exports."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Series that come from Prometheus itself or the blackbox exporter, not from Lab.
EXTERNAL_SERIES = {"up", "probe_success"}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        if IN_CI:
            pytest.fail("CI=true but promtool is not installed (.ci/run installs prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    completed = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def lab_series_names() -> set[str]:
    """Every sample name Lab's /metrics can answer, read from its registry."""
    from prometheus_client import REGISTRY

    import decide.metrics  # noqa: F401  (registers the metrics)

    return {sample.name for family in REGISTRY.collect() for sample in family.samples} | {
        # Histogram buckets appear per label set; the names are fixed.
        "lab_decide_duration_seconds_bucket"
    }


def series_in(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers followed by { or [ or used bare)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", without_ranges))
    return {w for w in words if w.startswith("lab_") or w in EXTERNAL_SERIES}


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "lab-alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_alert_rules__promtool_check_rules__passes():
    assert "SUCCESS" in promtool("check", "rules", "lab-alerts.yml")


def test_alert_rules__promtool_unit_tests__pass():
    assert "SUCCESS" in promtool("test", "rules", "lab-alerts.test.yml")


def test_example_prometheus_config__promtool_check_config__passes():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def test_alert_rules__every_alert_of_the_contract_is_there():
    rules = yaml.safe_load((PROMETHEUS / "lab-alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "LabDecideErrorRatioHigh",
        "LabDecideLatencyP99High",
        "LabConfigCacheErrors",
        "LabInstanceDown",
        "LabNotReady",
    } <= alerts


def test_alert_rules__select_only_series_lab_exports():
    known = lab_series_names() | EXTERNAL_SERIES
    for expr in rule_expressions():
        unknown = series_in(expr) - known
        assert not unknown, f"{expr!r} selects {unknown}, which Lab does not export"


def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "lab.json").read_text())


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_dashboard__uses_the_provisioned_data_source():
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "lab-prometheus.yaml").read_text()
    )
    uids = {source["uid"] for source in datasources["datasources"]}
    for panel in dashboard()["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]


def test_dashboard__selects_only_series_lab_exports():
    known = lab_series_names() | EXTERNAL_SERIES
    for expr in dashboard_expressions():
        unknown = series_in(expr) - known
        assert not unknown, f"{expr!r} selects {unknown}, which Lab does not export"


def test_dashboard__every_query_is_valid_promql(tmp_path):
    # promtool parses expressions in rule files: wrap each panel query in a recording rule,
    # with Grafana's variables replaced by what they expand to.
    rules = [
        {
            "record": f"lab_dashboard:query_{i}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$instance", ".*"),
        }
        for i, expr in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert "SUCCESS" in promtool("check", "rules", str(path))
