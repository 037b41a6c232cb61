"""From event rows to everything an A/B report shows: :func:`analyze_experiment` -> :class:`ExperimentAnalysis`.

Input: the event log's frames (:meth:`abtest.events.EventLog.read_exposures` / ``read_outcomes``):
exposures are one row per served list (``request_id, ts, experiment, arm, user, items, positions,
item_arms``), outcomes one row per reaction (``request_id, ts, user, item, kind``). Outcomes are joined
to exposures by ``request_id``; only ``kind == "click"`` counts as a click, each (request, item) once.

Which rows count:

* exposures whose ``experiment`` is the config's key, minus QA users pinned by ``forced`` (they are served
  the arm but were not randomised) and, in ``ab`` mode, rows whose arm is not one of the config's arms;
* a click belongs to its exposure (its arm, its user and its time), so the over-time series need only
  the exposure timestamps.

What is computed (all statistics come from :mod:`abtest.stats` (significance, sequential, power, SRM, multiple testing),
:mod:`abtest.report.guardrails` and :mod:`abtest.interleaving`; nothing is re-derived):

* ``ab`` mode: per-user exposures and clicks -> :class:`~abtest.stats.aggregate.ArmMetrics` per arm; every metric
  of :func:`abtest.stats.aggregate.compare_arms` for each treatment arm against control, with Holm and
  Benjamini-Hochberg adjusted p-values over all (metric, treatment) pairs; CUPED when a pre-period
  covariate per user is given; sample-ratio mismatch; the always-valid test; a power / MDE note; and
  cumulative looks over time (per day when the data span two days or more, else per hour or minute)
  of the primary metric (clicks per exposure) with fixed-horizon and always-valid intervals.
* ``interleave`` mode: per impression, each distinct clicked item is credited to the arm in
  ``item_arms``; the preference sign test and its Wilson interval, overall and cumulatively over time.

The verdict (:attr:`ExperimentAnalysis.verdict`) is decided in this order: too little data, sample-ratio
mismatch, violated guardrail, then the primary metric's fixed-horizon test at ``alpha`` (unadjusted: it is
the one pre-registered metric; the others are shown with adjusted p-values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from abtest.assignment import ExperimentConfig
from abtest.interleaving import PreferenceResult, preference_test
from abtest.report.guardrails import GuardrailResult, check_guardrails
from abtest.stats.aggregate import (
    METRIC_LABELS,
    ArmMetrics,
    arm_metrics_from_arrays,
    compare_arms,
    ratio_statistics_from_arrays,
)
from abtest.stats.formatting import (
    NOT_ESTIMABLE,
    format_interval,
    format_number,
    format_p,
    format_pct,
    format_relative,
)
from abtest.stats.multiple_testing import adjust_results
from abtest.stats.normality import ratio_normality
from abtest.stats.power import mean_minimum_detectable_effect, mean_sample_size
from abtest.stats.results import TestResult
from abtest.stats.sequential import SequentialConfig, SequentialResult, sequential_test
from abtest.stats.significance import ratio_z_test
from abtest.stats.srm import SRMResult, sample_ratio_mismatch
from abtest.stats.sufficient_statistics import RatioStatistic

__all__ = [
    "PRIMARY_METRIC",
    "ReportInputs",
    "Findings",
    "GuardrailCheck",
    "ArmSummary",
    "Look",
    "PowerNote",
    "ExperimentAnalysis",
    "analyze_experiment",
    "pre_period_clicks_from_dataset",
    "arm_label",
]

PRIMARY_METRIC = "clicks_per_exposure"
#: Fewest users per arm before the report draws any conclusion.
MIN_USERS_PER_ARM = 20
DAY_SECONDS = 86_400

Verdict = Literal["ship", "do_not_ship", "no_difference", "srm", "guardrail", "insufficient_data"]


def arm_label(name: str) -> str:
    """How an arm is written in sentences: short alphabetic names in capitals (``gnn`` -> ``GNN``)."""
    return name.upper() if name.isalpha() and len(name) <= 4 else name


@dataclass(frozen=True)
class ArmSummary:
    """One row of the per-arm table: totals and per-arm means with ``1 - alpha`` intervals.

    ``clicks_per_feed`` is clicks per served list (the primary metric, clicks per exposure);
    ``clicks_per_post`` is the click-through rate of the posts shown (clicks over ``posts``, NaN when the
    exposures carry no item lists).
    """

    arm: str
    users: int
    exposures: int
    clicks: int
    clicks_per_feed: float
    clicks_per_feed_ci: tuple[float, float]
    posts: int | None
    clicks_per_post: float
    clicks_per_post_ci: tuple[float, float]
    clicks_per_user: float
    clicks_per_user_ci: tuple[float, float]
    engaged_share: float
    engaged_share_ci: tuple[float, float]


@dataclass(frozen=True)
class Look:
    """The primary comparison on the data up to ``end_ts`` (cumulative).

    For interleaving, ``rel_lift`` / ``rel_ci`` hold the treatment's preference share and its Wilson
    interval, and the always-valid fields are NaN.
    """

    index: int
    end_ts: float
    elapsed: float  # in ``ExperimentAnalysis.time_unit`` since the first exposure
    users: dict[str, int]
    ctr: dict[str, float]
    rel_lift: float
    rel_ci: tuple[float, float]
    always_valid_rel_ci: tuple[float, float]
    z: float
    z_boundary: float


@dataclass(frozen=True)
class PowerNote:
    """Sensitivity of the primary metric at the current size (normal approximation, two-sided)."""

    users_per_arm: int
    alpha: float
    power: float
    mde_relative: float
    users_for_observed_lift: int | None
    observed_rel_lift: float

    def summary(self) -> str:
        text = (
            f"With {self.users_per_arm:,} users per arm the test detects a change of "
            f"{format_pct(self.mde_relative)} in click-through with {self.power:.0%} power (alpha = {self.alpha:g})."
        )
        if self.users_for_observed_lift is not None:
            text += (
                f" Confirming the observed {format_pct(self.observed_rel_lift, '+')} would need about "
                f"{self.users_for_observed_lift:,} users per arm."
            )
        return text


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report is computed from: the one typed argument of :func:`analyze_experiment`,
    :func:`abtest.report.render.render_report` and :func:`abtest.report.render.write_report`.

    Args:
        exposures (pd.DataFrame): Exposure rows (columns of :data:`abtest.events.EXPOSURE_COLUMNS`; at least
            ``request_id, ts, experiment, arm, user``, plus ``items`` for per-post rates and ``item_arms`` for
            interleaving), e.g. ``EventLog.read_exposures()``.
        outcomes (pd.DataFrame): Outcome rows (``request_id, item, kind``), e.g. ``EventLog.read_outcomes()``.
        config (ExperimentConfig): The experiment (key, arms, weights, control, mode, forced users).
        guardrail_inputs (dict, optional): ``{"latency_p99_ms": {arm: ms}, "error_rate": {arm: share}}``
            (an ``error_rate`` key ``"*"`` applies to every arm), optional limits ``max_latency_p99_ms``,
            ``max_error_rate``, ``max_latency_increase`` and a ``source`` text; see
            :func:`abtest.report.prometheus.guardrail_inputs_from_prometheus`. (default: None: not checked)
        now (datetime, optional): Time stamped on the report. (default: the current UTC time)
        pre_period (mapping | Series | DataFrame, optional): Pre-experiment covariate per user (e.g. clicks in
            the weeks before); enables CUPED. Users without a value get 0. (default: None)
        alpha (float, optional): Two-sided significance level. (default: 0.05)
        sequential (SequentialConfig, optional): Settings of the always-valid test; its ``alpha`` is
            replaced by ``alpha``. (default: ``SequentialConfig()``)
        truth (dict, optional): Known true values (from a simulation), drawn on the plots and printed:
            ``rel_lift`` and per-arm ``ctr_<arm>``. (default: None)
    """

    exposures: pd.DataFrame
    outcomes: pd.DataFrame
    config: ExperimentConfig
    guardrail_inputs: Mapping[str, Any] | None = None
    now: datetime | None = None
    pre_period: Mapping[str, float] | pd.Series | pd.DataFrame | None = None
    alpha: float = 0.05
    sequential: SequentialConfig | None = None
    truth: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Findings:
    """What the A/B or the interleaving analysis returns (its fields are copied into
    :class:`ExperimentAnalysis`)."""

    time_unit: str = "day"
    arm_summaries: tuple[ArmSummary, ...] = ()
    results: tuple[TestResult, ...] = ()  # raw p-values
    holm: tuple[TestResult, ...] = ()
    bh: tuple[TestResult, ...] = ()
    sequential: Mapping[str, SequentialResult] = field(default_factory=dict)  # treatment -> primary metric
    srm: SRMResult | None = None
    power: PowerNote | None = None
    preference: PreferenceResult | None = None
    looks: Mapping[str, tuple[Look, ...]] = field(default_factory=dict)  # treatment -> cumulative looks
    has_cuped: bool = False
    cuped_variance_reduction: Mapping[str, float] = field(default_factory=dict)
    feed_length: tuple[int, int] | None = None  # fewest and most posts per served list
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # doubts about the statistics themselves
    dropped: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GuardrailCheck:
    """Guardrails of the arms (None when no inputs name an arm), where the figures came from, and notes."""

    result: GuardrailResult | None = None
    source: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExperimentAnalysis:
    """Everything the report renders (see the module docstring); built once by :func:`analyze_experiment`."""

    key: str
    mode: str
    control: str
    arms: tuple[str, ...]
    alpha: float
    verdict: Verdict
    decision: str
    generated_at: datetime
    first_ts: float | None = None
    last_ts: float | None = None
    time_unit: str = "day"
    arm_summaries: tuple[ArmSummary, ...] = ()
    results: tuple[TestResult, ...] = ()  # raw p-values
    holm: tuple[TestResult, ...] = ()
    bh: tuple[TestResult, ...] = ()
    sequential: Mapping[str, SequentialResult] = field(default_factory=dict)  # treatment -> primary metric
    srm: SRMResult | None = None
    guardrails: GuardrailResult | None = None
    guardrail_source: str | None = None
    power: PowerNote | None = None
    preference: PreferenceResult | None = None
    looks: Mapping[str, tuple[Look, ...]] = field(default_factory=dict)  # treatment -> cumulative looks
    has_cuped: bool = False
    cuped_variance_reduction: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # doubts about the statistics themselves
    feed_length: tuple[int, int] | None = None  # fewest and most posts per served list
    dropped: Mapping[str, int] = field(default_factory=dict)
    truth: Mapping[str, float] | None = None

    @property
    def treatments(self) -> tuple[str, ...]:
        return tuple(a for a in self.arms if a != self.control)

    def primary(self, treatment: str) -> TestResult | None:
        label = METRIC_LABELS[PRIMARY_METRIC]
        return next((r for r in self.results if r.treatment_name == treatment and r.metric == label), None)

    def summary_dict(self) -> dict[str, Any]:
        """Machine-readable digest (written as JSON next to the report)."""
        out: dict[str, Any] = {
            "experiment": self.key, "mode": self.mode, "control": self.control, "arms": list(self.arms),
            "verdict": self.verdict, "decision": self.decision, "alpha": self.alpha,
            "generated_at": self.generated_at.isoformat(),
            "arms_table": [s.__dict__ for s in self.arm_summaries],
            "dropped": dict(self.dropped), "notes": list(self.notes), "warnings": list(self.warnings),
            "feed_length": list(self.feed_length) if self.feed_length else None,
        }
        out["metrics"] = [
            {"metric": r.metric, "treatment": r.treatment_name, "control_mean": r.control_mean,
             "treatment_mean": r.treatment_mean, "rel_lift": r.rel_lift, "rel_ci": list(r.rel_ci),
             "abs_lift": r.abs_lift, "abs_ci": list(r.abs_ci), "p_value": r.p_value,
             "p_holm": h.p_value, "p_bh": b.p_value, "chance_to_win": r.chance_to_win}
            for r, h, b in zip(self.results, self.holm, self.bh)
        ]  # fmt: skip
        if self.srm is not None:
            out["srm"] = {"mismatch": self.srm.mismatch, "p_value": self.srm.p_value, "observed": list(self.srm.observed)}
        if self.guardrails is not None:
            out["guardrails"] = {"ok": self.guardrails.ok, "violations": list(self.guardrails.violations)}
        for t, s in self.sequential.items():
            out.setdefault("sequential", {})[t] = {"rel_lift": s.rel_lift, "rel_ci": list(s.rel_ci), "significant": s.significant}
        if self.preference is not None:
            p = self.preference
            out["preference"] = {"arms": list(p.arms), "share": p.share_a, "share_ci": list(p.share_ci),
                                 "p_value": p.p_value, "wins": [p.wins_a, p.wins_b], "ties": p.ties}
        if self.truth is not None:
            out["truth"] = dict(self.truth)
        return out


# --------------------------------------------------------------------------- event preparation


def _select_exposures(exposures: pd.DataFrame, config: ExperimentConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """The experiment's exposures (sorted by time, one row per request) and how many rows were left out, why."""
    dropped: dict[str, int] = {}
    missing = [c for c in ("request_id", "ts", "experiment", "arm", "user") if c not in exposures.columns]
    if missing:
        raise KeyError(f"exposures lack column(s) {', '.join(missing)}; has {', '.join(map(str, exposures.columns))}")
    rows = exposures[exposures["experiment"] == config.key]
    out = pd.DataFrame({
        "request_id": rows["request_id"].astype(str).to_numpy(),
        "ts": rows["ts"].astype(np.float64).to_numpy(),
        "arm": rows["arm"].astype(object).to_numpy(),
        "user": rows["user"].map(str).to_numpy(),
    })  # fmt: skip
    for column in ("items", "item_arms"):
        out[column] = rows[column].to_numpy() if column in rows.columns else None
    # Posts shown per list; -1 where an exposure carries no item list (then per-post rates are unknown).
    out["posts"] = [len(items) if isinstance(items, list | tuple | np.ndarray) else -1 for items in out["items"]]
    forced = out["user"].isin(set(config.forced))
    if forced.any():
        dropped["forced (QA) exposures"] = int(forced.sum())
    out = out[~forced]
    if config.mode == "ab":
        unknown = ~out["arm"].isin(set(config.arm_names))
        if unknown.any():
            dropped["exposures with an arm not in the config"] = int(unknown.sum())
        out = out[~unknown]
    duplicated = out["request_id"].duplicated()
    if duplicated.any():
        dropped["repeated request ids"] = int(duplicated.sum())
        out = out[~duplicated]
    return out.sort_values("ts", kind="stable").reset_index(drop=True), dropped


def _select_clicks(outcomes: pd.DataFrame, exposures: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Clicks joined to their exposure: ``request_id, item, exposure_row`` (one row per distinct item), and
    how many were left out."""
    dropped: dict[str, int] = {}
    if outcomes is None or outcomes.empty:
        return pd.DataFrame({"request_id": pd.Series(dtype=str), "item": pd.Series(dtype=str),
                             "exposure_row": pd.Series(dtype=np.int64)}), dropped  # fmt: skip
    clicks = outcomes[outcomes["kind"] == "click"]
    clicks = pd.DataFrame({"request_id": clicks["request_id"].astype(str).to_numpy(),
                           "item": clicks["item"].map(str).to_numpy()})  # fmt: skip
    repeated = clicks.duplicated()
    if repeated.any():
        dropped["repeated clicks on the same item of a list"] = int(repeated.sum())
        clicks = clicks[~repeated]
    row_of = pd.Series(np.arange(len(exposures)), index=exposures["request_id"].to_numpy())
    rows = row_of.reindex(clicks["request_id"].to_numpy()).to_numpy()
    known = ~np.isnan(rows)
    clicks = clicks[known].copy()
    clicks["exposure_row"] = rows[known].astype(np.int64)
    return clicks.reset_index(drop=True), dropped


def _look_edges(ts: np.ndarray) -> tuple[np.ndarray, str, float]:
    """Ends of the cumulative looks: UTC day ends when the data span >= 2 days, else hours, else minutes,
    else ten equal slices. Returns ``(edges, unit_name, unit_seconds)``."""
    t0, t1 = float(ts.min()), float(ts.max())
    span = t1 - t0
    for unit, seconds in (("day", DAY_SECONDS), ("hour", 3600.0), ("minute", 60.0)):
        if span >= 2 * seconds:
            first = math.floor(t0 / seconds) * seconds if unit == "day" else t0
            edges = np.arange(first + seconds, t1 + seconds, seconds)
            if len(edges) > 60:  # keep the plots readable and the work bounded
                edges = np.linspace(edges[0], edges[-1], 60)
            edges[-1] = max(edges[-1], np.nextafter(t1, np.inf))
            return edges, unit, seconds
    edges = np.linspace(t0, t1, 11)[1:]
    edges[-1] = np.nextafter(t1, np.inf)
    return edges, "second", 1.0


# --------------------------------------------------------------------------- A/B analysis


def _arm_summaries(per_arm: Mapping[str, ArmMetrics], per_post: Mapping[str, RatioStatistic] | None,
                   alpha: float) -> list[ArmSummary]:
    z = float(stats.norm.ppf(1 - alpha / 2))
    nan2 = (float("nan"), float("nan"))

    def ci(s) -> tuple[float, float]:
        if s.n < 2:
            return nan2
        half = z * math.sqrt(max(s.variance, 0.0) / s.n)  # rounding can make it -1e-17
        return (s.mean - half, s.mean + half)

    out = []
    for arm, m in per_arm.items():
        ratio = m.clicks_per_exposure
        post = per_post[arm] if per_post is not None else None
        known_posts = post is not None and post.d_sum > 0
        out.append(ArmSummary(
            arm=arm, users=m.users, exposures=int(ratio.d_sum), clicks=int(ratio.m_sum),
            clicks_per_feed=ratio.mean, clicks_per_feed_ci=ci(ratio) if ratio.d_sum > 0 else nan2,
            posts=int(post.d_sum) if post is not None else None,
            clicks_per_post=post.mean if known_posts else float("nan"), clicks_per_post_ci=ci(post) if known_posts else nan2,
            clicks_per_user=m.clicks_per_user.mean, clicks_per_user_ci=ci(m.clicks_per_user),
            engaged_share=m.engaged_users.mean, engaged_share_ci=ci(m.engaged_users),
        ))  # fmt: skip
    return out


def _ab_looks(
    exposures: pd.DataFrame, clicks: pd.DataFrame, config: ExperimentConfig, treatment: str,
    seq: SequentialConfig, edges: np.ndarray, unit_seconds: float,
) -> list[Look]:
    arms = [config.control_arm, treatment]
    mask = exposures["arm"].isin(arms).to_numpy()
    ts = exposures["ts"].to_numpy()[mask]
    user_codes, _ = pd.factorize(exposures["user"].to_numpy()[mask])
    arm_of_row = (exposures["arm"].to_numpy()[mask] == treatment).astype(np.int64)
    row_clicks = np.bincount(clicks["exposure_row"].to_numpy(), minlength=len(exposures))[mask]
    n_users = int(user_codes.max()) + 1 if len(user_codes) else 0
    user_arm = np.zeros(n_users, dtype=np.int64)
    user_arm[user_codes] = arm_of_row
    t0 = float(ts.min())
    looks: list[Look] = []
    for i, end in enumerate(edges):
        keep = ts < end
        exp_u = np.bincount(user_codes[keep], minlength=n_users)
        clk_u = np.bincount(user_codes[keep], weights=row_clicks[keep], minlength=n_users)
        seen = exp_u > 0
        per_arm = arm_metrics_from_arrays(user_arm[seen], clk_u[seen], exp_u[seen], num_arms=2)
        c, t = per_arm[0].clicks_per_exposure, per_arm[1].clicks_per_exposure
        users = {arms[0]: c.n, arms[1]: t.n}
        ctr = {arms[0]: c.mean, arms[1]: t.mean}
        if min(c.n, t.n) < 2 or c.d_sum <= 0 or t.d_sum <= 0 or c.m_sum <= 0:
            continue
        fixed = ratio_z_test(c, t, alpha=seq.alpha)
        av = sequential_test(c, t, seq)
        looks.append(Look(
            index=i, end_ts=float(end), elapsed=(float(end) - t0) / unit_seconds, users=users, ctr=ctr,
            rel_lift=fixed.rel_lift, rel_ci=fixed.rel_ci, always_valid_rel_ci=av.rel_ci, z=av.z,
            z_boundary=av.z_boundary,
        ))  # fmt: skip
    return looks


def _power_note(control: ArmMetrics, treatment: ArmMetrics, result: TestResult, alpha: float) -> PowerNote | None:
    c, t = control.clicks_per_exposure, treatment.clicks_per_exposure
    if c.n < 2 or t.n < 2 or c.mean <= 0:
        return None
    std = math.sqrt(max((c.variance + t.variance) / 2, 1e-300))
    mde = mean_minimum_detectable_effect(std, c.n, alpha=alpha, ratio=t.n / c.n) / c.mean
    needed = None
    if not result.significant and abs(result.abs_lift) > 1e-3 * c.mean:
        needed = mean_sample_size(std, result.abs_lift, alpha=alpha).control
    return PowerNote(
        users_per_arm=min(c.n, t.n), alpha=alpha, power=0.8, mde_relative=mde,
        users_for_observed_lift=needed, observed_rel_lift=result.rel_lift,
    )  # fmt: skip


def _pre_period_array(users: np.ndarray, pre_period: Mapping[str, float] | pd.Series | pd.DataFrame) -> np.ndarray:
    if isinstance(pre_period, pd.DataFrame):
        if pre_period.shape[1] < 2:
            raise ValueError("pre_period frame needs a user column and a value column")
        user_col = "user" if "user" in pre_period.columns else pre_period.columns[0]
        value_col = next(c for c in pre_period.columns if c != user_col)
        pre_period = pd.Series(pre_period[value_col].to_numpy(), index=pre_period[user_col].map(str).to_numpy())
    elif not isinstance(pre_period, pd.Series):
        pre_period = pd.Series(dict(pre_period))
    series = pd.Series(pre_period.to_numpy(dtype=np.float64), index=pre_period.index.map(str))
    series = series[~series.index.duplicated()]
    # Users without a pre-period value (new users) have a covariate of 0, as for CUPED in practice.
    return series.reindex(users).fillna(0.0).to_numpy()


def _normality_warnings(codes: np.ndarray, grouped: pd.DataFrame, arm_names: tuple[str, ...]) -> list[str]:
    """A warning per arm too small for the normal approximation of the primary metric (heavy-tailed users)."""
    out = []
    clicks, exposures = grouped["clicks"].to_numpy(), grouped["exposures"].to_numpy()
    for i, arm in enumerate(arm_names):
        check = ratio_normality(clicks[codes == i], exposures[codes == i])
        if check.users >= MIN_USERS_PER_ARM and not check.enough:
            out.append(
                f"{arm_label(arm)}: clicks per feed is heavily skewed across users (skewness {check.skewness:.1f}); "
                f"the normal approximation behind the intervals and p-values wants about {check.users_needed:,} "
                f"users per arm (355 x skewness^2, Kohavi et al. 2014) and this arm has {check.users:,}, so read "
                "the intervals and p-values as approximate."
            )
    return out


def _analyze_ab(exposures: pd.DataFrame, clicks: pd.DataFrame, config: ExperimentConfig, pre_period,
                seq: SequentialConfig, alpha: float) -> Findings:
    per_user = pd.DataFrame({"user": exposures["user"].to_numpy(), "arm": exposures["arm"].to_numpy(),
                             "clicks": np.bincount(clicks["exposure_row"].to_numpy(), minlength=len(exposures)),
                             "posts": exposures["posts"].to_numpy()})  # fmt: skip
    notes, dropped = [], {}
    multi = per_user.groupby("user")["arm"].nunique()
    split = multi[multi > 1].index
    if len(split):
        # Sticky assignment broke for these users (e.g. a salt change mid-flight): they cannot be analysed.
        dropped["users seen in more than one arm"] = len(split)
        notes.append(f"{len(split)} user(s) were served by more than one arm and are left out, e.g. {list(split[:3])}")
        per_user = per_user[~per_user["user"].isin(set(split))]
    grouped = per_user.groupby("user", sort=True).agg(arm=("arm", "first"), exposures=("arm", "size"),
                                                       clicks=("clicks", "sum"), posts=("posts", "sum"))  # fmt: skip
    codes = pd.Categorical(grouped["arm"], categories=list(config.arm_names)).codes.astype(np.int64)
    pre = None if pre_period is None else _pre_period_array(grouped.index.to_numpy(), pre_period)
    per_arm_list = arm_metrics_from_arrays(codes, grouped["clicks"].to_numpy(), grouped["exposures"].to_numpy(), pre,
                                           num_arms=len(config.arm_names))  # fmt: skip
    per_arm = dict(zip(config.arm_names, per_arm_list))
    per_post, feed_length = None, None
    lengths = exposures["posts"].to_numpy()
    if len(lengths) and lengths.min() >= 0:
        feed_length = (int(lengths.min()), int(lengths.max()))
        per_post = dict(zip(config.arm_names, ratio_statistics_from_arrays(
            codes, grouped["clicks"].to_numpy(), grouped["posts"].to_numpy(), num_arms=len(config.arm_names))))
    base = Findings(
        arm_summaries=tuple(_arm_summaries(per_arm, per_post, alpha)),
        srm=sample_ratio_mismatch({arm: m.users for arm, m in per_arm.items()}, config.weights),
        has_cuped=pre is not None, feed_length=feed_length, notes=tuple(notes), dropped=dropped,
        warnings=tuple(_normality_warnings(codes, grouped, config.arm_names)),
    )  # fmt: skip
    if min(m.users for m in per_arm.values()) < MIN_USERS_PER_ARM:
        return base
    treatments = tuple(a for a in config.arm_names if a != config.control_arm)
    results: list[TestResult] = []
    sequential: dict[str, SequentialResult] = {}
    reduction: dict[str, float] = {}
    for treatment in treatments:
        found = compare_arms(per_arm, config.control_arm, treatment, alpha=alpha)
        results.extend(found)
        primary = per_arm[config.control_arm].clicks_per_exposure, per_arm[treatment].clicks_per_exposure
        sequential[treatment] = sequential_test(*primary, seq, metric=METRIC_LABELS[PRIMARY_METRIC],
                                                control_name=config.control_arm, treatment_name=treatment)  # fmt: skip
        if pre is not None:
            by_metric = {r.metric: r for r in found}
            plain, cuped = by_metric[METRIC_LABELS["clicks_per_user"]], by_metric[METRIC_LABELS["clicks_per_user_cuped"]]
            plain_w, cuped_w = plain.abs_ci[1] - plain.abs_ci[0], cuped.abs_ci[1] - cuped.abs_ci[0]
            if plain_w > 0:
                reduction[treatment] = 1.0 - (cuped_w / plain_w) ** 2
    label = METRIC_LABELS[PRIMARY_METRIC]
    first = next((r for r in results if r.treatment_name == treatments[0] and r.metric == label), None)
    power = None
    if first is not None:
        power = _power_note(per_arm[config.control_arm], per_arm[treatments[0]], first, alpha)
    edges, unit, seconds = _look_edges(exposures["ts"].to_numpy())
    looks = {t: tuple(_ab_looks(exposures, clicks, config, t, seq, edges, seconds)) for t in treatments}
    return replace(
        base, results=tuple(results), holm=tuple(adjust_results(results, "holm")),
        bh=tuple(adjust_results(results, "benjamini_hochberg")), sequential=sequential,
        cuped_variance_reduction=reduction, power=power, time_unit=unit, looks=looks,
    )  # fmt: skip


# --------------------------------------------------------------------------- interleaving


def _impression_credit(exposures: pd.DataFrame, clicks: pd.DataFrame, arms: tuple[str, str]) -> np.ndarray:
    """Credited clicks per exposure and arm, ``[n_exposures, 2]`` (each distinct clicked item counts once,
    for the arm in ``item_arms``; shared items credit nobody)."""
    credit = np.zeros((len(exposures), 2), dtype=np.int64)
    if len(clicks):
        team_of: dict[tuple[int, str], str] = {}
        rows = set(clicks["exposure_row"].tolist())
        for row in rows:
            items, item_arms = exposures.at[row, "items"], exposures.at[row, "item_arms"]
            if items is None or item_arms is None:
                continue
            for item, team in zip(items, item_arms):
                team_of[(row, str(item))] = team
        for row, item in zip(clicks["exposure_row"].tolist(), clicks["item"].tolist()):
            team = team_of.get((row, item))
            if team == arms[0]:
                credit[row, 0] += 1
            elif team == arms[1]:
                credit[row, 1] += 1
    return credit


def _analyze_interleave(exposures: pd.DataFrame, clicks: pd.DataFrame, config: ExperimentConfig, alpha: float) -> Findings:
    treatment = next(a for a in config.arm_names if a != config.control_arm)
    arms = (treatment, config.control_arm)
    notes = []
    no_credit = exposures["item_arms"].isna().to_numpy() if len(exposures) else np.zeros(0, bool)
    if no_credit.any():
        notes.append(f"{int(no_credit.sum())} interleaved exposure(s) carry no item_arms and credit nobody")
    credit = _impression_credit(exposures, clicks, arms)
    wins = np.sign(credit[:, 0] - credit[:, 1])
    preference = preference_test(int((wins > 0).sum()), int((wins < 0).sum()), int((wins == 0).sum()),
                                 arms=arms, alpha=alpha)
    users = exposures["user"].nunique()
    shown = {arm: 0 for arm in arms}
    for item_arms in exposures["item_arms"]:
        if item_arms is not None:
            for team in item_arms:
                if team in shown:
                    shown[team] += 1
    credited = {arm: int(credit[:, j].sum()) for j, arm in enumerate(arms)}
    # For interleaving, "posts" are the items each arm contributed and "clicks_per_post" is clicks per such item.
    summaries = tuple(
        ArmSummary(arm=arm, users=users, exposures=shown[arm], clicks=credited[arm],
                   clicks_per_feed=float("nan"), clicks_per_feed_ci=(float("nan"),) * 2, posts=shown[arm],
                   clicks_per_post=credited[arm] / max(shown[arm], 1), clicks_per_post_ci=(float("nan"),) * 2,
                   clicks_per_user=float("nan"), clicks_per_user_ci=(float("nan"),) * 2,
                   engaged_share=float("nan"), engaged_share_ci=(float("nan"),) * 2)
        for arm in arms
    )  # fmt: skip
    edges, unit, seconds = _look_edges(exposures["ts"].to_numpy())
    ts = exposures["ts"].to_numpy()
    looks = []
    for i, end in enumerate(edges):
        w = wins[ts < end]
        wa, wb = int((w > 0).sum()), int((w < 0).sum())
        if wa + wb == 0:
            continue
        p = preference_test(wa, wb, int((w == 0).sum()), arms=arms, alpha=alpha)
        looks.append(Look(index=i, end_ts=float(end), elapsed=(float(end) - ts.min()) / seconds,
                          users={arm: int((ts < end).sum()) for arm in arms}, ctr={}, rel_lift=p.share_a,
                          rel_ci=p.share_ci, always_valid_rel_ci=(float("nan"),) * 2, z=float("nan"),
                          z_boundary=float("nan")))  # fmt: skip
    return Findings(time_unit=unit, arm_summaries=summaries, preference=preference, looks={treatment: tuple(looks)},
                    notes=tuple(notes))  # fmt: skip


# --------------------------------------------------------------------------- decision


def _decide(a: ExperimentAnalysis) -> tuple[Verdict, str]:
    """The verdict and the plain-words decision of an analysis (its own ``verdict`` / ``decision`` unused)."""
    guard = _guardrail_words(a)
    if a.mode == "interleave":
        return _decide_interleave(a, guard)
    users = {s.arm: s.users for s in a.arm_summaries}
    if not users or min(users.values()) < MIN_USERS_PER_ARM:
        split = ", ".join(f"{arm_label(k)} {v:,}" for k, v in users.items()) or "no exposures"
        return "insufficient_data", f"Not enough data yet: users per arm {split} (at least {MIN_USERS_PER_ARM} each needed)."
    srm = a.srm
    if srm is not None and srm.mismatch:
        split = ", ".join(f"{arm_label(arm)} {o:,} (expected {e:,.0f})" for arm, o, e in zip(srm.arms, srm.observed, srm.expected))
        return "srm", (f"Do not ship: sample-ratio mismatch ({split}; {format_p(srm.p_value)}). Assignment or logging "
                       "is broken, so the metrics cannot be trusted.")  # fmt: skip
    # Headline: the treatment with the most significant primary result (the only one with two arms).
    primaries = [r for r in (a.primary(t) for t in a.treatments) if r is not None]
    best = min(primaries, key=lambda r: r.p_value)
    t = arm_label(best.treatment_name)
    lo, hi = best.rel_ci
    if a.guardrails is not None and not a.guardrails.ok:
        return "guardrail", f"Do not ship: {guard}. Click-through {_lift_words(best)}, {format_p(best.p_value)}."
    verdict: Verdict
    if best.significant and best.abs_lift > 0:
        verdict = "ship"
        head = f"{t} raises click-through " + (f"by {format_pct(best.rel_lift)} {format_interval(lo, hi)}"
                                               if not math.isnan(best.rel_lift) else f"({_lift_words(best)})")  # fmt: skip
    elif best.significant:
        verdict = "do_not_ship"
        head = f"{t} lowers click-through " + (f"by {format_pct(-best.rel_lift)} {format_interval(-hi, -lo)}"
                                               if not math.isnan(best.rel_lift) else f"({_lift_words(best)})")  # fmt: skip
    else:
        verdict = "no_difference"
        head = f"No significant difference yet: {t} vs {arm_label(a.control)} click-through {_lift_words(best)}"
    decision = f"{head}, {format_p(best.p_value)}; no sample-ratio mismatch; {guard}"
    if best.treatment_name in a.sequential and best.significant:
        crossed = [lk for lk in a.looks.get(best.treatment_name, ()) if abs(lk.z) >= lk.z_boundary]
        if crossed:
            # The always-valid p-value is a running minimum: one crossing is enough to stop.
            decision += (f". The always-valid test crossed its boundary after {crossed[0].elapsed:.0f} "
                         f"{a.time_unit}(s): safe to stop")  # fmt: skip
        else:
            decision += (". The always-valid test has not crossed its boundary yet: if you have been looking "
                         "every day, keep running")  # fmt: skip
    return verdict, decision


def _decide_interleave(a: ExperimentAnalysis, guard: str) -> tuple[Verdict, str]:
    p = a.preference
    if p is None or p.wins_a + p.wins_b < MIN_USERS_PER_ARM:
        decided = 0 if p is None else p.wins_a + p.wins_b
        return "insufficient_data", f"Not enough data yet: {decided} impressions with a preference."
    t, c = (arm_label(x) for x in p.arms)
    share = f"{format_pct(p.share_a)} {format_interval(*p.share_ci)}"
    if a.guardrails is not None and not a.guardrails.ok:
        return "guardrail", f"Do not ship: {guard}. Preference for {t}: {share}."
    if p.significant and p.share_a > 0.5:
        return "ship", f"Users prefer {t}: it wins {share} of impressions with a preference, {format_p(p.p_value)}; {guard}"
    if p.significant:
        return "do_not_ship", (f"Users prefer {c}: {t} wins only {share} of impressions with a preference, "
                               f"{format_p(p.p_value)}; {guard}")  # fmt: skip
    return "no_difference", (f"No significant preference yet: {t} wins {share} of impressions with a preference, "
                             f"{format_p(p.p_value)}; {guard}")  # fmt: skip


def _lift_words(result: TestResult) -> str:
    """``+4.1% [+2.0%, +6.2%]``, or with a zero control ``not estimable (control is zero); absolute
    difference +0.12 [+0.05, +0.19]``."""
    if math.isnan(result.rel_lift):
        absolute = f"{format_number(result.abs_lift, '+')} {format_interval(*result.abs_ci, pct=False, sign='+')}"
        return f"{NOT_ESTIMABLE}; absolute difference {absolute}"
    return format_relative(result.rel_lift, result.rel_ci)


def _guardrail_words(a: ExperimentAnalysis) -> str:
    if a.guardrails is None:
        return "guardrails not checked (no service metrics given)"
    if a.guardrails.ok:
        return "guardrails OK"
    return "guardrail violated: " + "; ".join(a.guardrails.violations)


def _check_guardrails(config: ExperimentConfig, guardrail_inputs: Mapping[str, Any] | None) -> GuardrailCheck:
    if not guardrail_inputs:
        return GuardrailCheck()
    latency = dict(guardrail_inputs.get("latency_p99_ms") or {})
    errors = dict(guardrail_inputs.get("error_rate") or {})
    arms = [arm for arm in config.arm_names if arm in latency]
    if not arms:
        given = ", ".join(sorted(latency)) or "none"
        return GuardrailCheck(notes=(f"guardrail inputs name no arm of this experiment (arms given: {given})",))
    # An error rate measured for the whole service (not per arm) applies to every arm.
    fallback_errors = errors.get("*", errors.get("all"))
    error_rate = {arm: float(errors.get(arm, fallback_errors if fallback_errors is not None else 0.0)) for arm in arms}
    limits = {k: guardrail_inputs[k] for k in ("max_latency_p99_ms", "max_error_rate", "max_latency_increase")
              if guardrail_inputs.get(k) is not None}  # fmt: skip
    control = config.control_arm if config.control_arm in arms else None
    if control is None:
        limits.pop("max_latency_increase", None)
    result = check_guardrails({arm: float(latency[arm]) for arm in arms}, error_rate, control=control, **limits)
    return GuardrailCheck(result=result, source=guardrail_inputs.get("source"))


# --------------------------------------------------------------------------- entry point


def analyze_experiment(inputs: ReportInputs) -> ExperimentAnalysis:
    """Analyse one experiment from event rows (see the module docstring and :class:`ReportInputs`)."""
    config, alpha = inputs.config, inputs.alpha
    seq = SequentialConfig(alpha=alpha, tuning_sample_size=(inputs.sequential or SequentialConfig()).tuning_sample_size)
    rows, dropped = _select_exposures(inputs.exposures, config)
    clicks, dropped_clicks = _select_clicks(inputs.outcomes, rows)
    guardrails = _check_guardrails(config, inputs.guardrail_inputs)
    if not len(rows):
        findings = Findings(notes=(f"no exposures of experiment {config.key!r} in the event log",))
    elif config.mode == "interleave":
        findings = _analyze_interleave(rows, clicks, config, alpha)
    else:
        findings = _analyze_ab(rows, clicks, config, inputs.pre_period, seq, alpha)
    shared = {f.name for f in fields(Findings)} - {"notes", "dropped"}
    undecided = ExperimentAnalysis(
        key=config.key, mode=config.mode, control=config.control_arm, arms=config.arm_names, alpha=alpha,
        verdict="insufficient_data", decision="", generated_at=inputs.now or datetime.now(UTC),
        first_ts=float(rows["ts"].min()) if len(rows) else None, last_ts=float(rows["ts"].max()) if len(rows) else None,
        guardrails=guardrails.result, guardrail_source=guardrails.source, notes=guardrails.notes + findings.notes,
        dropped={**dropped, **dropped_clicks, **findings.dropped}, truth=dict(inputs.truth) if inputs.truth else None,
        **{name: getattr(findings, name) for name in shared},
    )  # fmt: skip
    verdict, decision = _decide(undecided)
    return replace(undecided, verdict=verdict, decision=decision)


def pre_period_clicks_from_dataset(data_dir: str | Path, days: int = 14) -> pd.Series:
    """Clicks per user in the last ``days`` days of a ``data_gen`` dataset (a CUPED covariate), indexed by
    ``str(user_id)``. Reads only the public interactions table, never ``truth/``."""
    import pyarrow.dataset as ds

    from feedrec_common.parquet_tables import table_path

    table = ds.dataset(table_path(Path(data_dir), "interactions"), format="parquet")
    clicks = table.to_table(columns=["user_id", "ts"], filter=ds.field("event") == "click").to_pandas()
    if clicks.empty:
        return pd.Series(dtype=np.float64)
    recent = clicks[clicks["ts"] >= clicks["ts"].max() - days * DAY_SECONDS]
    counts = recent.groupby("user_id").size().astype(np.float64)
    counts.index = counts.index.map(str)
    return counts
