"""Experiment definitions and the deterministic hash router that assigns users to arms.

Experiments live in ``configs/experiments/*.yaml`` (one per file, validated by :class:`ExperimentConfig`)::

    key: gnn-vs-mf            # name used in events and reports
    salt: gnn-vs-mf-v1        # changing it reshuffles this experiment only
    mode: ab                  # "ab": one arm per user; "interleave": both arms' lists merged per request
    status: running           # draft | running | stopped
    start: 2025-01-01T00:00:00Z
    end: null                 # open-ended
    coverage: 1.0             # share of users in the experiment; the rest get the default model
    control: mf               # default: the first arm
    arms:
      - {name: mf, model: "mf@champion", weight: 50}
      - {name: gnn, model: "gnn@champion", weight: 50}
    forced: {qa-alice: gnn}   # QA users pinned to an arm (not counted in the analysis)

Hashing (stable across processes, restarts and machines; no state is kept)::

    bucket(salt, user_id) = int.from_bytes(sha256(f"{salt}:{user_id}".encode()).digest()[:8], "big") % 10000

``user_id`` is formatted with ``str()`` (so ``42`` and ``"42"`` are the same user). The arm is found
from the bucket: arm ``i`` owns buckets ``[B_{i-1}, B_i)`` with ``B_i = round(10000 * cumsum(weights)_i /
sum(weights))``. Coverage uses an independent hash with the salt ``f"{salt}:coverage"``: the user is in
the experiment iff ``bucket(salt + ":coverage", user_id) < round(10000 * coverage)``. Raising the coverage
therefore only adds users and never moves a user between arms. Two experiments with different salts
assign independently; changing one experiment's salt reshuffles only that experiment.

Routing (:meth:`Router.assign`): (1) a user named in ``forced`` of an experiment that is not stopped gets
that arm, whatever the status window or coverage (so QA can check a draft); (2) otherwise experiments
that are ``running`` with ``start <= now < end`` are tried by descending ``priority`` (then key); the first
whose coverage includes the user decides; (3) otherwise the default model is served with
``experiment=None``. Naive datetimes are read as UTC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from feedrec_common.config import ConfigError, StrictModel, load_config

__all__ = [
    "NUM_BUCKETS",
    "ArmConfig",
    "ExperimentConfig",
    "Assignment",
    "Router",
    "bucket",
    "assign_buckets",
    "coverage_salt",
    "load_experiment",
]

NUM_BUCKETS = 10_000


def bucket(salt: str, user_id: str | int) -> int:
    """Bucket in ``[0, 10000)`` of one user: first 8 bytes of ``sha256(f"{salt}:{user_id}")``, big-endian,
    modulo 10000."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % NUM_BUCKETS


def assign_buckets(salt: str, user_ids: Iterable[str | int]) -> np.ndarray:
    """Buckets of many users at once (same algorithm as :func:`bucket`), as an ``int64`` array.

    SHA-256 has no vectorised form in numpy; this loop does about a million users per second, which is
    what the offline simulator needs.
    """
    sha256 = hashlib.sha256
    prefix = f"{salt}:"
    out = [int.from_bytes(sha256(f"{prefix}{u}".encode()).digest()[:8], "big") % NUM_BUCKETS for u in user_ids]
    return np.asarray(out, dtype=np.int64)


def coverage_salt(salt: str) -> str:
    """Salt of the independent coverage hash."""
    return f"{salt}:coverage"


class ArmConfig(StrictModel):
    """One arm: a name, the model it serves and its traffic weight.

    Args:
        name (str): Arm name used in events and reports (e.g. ``mf``).
        model (str): Registered model with alias served by this arm (e.g. ``mf@champion``).
        weight (float, optional): Positive relative share of covered users. (default: 1.0)
    """

    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)


class ExperimentConfig(StrictModel):
    """One experiment, as stored in ``configs/experiments/<key>.yaml`` (see the module docstring)."""

    key: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    salt: str = Field(min_length=1)
    description: str = ""
    mode: Literal["ab", "interleave"] = "ab"
    status: Literal["draft", "running", "stopped"] = "draft"
    start: datetime | None = None
    end: datetime | None = None
    coverage: float = Field(default=1.0, ge=0.0, le=1.0)
    priority: int = 0
    control: str | None = None
    arms: list[ArmConfig] = Field(min_length=2)
    forced: dict[str, str] = Field(default_factory=dict)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @field_validator("forced", mode="before")
    @classmethod
    def _string_user_ids(cls, value):
        # YAML reads `12345: gnn` with an int key; user ids are compared as strings.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        names = [arm.name for arm in self.arms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(duplicates)}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        bad = {user: arm for user, arm in self.forced.items() if arm not in names}
        if bad:
            listed = ", ".join(f"{u} -> {a}" for u, a in sorted(bad.items()))
            raise ValueError(f"forced users name unknown arms ({listed}); arms are {', '.join(names)}")
        if self.control is not None and self.control not in names:
            raise ValueError(f"control {self.control!r} is not an arm; arms are {', '.join(names)}")
        if self.mode == "interleave" and len(self.arms) != 2:
            raise ValueError(f"interleave mode needs exactly 2 arms, got {len(self.arms)}")
        empty = [a.name for a, lo, hi in zip(self.arms, self.boundaries[:-1], self.boundaries[1:]) if hi <= lo]
        if self.mode == "ab" and empty:
            raise ValueError(f"arm(s) {', '.join(empty)} get no bucket out of {NUM_BUCKETS}; raise their weight")
        return self

    @property
    def control_arm(self) -> str:
        return self.control if self.control is not None else self.arms[0].name

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.arms)

    @property
    def weights(self) -> dict[str, float]:
        return {arm.name: arm.weight for arm in self.arms}

    @property
    def boundaries(self) -> np.ndarray:
        """``[0, B_1, ..., B_k = 10000]``: arm ``i`` owns buckets ``[B_i, B_{i+1})``."""
        w = np.array([arm.weight for arm in self.arms], dtype=np.float64)
        upper = np.rint(NUM_BUCKETS * np.cumsum(w) / w.sum()).astype(np.int64)
        upper[-1] = NUM_BUCKETS
        return np.concatenate([[0], upper])

    @property
    def coverage_buckets(self) -> int:
        return int(round(self.coverage * NUM_BUCKETS))

    def model_of(self, arm: str) -> str:
        for a in self.arms:
            if a.name == arm:
                return a.model
        raise KeyError(f"experiment {self.key!r} has no arm {arm!r}")

    def is_active(self, now: datetime) -> bool:
        """Running and inside ``[start, end)``."""
        if self.status != "running":
            return False
        if self.start is not None and now < self.start:
            return False
        return self.end is None or now < self.end

    def arm_index_of_buckets(self, buckets: np.ndarray) -> np.ndarray:
        """Arm index (into ``arms``) of each bucket."""
        return np.searchsorted(self.boundaries[1:], np.asarray(buckets), side="right")

    def assign_arms(self, user_ids: Sequence[str | int]) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised randomisation of many users (ignores status, window and forced users).

        Returns:
            ``(arm_index, covered)``: the arm index of each user (``-1`` when not covered) and the
            coverage mask, as the offline simulator needs them.
        """
        covered = assign_buckets(coverage_salt(self.salt), user_ids) < self.coverage_buckets
        arm_index = self.arm_index_of_buckets(assign_buckets(self.salt, user_ids))
        return np.where(covered, arm_index, -1), covered


@dataclass(frozen=True)
class Assignment:
    """Where one request goes.

    Attributes:
        experiment: Experiment key, or ``None`` when the user gets the default model.
        arm: Arm name (``ab`` mode or forced); ``None`` for interleaving (credit is per position) and
            for the default model.
        model: The model to serve. In interleave mode the control arm's model (the fallback); fetch
            both lists from ``arm_models``.
        mode: ``"ab"``, ``"interleave"``, or ``None`` outside any experiment.
        bucket: The user's arm bucket in this experiment (``None`` outside any experiment).
        in_experiment: Randomised into the experiment, so the user counts in its analysis.
        forced: A QA user pinned by ``forced``; served the arm but excluded from the analysis.
        arm_models: ``(arm, model)`` pairs of the experiment in config order (both arms of an interleave).
    """

    experiment: str | None
    arm: str | None
    model: str
    mode: Literal["ab", "interleave"] | None
    bucket: int | None
    in_experiment: bool
    forced: bool = False
    arm_models: tuple[tuple[str, str], ...] = ()


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and validate one experiment YAML file (errors name the file and key)."""
    return load_config(ExperimentConfig, path)


class Router:
    """Assigns users to experiments and arms; a pure function of the configs, safe to share across workers.

    Args:
        experiments (Sequence[ExperimentConfig]): Experiments with unique keys and unique salts.
        default_model (str, optional): Served to users outside every experiment. (default: ``"mf@champion"``)
    """

    def __init__(self, experiments: Sequence[ExperimentConfig], default_model: str = "mf@champion") -> None:
        keys = [e.key for e in experiments]
        salts = [e.salt for e in experiments]
        dup_keys = sorted({k for k in keys if keys.count(k) > 1})
        if dup_keys:
            raise ConfigError(f"experiment keys must be unique; repeated: {', '.join(dup_keys)}")
        dup_salts = sorted({s for s in salts if salts.count(s) > 1})
        if dup_salts:
            # Shared salts make two experiments' splits identical, i.e. perfectly correlated.
            raise ConfigError(f"experiment salts must be unique; shared: {', '.join(dup_salts)}")
        self.default_model = default_model
        self.experiments: tuple[ExperimentConfig, ...] = tuple(sorted(experiments, key=lambda e: (-e.priority, e.key)))

    @classmethod
    def from_dir(cls, directory: str | Path = "configs/experiments", default_model: str = "mf@champion") -> Router:
        """Load every ``*.yaml`` / ``*.yml`` in ``directory``; all invalid files are reported at once."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError(f"experiment directory {directory} does not exist")
        experiments, errors = [], []
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
            try:
                experiments.append(load_experiment(path))
            except ConfigError as exc:
                errors.append(str(exc))
        if errors:
            raise ConfigError("\n".join(errors))
        return cls(experiments, default_model=default_model)

    def get(self, key: str) -> ExperimentConfig:
        for e in self.experiments:
            if e.key == key:
                return e
        raise KeyError(f"no experiment {key!r}; known: {', '.join(e.key for e in self.experiments) or 'none'}")

    def active(self, now: datetime | None = None) -> list[ExperimentConfig]:
        now = _now(now)
        return [e for e in self.experiments if e.is_active(now)]

    def assign(self, user_id: str | int, now: datetime | None = None) -> Assignment:
        """Assignment of ``user_id`` at time ``now`` (default: the current UTC time)."""
        now = _now(now)
        user = str(user_id)
        for e in self.experiments:
            if e.status != "stopped" and user in e.forced:
                arm = e.forced[user]
                return Assignment(
                    experiment=e.key, arm=arm, model=e.model_of(arm), mode="ab", bucket=bucket(e.salt, user),
                    in_experiment=False, forced=True, arm_models=_arm_models(e),
                )
        for e in self.experiments:
            if not e.is_active(now) or bucket(coverage_salt(e.salt), user) >= e.coverage_buckets:
                continue
            b = bucket(e.salt, user)
            if e.mode == "interleave":
                return Assignment(
                    experiment=e.key, arm=None, model=e.model_of(e.control_arm), mode="interleave", bucket=b,
                    in_experiment=True, arm_models=_arm_models(e),
                )
            arm = e.arms[int(e.arm_index_of_buckets(b))]
            return Assignment(
                experiment=e.key, arm=arm.name, model=arm.model, mode="ab", bucket=b, in_experiment=True,
                arm_models=_arm_models(e),
            )
        return Assignment(experiment=None, arm=None, model=self.default_model, mode=None, bucket=None, in_experiment=False)


def _arm_models(e: ExperimentConfig) -> tuple[tuple[str, str], ...]:
    return tuple((a.name, a.model) for a in e.arms)


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
