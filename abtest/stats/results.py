"""What a fixed-horizon test returns: :class:`TestResult`, and its wording in plain sentences."""

from __future__ import annotations

import math
from dataclasses import dataclass

from abtest.stats.formatting import (
    NOT_ESTIMABLE,
    format_interval,
    format_number,
    format_p,
    format_pct,
    format_relative,
)
from abtest.stats.lift import LiftArrays

__all__ = ["TestResult", "result_from_lifts"]


@dataclass(frozen=True)
class TestResult:
    """Outcome of comparing a treatment arm with a control arm on one metric.

    ``abs_ci`` / ``rel_ci`` are two-sided ``1 - alpha`` intervals of ``mean_t - mean_c`` and
    ``mean_t / mean_c - 1``; ``p_value`` tests the absolute difference (after :func:`adjust_results`
    it is the adjusted p-value and ``p_value_unadjusted`` keeps the raw one).
    """

    __test__ = False  # not a pytest test class, despite the name

    metric: str
    method: str
    control_name: str
    treatment_name: str
    control_n: int
    treatment_n: int
    control_mean: float
    treatment_mean: float
    abs_lift: float
    abs_ci: tuple[float, float]
    rel_lift: float
    rel_ci: tuple[float, float]
    statistic: float
    p_value: float
    alpha: float
    chance_to_win: float
    p_value_unadjusted: float | None = None
    adjustment: str | None = None

    @property
    def significant(self) -> bool:
        return bool(self.p_value < self.alpha)

    def summary(self) -> str:
        """Plain words, e.g. ``gnn raises click-through by 4.1% [2.0%, 6.2%], p = 0.0003``.

        Against a zero control the relative change is ``not estimable (control is zero)`` and the absolute
        difference is given instead."""
        p = format_p(self.p_value)
        adjusted = f" ({self.adjustment}-adjusted)" if self.adjustment else ""
        t, c = self.treatment_name, self.control_name
        if math.isnan(self.rel_lift):
            absolute = f"absolute difference {format_number(self.abs_lift, '+')} {format_interval(*self.abs_ci, pct=False, sign='+')}"
            if self.significant:
                verb = "raises" if self.abs_lift > 0 else "lowers"
                return f"{t} {verb} {self.metric}: relative change {NOT_ESTIMABLE}; {absolute}, {p}{adjusted}"
            return (
                f"no significant difference in {self.metric} between {t} and {c}: relative change "
                f"{NOT_ESTIMABLE}; {absolute}, {p}{adjusted}"
            )
        lo, hi = self.rel_ci
        if self.significant and self.rel_lift > 0:
            return f"{t} raises {self.metric} by {format_pct(self.rel_lift)} {format_interval(lo, hi)}, {p}{adjusted}"
        if self.significant:
            return f"{t} lowers {self.metric} by {format_pct(-self.rel_lift)} {format_interval(-hi, -lo)}, {p}{adjusted}"
        return (
            f"no significant difference in {self.metric} between {t} and {c}: "
            f"{format_relative(self.rel_lift, self.rel_ci)}, {p}{adjusted}"
        )


def result_from_lifts(
    lifts: LiftArrays,
    *,
    metric: str,
    method: str,
    control_name: str,
    treatment_name: str,
    control_n: int,
    treatment_n: int,
    control_mean: float,
    treatment_mean: float,
    alpha: float,
) -> TestResult:
    return TestResult(
        metric=metric,
        method=method,
        control_name=control_name,
        treatment_name=treatment_name,
        control_n=int(control_n),
        treatment_n=int(treatment_n),
        control_mean=float(control_mean),
        treatment_mean=float(treatment_mean),
        abs_lift=float(lifts.abs_lift),
        abs_ci=(float(lifts.abs_ci_low), float(lifts.abs_ci_high)),
        rel_lift=float(lifts.rel_lift),
        rel_ci=(float(lifts.rel_ci_low), float(lifts.rel_ci_high)),
        statistic=float(lifts.statistic),
        p_value=float(lifts.p_value),
        alpha=alpha,
        chance_to_win=float(lifts.chance_to_win),
    )
