"""serving.arm_router: the arm-router interface, its default, and readiness's view of routed models."""

from __future__ import annotations

import pytest
import yaml

from abtest.assignment import Assignment
from serving.arm_router import DEFAULT_ARM, INTERLEAVED_ARM, ArmRouter, DefaultArmRouter, build_arm_router


def test_default_router_answers_every_user_with_the_default_model():
    router = build_arm_router("gnn", None)
    assert isinstance(router, ArmRouter)
    for user in ("1", "x", "999999"):
        a = router.assign(user)
        assert isinstance(a, Assignment)  # one Assignment type: the A/B layer's
        assert (a.model, a.arm, a.experiment, a.in_experiment) == ("gnn", DEFAULT_ARM, None, False)
    assert isinstance(router, DefaultArmRouter)
    assert router.routed_models() == {"gnn"}


def test_experiment_router_needs_its_directory(tmp_path):
    with pytest.raises((RuntimeError, FileNotFoundError, ValueError, OSError)):
        build_arm_router("gnn", tmp_path / "missing")


def test_routed_models_cover_running_experiments_only(tmp_path):
    """Issue 11 item 4: /readyz must cover every model an experiment routes to (and not a draft's)."""
    common = {"status": "running", "start": "2020-01-01T00:00:00Z", "control": "a"}
    (tmp_path / "ab.yaml").write_text(yaml.safe_dump({**common, "key": "ab", "salt": "s1", "arms": [
        {"name": "a", "model": "served-ref", "weight": 1}, {"name": "b", "model": "other", "weight": 1}]}))
    (tmp_path / "tdi.yaml").write_text(yaml.safe_dump({**common, "key": "tdi", "salt": "s2", "mode": "interleave",
        "priority": 1, "coverage": 0.5, "arms": [{"name": "a", "model": "gnn"}, {"name": "b", "model": "mf"}]}))  # fmt: skip
    (tmp_path / "draft.yaml").write_text(yaml.safe_dump({**common, "key": "d", "salt": "s3", "status": "draft",
        "arms": [{"name": "a", "model": "gnn"}, {"name": "x", "model": "not-deployed"}]}))  # fmt: skip
    router = build_arm_router("gnn", tmp_path, {"gnn": "bundles/gnn", "mf": "served-ref"})
    assert router.routed_models() == {"gnn", "mf", "other"}  # "served-ref" resolves to the served name "mf"
    arms = {router.assign(str(u)).arm for u in range(200)}
    assert arms == {"a", "b", INTERLEAVED_ARM}
