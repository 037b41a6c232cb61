"""serving.routing: the router interface and its default."""

from __future__ import annotations

import pytest

from serving.routing import DefaultRouter, Router, build_router


def test_default_router_answers_every_user_with_the_default_model():
    router = build_router("gnn", None)
    assert isinstance(router, Router)
    for user in ("1", "x", "999999"):
        a = router.assign(user)
        assert (a.model, a.arm, a.experiment, a.in_experiment) == ("gnn", "default", None, False)
    assert isinstance(router, DefaultRouter)


def test_experiment_router_needs_its_directory(tmp_path):
    with pytest.raises((RuntimeError, FileNotFoundError, ValueError, OSError)):
        build_router("gnn", tmp_path / "missing")
