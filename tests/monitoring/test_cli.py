"""``python -m monitoring``: writes both reports, exit codes, clear errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitoring.scenarios import ScenarioConfig, simulate, write_events

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitoring", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ageing_events(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    sim = simulate(world, ScenarioConfig(kind="ageing", reference_days=3, days=3, shift_day=1.0, seed=11))
    write_events(root / "reference", *sim.reference())
    write_events(root / "live", *sim.monitored())
    return root


def test_help():
    out = _cli("drift", "--help")
    assert out.returncode == 0 and "--reference" in out.stdout and "--events" in out.stdout


def test_profile_then_drift_writes_both_reports(ageing_events, tiny_data, tmp_path):
    profile = tmp_path / "profile.json"
    made = _cli("profile", "--data", str(tiny_data), "--events", str(ageing_events / "reference"), "--out", str(profile))
    assert made.returncode == 0, made.stderr
    assert json.loads(profile.read_text())["dataset"] == str(tiny_data)
    out = _cli("drift", "--events", str(ageing_events / "live"), "--reference", str(profile), "--out", str(tmp_path / "r"))
    assert out.returncode == 1, out.stderr  # the posts age: an alarm
    assert "DRIFT" in out.stdout and "item_age_hours" in out.stdout
    markdown = (tmp_path / "r" / "drift.md").read_text()
    page = (tmp_path / "r" / "drift.html").read_text()
    assert "## Alarms" in markdown and "plots/statistic_over_time.png" in markdown
    assert (tmp_path / "r" / "plots" / "statistic_over_time.png").stat().st_size > 1000
    assert page.count("data:image/png;base64,") >= 3 and "<script" not in page and "http" not in page
    assert "windows" in out.stderr  # the progress bar


def test_dataset_reference(ageing_events, tiny_data, tmp_path):
    out = _cli("drift", "--events", str(ageing_events / "live"), "--reference", str(tiny_data), "--out", str(tmp_path),
               "--no-progress", "--set", "persistence=3")  # fmt: skip
    assert out.returncode in (0, 1) and "Traceback" not in out.stderr, out.stderr
    assert (tmp_path / "drift.md").is_file() and (tmp_path / "drift.html").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--events", "{tmp}/none", "--reference", "{data}"], "abtest flush"),
        (["--events", "{events}", "--reference", "{tmp}/missing.json"], "missing.json"),
        (["--events", "{events}", "--reference", "{tmp}/bad.json"], "bad.json"),
        (["--events", "{events}", "--reference", "{data}", "--set", "alpha=2"], "alpha"),
    ],
)
def test_bad_input_is_a_clear_error(args, message, ageing_events, tiny_data, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    fill = {"tmp": str(tmp_path), "data": str(tiny_data), "events": str(ageing_events / "live")}
    out = _cli("drift", *[a.format(**fill) for a in args], "--out", str(tmp_path / "out"))
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
