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

What is computed (all statistics come from :mod:`abtest.significance`, :mod:`abtest.sequential`,
:mod:`abtest.power`, :mod:`abtest.guardrails` and :mod:`abtest.interleaving`; nothing is re-derived):

* ``ab`` mode: per-user exposures and clicks -> :class:`~abtest.aggregate.ArmMetrics` per arm; every metric
  of :func:`abtest.aggregate.compare_arms` for each treatment arm against control, with Holm and
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from abtest.aggregate import METRIC_LABELS, ArmMetrics, arm_metrics_from_arrays, compare_arms
from abtest.assignment import ExperimentConfig
from abtest.guardrails import GuardrailResult, check_guardrails
from abtest.interleaving import PreferenceResult, preference_test
from abtest.power import mean_minimum_detectable_effect, mean_sample_size
from abtest.sequential import SequentialConfig, SequentialResult, sequential_test
from abtest.significance import (
    SRMResult,
    TestResult,
    adjust_results,
    ratio_z_test,
    sample_ratio_mismatch,
)

__all__ = [
    "PRIMARY_METRIC",
    "ArmSummary",
    "Look",
    "PowerNote",
    "ExperimentAnalysis",
    "analyze_experiment",
    "pre_period_clicks_from_dataset",
    "arm_label",
    "format_pct",
    "format_p",
]

PRIMARY_METRIC = "clicks_per_exposure"
#: Fewest users per arm before the report draws any conclusion.
MIN_USERS_PER_ARM = 20
DAY_SECONDS = 86_400

Verdict = Literal["ship", "do_not_ship", "no_difference", "srm", "guardrail", "insufficient_data"]


def arm_label(name: str) -> str:
    """How an arm is written in sentences: short alphabetic names in capitals (``gnn`` -> ``GNN``)."""
    return name.upper() if name.isalpha() and len(name) <= 4 else name


def format_pct(x: float, sign: str = "") -> str:
    """``0.0412`` -> ``4.1%`` (``sign="+"`` forces the sign); ``-0.0%`` prints as ``0.0%``."""
    if not math.isfinite(x):
        return "n/a"
    value = round(100 * x, 1) + 0.0
    return f"{value:{sign}.1f}%"


def format_p(p: float) -> str:
    """``p = 0.0003`` style: two significant digits below 0.1, ``< 0.0001`` for tiny values."""
    if p < 1e-4:
        return "p < 0.0001"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


@dataclass(frozen=True)
class ArmSummary:
    """One row of the per-arm table: totals and per-arm means with ``1 - alpha`` intervals."""

    arm: str
    users: int
    exposures: int
    clicks: int
    ctr: float
    ctr_ci: tuple[float, float]
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


@dataclass
class ExperimentAnalysis:
    """Everything the report renders (see the module docstring)."""

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
    arm_summaries: list[ArmSummary] = field(default_factory=list)
    results: list[TestResult] = field(default_factory=list)  # raw p-values
    holm: list[TestResult] = field(default_factory=list)
    bh: list[TestResult] = field(default_factory=list)
    sequential: dict[str, SequentialResult] = field(default_factory=dict)  # treatment -> primary metric
    srm: SRMResult | None = None
    guardrails: GuardrailResult | None = None
    guardrail_source: str | None = None
    power: PowerNote | None = None
    preference: PreferenceResult | None = None
    looks: dict[str, list[Look]] = field(default_factory=dict)  # treatment -> cumulative looks
    has_cuped: bool = False
    cuped_variance_reduction: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    truth: dict[str, float] | None = None

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
            "dropped": self.dropped, "notes": self.notes,
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
            out["truth"] = self.truth
        return out


# --------------------------------------------------------------------------- event preparation


def _select_exposures(exposures: pd.DataFrame, config: ExperimentConfig, dropped: dict[str, int]) -> pd.DataFrame:
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
    return out.sort_values("ts", kind="stable").reset_index(drop=True)


def _select_clicks(outcomes: pd.DataFrame, exposures: pd.DataFrame, dropped: dict[str, int]) -> pd.DataFrame:
    """Clicks joined to their exposure: ``request_id, item, exposure_row`` (one row per distinct item)."""
    if outcomes is None or outcomes.empty:
        return pd.DataFrame({"request_id": pd.Series(dtype=str), "item": pd.Series(dtype=str),
                             "exposure_row": pd.Series(dtype=np.int64)})  # fmt: skip
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
    return clicks.reset_index(drop=True)


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


def _arm_summaries(per_arm: Mapping[str, ArmMetrics], alpha: float) -> list[ArmSummary]:
    z = float(stats.norm.ppf(1 - alpha / 2))

    def ci(s) -> tuple[float, float]:
        if s.n < 2:
            return (float("nan"), float("nan"))
        half = z * math.sqrt(max(s.variance, 0.0) / s.n)  # rounding can make it -1e-17
        return (s.mean - half, s.mean + half)

    out = []
    for arm, m in per_arm.items():
        ratio = m.clicks_per_exposure
        out.append(ArmSummary(
            arm=arm, users=m.users, exposures=int(ratio.d_sum), clicks=int(ratio.m_sum),
            ctr=ratio.mean, ctr_ci=ci(ratio) if ratio.d_sum > 0 else (float("nan"),) * 2,
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


def _analyze_ab(a: ExperimentAnalysis, exposures: pd.DataFrame, clicks: pd.DataFrame, config: ExperimentConfig,
                pre_period, seq: SequentialConfig) -> None:
    per_user = pd.DataFrame({"user": exposures["user"].to_numpy(), "arm": exposures["arm"].to_numpy(),
                             "clicks": np.bincount(clicks["exposure_row"].to_numpy(), minlength=len(exposures))})
    multi = per_user.groupby("user")["arm"].nunique()
    split = multi[multi > 1].index
    if len(split):
        # Sticky assignment broke for these users (e.g. a salt change mid-flight): they cannot be analysed.
        a.dropped["users seen in more than one arm"] = len(split)
        a.notes.append(f"{len(split)} user(s) were served by more than one arm and are left out, e.g. {list(split[:3])}")
        per_user = per_user[~per_user["user"].isin(set(split))]
    grouped = per_user.groupby("user", sort=True).agg(arm=("arm", "first"), exposures=("arm", "size"), clicks=("clicks", "sum"))
    codes = pd.Categorical(grouped["arm"], categories=list(config.arm_names)).codes.astype(np.int64)
    pre = None
    if pre_period is not None:
        pre = _pre_period_array(grouped.index.to_numpy(), pre_period)
        a.has_cuped = True
    per_arm_list = arm_metrics_from_arrays(codes, grouped["clicks"].to_numpy(), grouped["exposures"].to_numpy(), pre,
                                           num_arms=len(config.arm_names))
    per_arm = dict(zip(config.arm_names, per_arm_list))
    a.arm_summaries = _arm_summaries(per_arm, a.alpha)
    a.srm = sample_ratio_mismatch({arm: m.users for arm, m in per_arm.items()}, config.weights)
    if min(m.users for m in per_arm.values()) < MIN_USERS_PER_ARM:
        return
    results: list[TestResult] = []
    for treatment in a.treatments:
        found = compare_arms(per_arm, a.control, treatment, alpha=a.alpha)
        results.extend(found)
        primary = per_arm[a.control].clicks_per_exposure, per_arm[treatment].clicks_per_exposure
        a.sequential[treatment] = sequential_test(*primary, seq, metric=METRIC_LABELS[PRIMARY_METRIC],
                                                  control_name=a.control, treatment_name=treatment)
        if a.has_cuped:
            by_metric = {r.metric: r for r in found}
            plain, cuped = by_metric[METRIC_LABELS["clicks_per_user"]], by_metric[METRIC_LABELS["clicks_per_user_cuped"]]
            plain_w, cuped_w = plain.abs_ci[1] - plain.abs_ci[0], cuped.abs_ci[1] - cuped.abs_ci[0]
            if plain_w > 0:
                a.cuped_variance_reduction[treatment] = 1.0 - (cuped_w / plain_w) ** 2
    a.results = results
    a.holm = adjust_results(results, "holm")
    a.bh = adjust_results(results, "benjamini_hochberg")
    first = a.treatments[0]
    primary_result = a.primary(first)
    if primary_result is not None:
        a.power = _power_note(per_arm[a.control], per_arm[first], primary_result, a.alpha)
    edges, unit, seconds = _look_edges(exposures["ts"].to_numpy())
    a.time_unit = unit
    for treatment in a.treatments:
        a.looks[treatment] = _ab_looks(exposures, clicks, config, treatment, seq, edges, seconds)


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


def _analyze_interleave(a: ExperimentAnalysis, exposures: pd.DataFrame, clicks: pd.DataFrame) -> None:
    treatment = a.treatments[0]
    arms = (treatment, a.control)
    no_credit = exposures["item_arms"].isna().to_numpy() if len(exposures) else np.zeros(0, bool)
    if no_credit.any():
        a.notes.append(f"{int(no_credit.sum())} interleaved exposure(s) carry no item_arms and credit nobody")
    credit = _impression_credit(exposures, clicks, arms)
    wins = np.sign(credit[:, 0] - credit[:, 1])
    a.preference = preference_test(int((wins > 0).sum()), int((wins < 0).sum()), int((wins == 0).sum()),
                                   arms=arms, alpha=a.alpha)
    users = exposures["user"].nunique()
    shown = {arm: 0 for arm in arms}
    for item_arms in exposures["item_arms"]:
        if item_arms is not None:
            for team in item_arms:
                if team in shown:
                    shown[team] += 1
    credited = {arm: int(credit[:, j].sum()) for j, arm in enumerate(arms)}
    # For interleaving, "exposures" are the items each arm contributed and "ctr" is clicks per such item.
    a.arm_summaries = [
        ArmSummary(arm=arm, users=users, exposures=shown[arm], clicks=credited[arm],
                   ctr=credited[arm] / max(shown[arm], 1), ctr_ci=(float("nan"),) * 2,
                   clicks_per_user=float("nan"), clicks_per_user_ci=(float("nan"),) * 2,
                   engaged_share=float("nan"), engaged_share_ci=(float("nan"),) * 2)
        for arm in arms
    ]  # fmt: skip
    edges, unit, seconds = _look_edges(exposures["ts"].to_numpy())
    a.time_unit = unit
    ts = exposures["ts"].to_numpy()
    looks = []
    for i, end in enumerate(edges):
        w = wins[ts < end]
        wa, wb = int((w > 0).sum()), int((w < 0).sum())
        if wa + wb == 0:
            continue
        p = preference_test(wa, wb, int((w == 0).sum()), arms=arms, alpha=a.alpha)
        looks.append(Look(index=i, end_ts=float(end), elapsed=(float(end) - ts.min()) / seconds,
                          users={arm: int((ts < end).sum()) for arm in arms}, ctr={}, rel_lift=p.share_a,
                          rel_ci=p.share_ci, always_valid_rel_ci=(float("nan"),) * 2, z=float("nan"),
                          z_boundary=float("nan")))  # fmt: skip
    a.looks[treatment] = looks


# --------------------------------------------------------------------------- decision


def _decide(a: ExperimentAnalysis) -> None:
    guard = _guardrail_words(a)
    if a.mode == "interleave":
        p = a.preference
        if p is None or p.wins_a + p.wins_b < MIN_USERS_PER_ARM:
            decided = 0 if p is None else p.wins_a + p.wins_b
            a.verdict, a.decision = "insufficient_data", f"Not enough data yet: {decided} impressions with a preference."
            return
        t, c = (arm_label(x) for x in p.arms)
        share = f"{format_pct(p.share_a)} [{format_pct(p.share_ci[0])}, {format_pct(p.share_ci[1])}]"
        if a.guardrails is not None and not a.guardrails.ok:
            a.verdict, a.decision = "guardrail", f"Do not ship: {guard}. Preference for {t}: {share}."
        elif p.significant and p.share_a > 0.5:
            a.verdict = "ship"
            a.decision = f"Users prefer {t}: it wins {share} of impressions with a preference, {format_p(p.p_value)}; {guard}"
        elif p.significant:
            a.verdict = "do_not_ship"
            a.decision = f"Users prefer {c}: {t} wins only {share} of impressions with a preference, {format_p(p.p_value)}; {guard}"
        else:
            a.verdict = "no_difference"
            a.decision = f"No significant preference yet: {t} wins {share} of impressions with a preference, {format_p(p.p_value)}; {guard}"
        return
    users = {s.arm: s.users for s in a.arm_summaries}
    if not users or min(users.values()) < MIN_USERS_PER_ARM:
        split = ", ".join(f"{arm_label(k)} {v:,}" for k, v in users.items()) or "no exposures"
        a.verdict = "insufficient_data"
        a.decision = f"Not enough data yet: users per arm {split} (at least {MIN_USERS_PER_ARM} each needed)."
        return
    srm = a.srm
    srm_words = "no sample-ratio mismatch"
    if srm is not None and srm.mismatch:
        split = ", ".join(f"{arm_label(arm)} {o:,} (expected {e:,.0f})" for arm, o, e in zip(srm.arms, srm.observed, srm.expected))
        a.verdict = "srm"
        a.decision = (f"Do not ship: sample-ratio mismatch ({split}; {format_p(srm.p_value)}). Assignment or logging "
                      "is broken, so the metrics cannot be trusted.")  # fmt: skip
        return
    # Headline: the treatment with the most significant primary result (the only one with two arms).
    primaries = [r for r in (a.primary(t) for t in a.treatments) if r is not None]
    best = min(primaries, key=lambda r: r.p_value)
    t = arm_label(best.treatment_name)
    lo, hi = best.rel_ci
    if a.guardrails is not None and not a.guardrails.ok:
        a.verdict = "guardrail"
        a.decision = (f"Do not ship: {guard}. Click-through {format_pct(best.rel_lift, '+')} "
                      f"[{format_pct(lo, '+')}, {format_pct(hi, '+')}], {format_p(best.p_value)}.")  # fmt: skip
        return
    if best.significant and best.rel_lift > 0:
        a.verdict = "ship"
        head = f"{t} raises click-through by {format_pct(best.rel_lift)} [{format_pct(lo)}, {format_pct(hi)}]"
    elif best.significant:
        a.verdict = "do_not_ship"
        head = f"{t} lowers click-through by {format_pct(-best.rel_lift)} [{format_pct(-hi)}, {format_pct(-lo)}]"
    else:
        a.verdict = "no_difference"
        head = (f"No significant difference yet: {t} vs {arm_label(a.control)} click-through "
                f"{format_pct(best.rel_lift, '+')} [{format_pct(lo, '+')}, {format_pct(hi, '+')}]")  # fmt: skip
    a.decision = f"{head}, {format_p(best.p_value)}; {srm_words}; {guard}"
    if best.treatment_name in a.sequential:
        crossed = [lk for lk in a.looks.get(best.treatment_name, []) if abs(lk.z) >= lk.z_boundary]
        if crossed and best.significant:
            # The always-valid p-value is a running minimum: one crossing is enough to stop.
            a.decision += (f". The always-valid test crossed its boundary after {crossed[0].elapsed:.0f} "
                           f"{a.time_unit}(s): safe to stop")  # fmt: skip
        elif best.significant:
            a.decision += (". The always-valid test has not crossed its boundary yet: if you have been looking "
                           "every day, keep running")  # fmt: skip


def _guardrail_words(a: ExperimentAnalysis) -> str:
    if a.guardrails is None:
        return "guardrails not checked (no service metrics given)"
    if a.guardrails.ok:
        return "guardrails OK"
    return "guardrail violated: " + "; ".join(a.guardrails.violations)


def _check_guardrails(a: ExperimentAnalysis, guardrail_inputs: Mapping[str, Any] | None) -> None:
    if not guardrail_inputs:
        return
    latency = dict(guardrail_inputs.get("latency_p99_ms") or {})
    errors = dict(guardrail_inputs.get("error_rate") or {})
    arms = [arm for arm in a.arms if arm in latency]
    if not arms:
        a.notes.append(f"guardrail inputs name no arm of this experiment (arms given: {', '.join(sorted(latency)) or 'none'})")
        return
    # An error rate measured for the whole service (not per arm) applies to every arm.
    fallback_errors = errors.get("*", errors.get("all"))
    error_rate = {arm: float(errors.get(arm, fallback_errors if fallback_errors is not None else 0.0)) for arm in arms}
    limits = {k: guardrail_inputs[k] for k in ("max_latency_p99_ms", "max_error_rate", "max_latency_increase")
              if guardrail_inputs.get(k) is not None}  # fmt: skip
    control = a.control if a.control in arms else None
    if control is None:
        limits.pop("max_latency_increase", None)
    a.guardrails = check_guardrails({arm: float(latency[arm]) for arm in arms}, error_rate, control=control, **limits)
    a.guardrail_source = guardrail_inputs.get("source")


# --------------------------------------------------------------------------- entry point


def analyze_experiment(
    exposures: pd.DataFrame,
    outcomes: pd.DataFrame,
    config: ExperimentConfig,
    guardrail_inputs: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    *,
    pre_period: Mapping[str, float] | pd.Series | pd.DataFrame | None = None,
    alpha: float = 0.05,
    sequential: SequentialConfig | None = None,
    truth: Mapping[str, float] | None = None,
) -> ExperimentAnalysis:
    """Analyse one experiment from event rows (see the module docstring).

    Args:
        exposures (pd.DataFrame): Exposure rows (columns of :data:`abtest.events.EXPOSURE_COLUMNS`; at least
            ``request_id, ts, experiment, arm, user``, plus ``items, item_arms`` for interleaving).
        outcomes (pd.DataFrame): Outcome rows (``request_id, item, kind``).
        config (ExperimentConfig): The experiment (key, arms, weights, control, mode, forced users).
        guardrail_inputs (dict, optional): ``{"latency_p99_ms": {arm: ms}, "error_rate": {arm: share}}``
            (an ``error_rate`` key ``"*"`` applies to every arm), optional limits ``max_latency_p99_ms``,
            ``max_error_rate``, ``max_latency_increase`` and a ``source`` text; see
            :func:`abtest.prometheus.guardrail_inputs_from_prometheus`. (default: None: not checked)
        now (datetime, optional): Time stamped on the report. (default: the current UTC time)
        pre_period (mapping | Series | DataFrame, optional): Pre-experiment covariate per user (e.g. clicks in
            the weeks before); enables CUPED. Users without a value get 0. (default: None)
        alpha (float, optional): Two-sided significance level. (default: 0.05)
        sequential (SequentialConfig, optional): Settings of the always-valid test; its ``alpha`` is
            replaced by ``alpha``. (default: ``SequentialConfig()``)
        truth (dict, optional): Known true values (from a simulation), drawn on the plots and printed:
            ``rel_lift`` and per-arm ``ctr_<arm>``. (default: None)
    """
    seq = SequentialConfig(alpha=alpha, tuning_sample_size=(sequential or SequentialConfig()).tuning_sample_size)
    generated = now or datetime.now(UTC)
    a = ExperimentAnalysis(
        key=config.key, mode=config.mode, control=config.control_arm, arms=config.arm_names, alpha=alpha,
        verdict="insufficient_data", decision="", generated_at=generated, truth=dict(truth) if truth else None,
    )  # fmt: skip
    rows = _select_exposures(exposures, config, a.dropped)
    clicks = _select_clicks(outcomes, rows, a.dropped)
    if len(rows):
        a.first_ts, a.last_ts = float(rows["ts"].min()), float(rows["ts"].max())
    _check_guardrails(a, guardrail_inputs)
    if len(rows) and config.mode == "interleave":
        _analyze_interleave(a, rows, clicks)
    elif len(rows):
        _analyze_ab(a, rows, clicks, config, pre_period, seq)
    else:
        a.notes.append(f"no exposures of experiment {config.key!r} in the event log")
    _decide(a)
    return a


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
