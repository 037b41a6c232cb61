"""Which model answers a user: the serving side of the A/B router.

The service only depends on :class:`Router` (anything with ``assign(user_id) -> Assignment``).
:class:`DefaultRouter` answers every user with the configured default model; the hash router of
``abtest.assignment`` plugs in when ``FEEDREC_EXPERIMENTS_DIR`` is set (see :func:`build_router`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Assignment:
    """Outcome of routing one user.

    Args:
        experiment (str, optional): Experiment name, ``None`` outside any experiment.
        arm (str): Arm label reported in responses, events and metrics.
        model (str): Name of the loaded model that answers (a key of ``FEEDREC_MODELS``).
        mode (str): How the arm serves (``"serve"`` here; the A/B router may define others).
        bucket (int): Hash bucket of the user (``-1`` when not hashed).
        in_experiment (bool): Whether the user is part of a running experiment.
    """

    experiment: str | None
    arm: str
    model: str
    mode: str = "serve"
    bucket: int = -1
    in_experiment: bool = False


class AssignmentLike(Protocol):
    experiment: str | None
    arm: str
    model: str
    mode: str
    bucket: int
    in_experiment: bool


@runtime_checkable
class Router(Protocol):
    """Decides the model (and arm) of a user; must be deterministic and cheap (called per request)."""

    def assign(self, user_id: str) -> AssignmentLike: ...


class DefaultRouter:
    """Every user gets the default model, arm ``"default"``, outside any experiment."""

    def __init__(self, model: str) -> None:
        self._assignment = Assignment(experiment=None, arm="default", model=model)

    def assign(self, user_id: str) -> Assignment:
        return self._assignment


def build_router(default_model: str, experiments_dir: Path | None) -> Router:
    """The A/B router when an experiments directory is configured, else :class:`DefaultRouter`."""
    if experiments_dir is None:
        return DefaultRouter(default_model)
    try:
        from abtest.assignment import Router as ExperimentRouter
    except ImportError as exc:  # the A/B helper's module is not installed in this checkout
        raise RuntimeError(
            f"FEEDREC_EXPERIMENTS_DIR={experiments_dir} needs abtest.assignment.Router ({exc})"
        ) from exc
    return ExperimentRouter.from_dir(experiments_dir)
