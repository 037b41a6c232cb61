"""Which model answers a user: the serving side of the A/B router.

The service only depends on :class:`Router` (anything with ``assign(user_id) -> Assignment``).
:class:`DefaultRouter` answers every user with the configured default model; with
``FEEDREC_EXPERIMENTS_DIR`` set, :class:`ExperimentRouter` wraps the hash router of
``abtest.assignment`` (see :func:`build_router`).

An experiment arm names its model (``model: gnn@champion`` in the YAML); the service serves models
under names (``FEEDREC_MODELS=gnn=gnn@champion,mf=bundles/mf``). An arm's model resolves to the served
model of that name, else to the served model configured with exactly that reference. An arm that
resolves to nothing is logged at start-up and answered with 503 (``model_unavailable``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from abtest.assignment import ExperimentConfig

log = logging.getLogger("serving.routing")

#: ``arm`` of requests outside every experiment.
DEFAULT_ARM = "default"


@dataclass(frozen=True, slots=True)
class Assignment:
    """Outcome of routing one user.

    Args:
        experiment (str, optional): Experiment name, ``None`` outside any experiment.
        arm (str): Arm label reported in responses, events and metrics (``"interleaved"`` for an
            interleaved list).
        model (str): Name of the loaded model that answers (a key of ``FEEDREC_MODELS``).
        mode (str): ``"serve"`` (one model), ``"ab"`` (an A/B arm) or ``"interleave"`` (both arms'
            lists merged; ``arm_models`` names them).
        bucket (int): Hash bucket of the user (``-1`` when not hashed).
        in_experiment (bool): Whether the user is part of a running experiment.
        forced (bool): A QA user pinned to the arm (served it, left out of the analysis).
        arm_models (tuple): ``(arm, served model name)`` pairs of the experiment, in config order.
    """

    experiment: str | None
    arm: str
    model: str
    mode: str = "serve"
    bucket: int = -1
    in_experiment: bool = False
    forced: bool = False
    arm_models: tuple[tuple[str, str], ...] = ()


class AssignmentLike(Protocol):
    experiment: str | None
    arm: str
    model: str
    mode: str
    bucket: int
    in_experiment: bool


@runtime_checkable
class Router(Protocol):
    """Decides the model (and arm) of a user; must be deterministic and cheap (called per request).

    A router that knows experiments also has ``experiment(key) -> ExperimentConfig | None`` (used by
    ``GET /experiments/{key}/report``).
    """

    def assign(self, user_id: str) -> AssignmentLike: ...


class DefaultRouter:
    """Every user gets the default model, arm ``"default"``, outside any experiment."""

    def __init__(self, model: str) -> None:
        self._assignment = Assignment(experiment=None, arm=DEFAULT_ARM, model=model)

    def assign(self, user_id: str) -> Assignment:
        return self._assignment

    def experiment(self, key: str) -> None:
        return None


class ExperimentRouter:
    """Serving adapter of :class:`abtest.assignment.Router`: arm models resolved to served model names,
    every assignment with a string arm (``"default"`` outside experiments, ``"interleaved"`` for
    interleaving).

    Args:
        router (abtest.assignment.Router): The hash router.
        default_model (str): Served name answering users outside every experiment.
        models (Mapping[str, str]): Served models, ``name -> ref`` (``FEEDREC_MODELS``).
    """

    def __init__(self, router: Any, default_model: str, models: Mapping[str, str]) -> None:
        from serving.events import INTERLEAVED_ARM

        self.router = router
        self._interleaved = INTERLEAVED_ARM
        self._default = Assignment(experiment=None, arm=DEFAULT_ARM, model=default_model)
        by_ref = {ref: name for name, ref in models.items()}
        self._resolved: dict[str, str] = {}
        for experiment in router.experiments:
            for arm in experiment.arms:
                name = arm.model if arm.model in models else by_ref.get(arm.model)
                if name is None:
                    log.error("experiment %s, arm %s: model %r is neither a served name nor a served ref (%s); "
                              "its users get 503", experiment.key, arm.name, arm.model,
                              ", ".join(f"{n}={r}" for n, r in models.items()) or "no models")  # fmt: skip
                    name = arm.model
                self._resolved[arm.model] = name

    def experiment(self, key: str) -> ExperimentConfig | None:
        """The experiment ``key`` (any status), or ``None``."""
        try:
            return self.router.get(key)
        except KeyError:
            return None

    def assign(self, user_id: str) -> Assignment:
        a = self.router.assign(user_id)
        if a.experiment is None:
            return self._default
        resolve = self._resolved.get
        arm_models = tuple((arm, resolve(model, model)) for arm, model in a.arm_models)
        if a.mode == "interleave":
            return Assignment(a.experiment, self._interleaved, resolve(a.model, a.model), "interleave", a.bucket,
                              a.in_experiment, a.forced, arm_models)  # fmt: skip
        return Assignment(a.experiment, a.arm, resolve(a.model, a.model), "ab", a.bucket, a.in_experiment, a.forced,
                          arm_models)  # fmt: skip


def build_router(default_model: str, experiments_dir: Path | None, models: Mapping[str, str] | None = None) -> Router:
    """:class:`ExperimentRouter` when an experiments directory is configured, else :class:`DefaultRouter`.

    Args:
        default_model (str): Served name of the default model.
        experiments_dir (Path, optional): Directory of experiment YAML files.
        models (Mapping[str, str], optional): Served ``name -> ref`` pairs, to resolve arm models.
            (default: none)
    """
    if experiments_dir is None:
        return DefaultRouter(default_model)
    from abtest.assignment import Router as HashRouter  # imported only when experiments are configured
    return ExperimentRouter(HashRouter.from_dir(experiments_dir, default_model=default_model), default_model,
                            dict(models or {}))  # fmt: skip
