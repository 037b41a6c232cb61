"""serving.settings: one BaseSettings class read from FEEDREC_* and the plain REDIS_URL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.settings import ServingSettings


def test_defaults_need_no_server(monkeypatch):
    for var in ("REDIS_URL", "MLFLOW_TRACKING_URI", "FEEDREC_MODELS"):
        monkeypatch.delenv(var, raising=False)
    s = ServingSettings(_env_file=None)
    assert s.redis_url is None and s.models == {} and s.admin_token is None
    assert s.providers == ["tensorrt", "cuda", "cpu"]


def test_models_pairs_and_default(monkeypatch):
    monkeypatch.setenv("FEEDREC_MODELS", "gnn=gnn@champion, mf=bundles/mf")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("FEEDREC_PROVIDERS", "cuda,cpu")
    s = ServingSettings(_env_file=None)
    assert s.models == {"gnn": "gnn@champion", "mf": "bundles/mf"}
    assert s.default_model == "gnn"
    assert s.redis_url == "redis://r:6379/0"
    assert s.providers == ["cuda", "cpu"]


@pytest.mark.parametrize("env", [
    {"FEEDREC_MODELS": "gnn"},
    {"FEEDREC_MODELS": "bad name=x"},
    {"FEEDREC_MODELS": "a=x", "FEEDREC_DEFAULT_MODEL": "b"},
    {"FEEDREC_PROVIDERS": "tpu"},
    {"FEEDREC_MAX_RECENT": "0"},
])
def test_invalid_settings_are_rejected(monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError):
        ServingSettings(_env_file=None)


def test_empty_admin_token_disables_admin(monkeypatch):
    monkeypatch.setenv("FEEDREC_ADMIN_TOKEN", "")
    assert ServingSettings(_env_file=None).admin_token is None


def test_event_log_settings(monkeypatch, tmp_path):
    for var in ("FEEDREC_EVENTS_DIR", "FEEDREC_ALLOW_SIM_TIME", "FEEDREC_EVENTS_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    s = ServingSettings(_env_file=None)
    assert str(s.events_dir) == "data/events" and s.events_backend == "auto" and s.allow_sim_time is False
    for memory in ("memory", "", "none"):
        monkeypatch.setenv("FEEDREC_EVENTS_DIR", memory)
        assert ServingSettings(_env_file=None).events_dir is None
    monkeypatch.setenv("FEEDREC_EVENTS_DIR", str(tmp_path))
    monkeypatch.setenv("FEEDREC_ALLOW_SIM_TIME", "1")
    s = ServingSettings(_env_file=None)
    assert s.events_dir == tmp_path and s.allow_sim_time is True
    monkeypatch.setenv("FEEDREC_EVENTS_BACKEND", "kafka")
    with pytest.raises(ValidationError):
        ServingSettings(_env_file=None)
