"""Configuration of the generator: one validated :class:`DataGenConfig`, built from a preset.

Resolution order (later wins): embedded defaults < preset (:data:`PRESETS`) < YAML file (``--config``)
< ``--set key=value`` overrides < ``--seed``. A YAML file may name its base preset with a top-level
``preset:`` key. Every size, rate and probability is range-checked here, so a bad value fails with
:class:`feedrec_common.config.ConfigError` before any work starts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from feedrec_common.config import ConfigError, StrictModel, apply_overrides, load_config, read_yaml

Probability = Field(ge=0.0, le=1.0)


class UsersConfig(StrictModel):
    """Population: users, overlapping communities, latent factors, activity and sign-up times."""

    n_users: int = Field(20_000, gt=0)
    n_communities: int = Field(40, gt=0)
    #: Probability that a user also belongs to a second community (overlap).
    secondary_community_prob: float = Field(0.4, ge=0.0, le=1.0)
    #: Zipf exponent of community sizes (0 = equal sizes).
    community_size_skew: float = Field(0.8, ge=0.0)
    #: Correlation of a user's latent factors with their communities' centres (homophily).
    homophily: float = Field(0.85, ge=0.0, le=1.0)
    latent_dim: int = Field(16, gt=0, le=256)
    #: Share of users who sign up during the simulated period (late joiners; cold-start users).
    late_join_fraction: float = Field(0.15, ge=0.0, le=1.0)
    #: Late joiners sign up uniformly within this trailing fraction of the simulated days.
    late_join_window: float = Field(0.3, gt=0.0, le=1.0)
    #: Everybody else signed up within this many days before the simulation starts.
    history_days: int = Field(365, gt=0)
    #: Mean expected sessions per user per day (activity level is log-normal around it).
    sessions_per_day: float = Field(0.25, gt=0.0)
    activity_sigma: float = Field(1.0, ge=0.0, le=3.0)


class GraphConfig(StrictModel):
    """Follow graph: degree-corrected overlapping-community model + reciprocity + triadic closure."""

    mean_out_degree: float = Field(15.0, gt=0.0)
    out_degree_sigma: float = Field(0.9, ge=0.0, le=3.0)
    max_out_degree: int = Field(2000, gt=0)
    #: Pareto tail index a of the in-degree propensity; in-degree exponent is about a + 1.
    popularity_tail: float = Field(1.3, gt=0.1, le=5.0)
    #: Probability that a follow targets someone from one of the follower's own communities.
    in_community_prob: float = Field(0.8, ge=0.0, le=1.0)
    #: Probability of following back (scaled down for very popular accounts).
    reciprocity_prob: float = Field(0.35, ge=0.0, le=1.0)
    #: Extra friend-of-friend follows, as a fraction of the community-model follows.
    triadic_closure_fraction: float = Field(0.3, ge=0.0, le=5.0)
    #: Late joiners' in-degree propensity is multiplied by this (new accounts have few followers).
    late_joiner_popularity: float = Field(0.2, ge=0.0, le=1.0)


class ItemsConfig(StrictModel):
    """Posts: creators, topics tied to the creator's interests, latent factors and quality."""

    n_items: int = Field(50_000, gt=0)
    n_topics: int = Field(80, gt=0, le=32_000)
    #: Each user's interest distribution keeps their top-M topics.
    topics_per_user: int = Field(5, gt=0)
    #: Softmax sharpness of topic interest over factor affinity.
    topic_sharpness: float = Field(4.0, ge=0.0)
    #: Weight of the creator's own factors in the post's factors (topic weight is 1).
    creator_factor_weight: float = Field(0.5, ge=0.0)
    #: Standard deviation of a post's intrinsic appeal (logit units).
    quality_sigma: float = Field(0.6, ge=0.0)
    #: Probability of each media type, in the order (text, image, video); must sum to 1.
    media_probs: list[float] = Field(default_factory=lambda: [0.5, 0.35, 0.15])

    @model_validator(mode="after")
    def _check_media(self) -> ItemsConfig:
        if len(self.media_probs) != 3 or any(p < 0 or p > 1 for p in self.media_probs):
            raise ValueError("media_probs needs 3 probabilities in [0, 1] (text, image, video)")
        if abs(sum(self.media_probs) - 1.0) > 1e-6:
            raise ValueError(f"media_probs must sum to 1, got {sum(self.media_probs):.4f}")
        return self


class SourceMix(StrictModel):
    """Logging feed policy: share of feed slots drawn from each candidate source (sums to 1)."""

    following: float = Field(0.25, ge=0.0, le=1.0)
    social: float = Field(0.2, ge=0.0, le=1.0)
    interest: float = Field(0.3, ge=0.0, le=1.0)
    trending: float = Field(0.2, ge=0.0, le=1.0)
    explore: float = Field(0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_sum(self) -> SourceMix:
        total = self.following + self.social + self.interest + self.trending + self.explore
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"source shares must sum to 1, got {total:.4f}")
        return self


class SimulationConfig(StrictModel):
    """Day-by-day feed simulation."""

    n_days: int = Field(30, gt=0)
    start_date: dt.date = dt.date(2024, 1, 1)
    feed_length: int = Field(15, gt=0, le=1000)
    #: Only posts younger than this are served.
    candidate_window_days: int = Field(7, gt=0)
    #: Followees' clicks within this many days count as social influence.
    social_window_days: int = Field(7, gt=0)
    #: Exponent of the rich-get-richer weight (1 + clicks so far) in the trending source.
    trending_exponent: float = Field(1.0, ge=0.0)
    sources: SourceMix = Field(default_factory=SourceMix)
    #: Users are simulated in fixed blocks of this many (one random stream per day and block), which
    #: bounds memory; it is part of the random design, so changing it changes the data.
    user_block_size: int = Field(131_072, gt=0)


class BehaviorConfig(StrictModel):
    """Ground-truth engagement model (see ``data_gen.behavior``)."""

    base_logit: float = -2.6
    affinity_weight: float = Field(3.0, ge=0.0)
    quality_weight: float = Field(1.0, ge=0.0)
    popularity_weight: float = Field(0.25, ge=0.0)
    social_weight: float = Field(1.2, ge=0.0)
    freshness_per_day: float = Field(0.25, ge=0.0)
    #: Examination probability at 0-based position k is (1 + k) ** -position_decay.
    position_decay: float = Field(0.5, ge=0.0)
    #: Logit offset per media type (text, image, video).
    media_bias: list[float] = Field(default_factory=lambda: [0.0, 0.15, 0.3])
    like_base_logit: float = -1.8
    like_affinity_weight: float = Field(2.0, ge=0.0)
    share_base_logit: float = -3.2
    share_affinity_weight: float = Field(1.5, ge=0.0)
    share_social_weight: float = Field(0.6, ge=0.0)

    @model_validator(mode="after")
    def _check_media(self) -> BehaviorConfig:
        if len(self.media_bias) != 3:
            raise ValueError("media_bias needs 3 values (text, image, video)")
        return self


class OutputConfig(StrictModel):
    """How files are written."""

    #: Interactions are written in parts of this many rows; one part is stored as a single file.
    rows_per_shard: int = Field(5_000_000, gt=0)
    row_group_size: int = Field(500_000, gt=0)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    #: Write PNG plots for CARD.md (matplotlib; about a second).
    plots: bool = True
    #: Nodes sampled for the average clustering coefficient.
    clustering_sample: int = Field(2000, gt=0)
    #: Show a tqdm progress bar over simulated days.
    progress: bool = True

    @model_validator(mode="after")
    def _check_groups(self) -> OutputConfig:
        if self.rows_per_shard % self.row_group_size:
            raise ValueError("rows_per_shard must be a multiple of row_group_size")
        return self


class DataGenConfig(StrictModel):
    """Complete generator configuration; ``model_dump(mode='json')`` goes into the manifest."""

    name: str = "small"
    seed: int = Field(7, ge=0)
    users: UsersConfig = Field(default_factory=UsersConfig)
    graph: GraphConfig = Field(default_factory=GraphConfig)
    items: ItemsConfig = Field(default_factory=ItemsConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    behavior: BehaviorConfig = Field(default_factory=BehaviorConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @property
    def start_ts(self) -> int:
        d = self.simulation.start_date
        return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())

    @property
    def end_ts(self) -> int:
        return self.start_ts + self.simulation.n_days * 86_400


#: Preset name -> partial config (merged over the defaults above).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "name": "tiny",
        "users": {"n_users": 800, "n_communities": 8, "sessions_per_day": 0.6},
        "graph": {"mean_out_degree": 12.0},
        "items": {"n_items": 2_000, "n_topics": 16},
        "simulation": {"n_days": 14, "feed_length": 12},
        "output": {
            "rows_per_shard": 50_000,
            "row_group_size": 10_000,
            "clustering_sample": 400,
            "plots": False,
        },
    },
    "small": {
        "name": "small",
        "users": {"n_users": 20_000, "n_communities": 40},
        "items": {"n_items": 50_000, "n_topics": 80},
        "simulation": {"n_days": 30},
    },
    "medium": {
        "name": "medium",
        "users": {"n_users": 100_000, "n_communities": 100, "sessions_per_day": 0.25},
        "items": {"n_items": 250_000, "n_topics": 200},
        "simulation": {"n_days": 30},
        "output": {"rows_per_shard": 5_000_000, "row_group_size": 1_000_000},
    },
    "large": {
        "name": "large",
        "users": {"n_users": 1_000_000, "n_communities": 400, "sessions_per_day": 0.25},
        "items": {"n_items": 2_500_000, "n_topics": 800},
        "simulation": {"n_days": 30},
        "output": {"rows_per_shard": 10_000_000, "row_group_size": 1_000_000, "plots": True},
    },
}


def resolve_config(
    preset: str | None = None,
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    seed: int | None = None,
) -> DataGenConfig:
    """Build a :class:`DataGenConfig` from a preset, an optional YAML file and ``key=value`` overrides.

    Args:
        preset (str, optional): Base preset; defaults to the file's ``preset:`` key, else ``"small"``.
        path (str or Path, optional): YAML file with (partial) config keys.
        overrides (iterable of str): ``dotted.key=value`` overrides, applied after the file.
        seed (int, optional): Replaces ``seed`` last.

    Raises:
        ConfigError: unknown preset or key, or a value out of range.
    """
    file_data: dict[str, Any] = read_yaml(path) if path is not None else {}
    file_preset = file_data.pop("preset", None)
    overrides = list(overrides)
    override_preset = [o for o in overrides if o.split("=", 1)[0].strip() == "preset"]
    if override_preset:
        overrides = [o for o in overrides if o not in override_preset]
        preset = apply_overrides({}, override_preset[-1:])["preset"]
    name = preset or file_preset or "small"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    if seed is not None:
        overrides.append(f"seed={int(seed)}")
    base = apply_overrides(PRESETS[name], [])
    merged = _merge(base, file_data)
    return _validated(merged, overrides, str(path) if path is not None else f"preset {name}")


def _validated(data: dict[str, Any], overrides: list[str], source: str) -> DataGenConfig:
    try:
        return load_config(DataGenConfig, None, overrides, base=data)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("(defaults)", f"({source})", 1)) from None


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
