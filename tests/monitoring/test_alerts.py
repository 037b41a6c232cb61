"""``configs/monitoring/alerts.yml`` is valid Prometheus rule syntax on the gauges we export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from monitoring.prometheus import METRIC_NAMES

RULES = Path(__file__).resolve().parents[2] / "configs" / "monitoring" / "alerts.yml"


def test_alert_rules_parse_and_use_exported_metrics():
    data = yaml.safe_load(RULES.read_text())
    groups = data["groups"]
    assert groups and all({"name", "rules"} <= set(g) for g in groups)
    for rule in (r for g in groups for r in g["rules"]):
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert re.fullmatch(r"\d+[smhd]", rule["for"])
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])
        used = set(re.findall(r"feedrec_[a-z_]+", rule["expr"]))
        assert used and used <= set(METRIC_NAMES), rule["alert"]


def test_promtool_accepts_the_rules():
    """promtool (Debian package ``prometheus``, installed by ``make system-deps``) is the authority
    on rule syntax; the structural test above says which metric names the rules may use."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: run `make system-deps` (installs Debian's prometheus)"
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
