"""Which model answers a user: the serving side of the A/B router (not HTTP routing: that is ``serving/routes/``).

The service only depends on :class:`ArmRouter` (anything with ``assign(user_id) -> Assignment``). The
assignment is the A/B layer's own record, :class:`abtest.assignment.Assignment`, with two things filled
in for serving: ``model`` is the *served name* of the model that answers (a key of ``FEEDREC_MODELS``),
and ``arm`` is always a label (:data:`DEFAULT_ARM` outside experiments, :data:`INTERLEAVED_ARM` for an
interleaved list) because responses, events and metrics are labelled by it.

:class:`DefaultArmRouter` answers every user with the configured default model; with
``FEEDREC_EXPERIMENTS_DIR`` set, :class:`ExperimentArmRouter` wraps the hash router of
``abtest.assignment`` (see :func:`build_arm_router`).

An experiment arm names its model (``model: gnn@champion`` in the YAML); the service serves models
under names (``FEEDREC_MODELS=gnn=gnn@champion,mf=bundles/mf``). An arm's model resolves to the served
model of that name, else to the served model configured with exactly that reference. An arm that
resolves to nothing is logged at start-up, makes ``/readyz`` answer 503 while its experiment runs, and
its users get 503 (``model_unavailable``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from abtest.assignment import Assignment, ExperimentConfig
from abtest.assignment import Router as HashRouter

log = logging.getLogger("serving.arm_router")

#: ``arm`` of requests outside every experiment.
DEFAULT_ARM = "default"
#: ``arm`` of a team-draft interleaved list (its items' arms are in ``item_arms``).
INTERLEAVED_ARM = "interleaved"
#: ``item_arms`` entry of an item both arms ranked at the same next position (credited to nobody).
SHARED_ITEM_ARM = "shared"


@runtime_checkable
class ArmRouter(Protocol):
    """Decides the model (and arm) of a user; must be deterministic and cheap (called per request).

    ``experiment(key)`` returns the experiment's config (for ``GET /experiments/{key}/report``) or
    ``None``; ``routed_models()`` the served names that users are being routed to right now (what
    ``/readyz`` requires to be loaded).
    """

    def assign(self, user_id: str) -> Assignment: ...

    def experiment(self, key: str) -> ExperimentConfig | None: ...

    def routed_models(self) -> set[str]: ...


def _default_assignment(model: str) -> Assignment:
    return Assignment(experiment=None, arm=DEFAULT_ARM, model=model, mode=None, bucket=None, in_experiment=False)


class DefaultArmRouter:
    """Every user gets the default model, arm ``"default"``, outside any experiment."""

    def __init__(self, model: str) -> None:
        self._assignment = _default_assignment(model)

    def assign(self, user_id: str) -> Assignment:
        return self._assignment

    def experiment(self, key: str) -> None:
        return None

    def routed_models(self) -> set[str]:
        return {self._assignment.model}


class ExperimentArmRouter:
    """Serving adapter of :class:`abtest.assignment.Router`: arm models resolved to served model names,
    every assignment with a string arm (``"default"`` outside experiments, ``"interleaved"`` for
    interleaving).

    Args:
        router (abtest.assignment.Router): The hash router.
        default_model (str): Served name answering users outside every experiment.
        models (Mapping[str, str]): Served models, ``name -> ref`` (``FEEDREC_MODELS``).
    """

    def __init__(self, router: HashRouter, default_model: str, models: Mapping[str, str]) -> None:
        self.router = router
        self._default = _default_assignment(default_model)
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

    def routed_models(self, now: datetime | None = None) -> set[str]:
        """The default model and every arm's model of the experiments running at ``now`` (QA users
        pinned to a draft's arm are left out: a draft may name a model not deployed yet)."""
        active = self.router.active(now or datetime.now(UTC))
        return {self._default.model} | {self._resolved.get(arm.model, arm.model) for e in active for arm in e.arms}

    def assign(self, user_id: str) -> Assignment:
        a = self.router.assign(user_id)
        if a.experiment is None:
            return self._default
        resolve = self._resolved.get
        arm_models = tuple((arm, resolve(model, model)) for arm, model in a.arm_models)
        arm = INTERLEAVED_ARM if a.mode == "interleave" else a.arm
        return Assignment(a.experiment, arm, resolve(a.model, a.model), a.mode, a.bucket, a.in_experiment, a.forced,
                          arm_models)  # fmt: skip


def build_arm_router(default_model: str, experiments_dir: Path | None,
                     models: Mapping[str, str] | None = None) -> ArmRouter:
    """:class:`ExperimentArmRouter` when an experiments directory is configured, else :class:`DefaultArmRouter`.

    Args:
        default_model (str): Served name of the default model.
        experiments_dir (Path, optional): Directory of experiment YAML files.
        models (Mapping[str, str], optional): Served ``name -> ref`` pairs, to resolve arm models.
            (default: none)
    """
    if experiments_dir is None:
        return DefaultArmRouter(default_model)
    return ExperimentArmRouter(HashRouter.from_dir(experiments_dir, default_model=default_model), default_model,
                               dict(models or {}))  # fmt: skip
