"""docker-compose.yml is valid and wires the services the deployment needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent


def test_compose_file_validates_and_has_health_checks():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run `make system-deps` (Debian package docker-compose)")
    run = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    config = yaml.safe_load(run.stdout)
    services = config["services"]
    assert set(services) >= {"redis", "mlflow", "api"}
    for name in ("redis", "mlflow", "api"):
        assert "healthcheck" in services[name], name
    api = services["api"]
    assert api["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert api["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "sqlite:" in " ".join(services["mlflow"]["command"]) if isinstance(services["mlflow"]["command"], list) \
        else "sqlite:" in services["mlflow"]["command"]
    assert (ROOT / "Dockerfile").is_file()
