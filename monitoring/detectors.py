"""Two-sample tests of one input, window against reference: pure functions of samples or counts.

* continuous inputs: two-sample Kolmogorov-Smirnov (:func:`scipy.stats.ks_2samp`), plus the PSI over
  the reference's quantile bins as an effect size;
* categorical inputs: chi-square test of homogeneity on the 2 x C table (reference, window)
  (:func:`scipy.stats.chi2_contingency`, no continuity correction) and the population stability index
  ``PSI = sum_c (w_c - r_c) ln(w_c / r_c)`` over shares (empty cells smoothed by ``epsilon``);
* across inputs: Holm's step-down correction (:func:`statsmodels.stats.multitest.multipletests`).

Counts may be fractional (slots weighted ``1 / list length``, see :mod:`monitoring.features`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "InputComparison", "ks_test", "chi_square_test", "psi", "quantile_edges", "binned_counts", "holm", "design_effect",
    "ks_calibrated_p", "chi_square_calibrated_p", "effective_n", "null_ratio",
]  # fmt: skip


@dataclass(frozen=True)
class InputComparison:
    """One input's comparison in one window.

    Attributes:
        input (str): Input name.
        test (str): ``ks`` or ``chi2``.
        statistic (float): KS distance ``D`` or the chi-square statistic.
        p_value (float): Unadjusted p-value.
        psi (float): Population stability index (reference quantile bins for continuous inputs).
        n_reference (float): Reference sample size (requests; weighted for categorical inputs).
        n_window (float): Window sample size.
        reference_value (float): Reference mean (continuous) or the share of the category that moved
            most (categorical).
        window_value (float): The same figure in the window.
        detail (str): For categorical inputs, the category that moved most.
        dof (int): Degrees of freedom of the chi-square test (0 for KS).
        design_effect (float): Null-spread factor from the reference's windows (1: iid).
        p_raw (float): The iid p-value of scipy's test, before the design-effect calibration.
        p_adjusted (float): Holm-adjusted ``p_value`` within the window (filled by the monitor).
    """

    input: str
    test: str
    statistic: float
    p_value: float
    psi: float
    n_reference: float
    n_window: float
    reference_value: float
    window_value: float
    detail: str = ""
    dof: int = 0
    design_effect: float = 1.0
    p_raw: float = float("nan")
    p_adjusted: float = float("nan")


def ks_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """Two-sample KS ``(D, p)``; NaNs are dropped; ``(nan, 1.0)`` when a sample is empty."""
    reference, window = _finite(reference), _finite(window)
    if len(reference) == 0 or len(window) == 0:
        return float("nan"), 1.0
    result = stats.ks_2samp(reference, window, alternative="two-sided", method="auto")
    return float(result.statistic), float(result.pvalue)


def chi_square_test(
    reference_counts: Sequence[float], window_counts: Sequence[float]
) -> tuple[float, float, int]:
    """Chi-square test of homogeneity of two count vectors over the same categories ``(X2, p, dof)``.

    Categories empty in both are dropped; fewer than two categories left, or an empty side, gives
    ``(0.0, 1.0, 0)``.
    """
    table = np.asarray([reference_counts, window_counts], dtype=np.float64)
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2 or (table.sum(1) <= 0).any():
        return 0.0, 1.0, 0
    statistic, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
    return float(statistic), float(p_value), int(dof)


#: E[K^2] of the Kolmogorov distribution (the limit of sqrt(n_e) D under the null): pi^2 / 12.
KOLMOGOROV_MEAN_SQUARE = float(np.pi**2 / 12)


def effective_n(n_reference: float, n_window: float) -> float:
    """``n_e = n m / (n + m)``, the sample size of the two-sample KS limit."""
    return n_reference * n_window / max(n_reference + n_window, 1e-12)


def ks_calibrated_p(statistic: float, n_reference: float, n_window: float, design_effect: float) -> float:
    """KS p-value with the sample size deflated by ``design_effect``: ``P(K > D sqrt(n_e / deff))``.

    ``design_effect`` is the reference windows' mean of ``n_e D^2`` over its null value (see
    :func:`design_effect`); 1 gives the asymptotic iid p-value.
    """
    if not np.isfinite(statistic):
        return 1.0
    return float(stats.kstwobign.sf(statistic * np.sqrt(effective_n(n_reference, n_window) / design_effect)))


def chi_square_calibrated_p(statistic: float, dof: int, design_effect: float) -> float:
    """First-order Rao-Scott p-value: ``P(chi2_dof > X2 / deff)``."""
    if dof < 1:
        return 1.0
    return float(stats.chi2.sf(statistic / design_effect, dof))


def design_effect(null_statistics: Sequence[float], bounds: tuple[float, float] = (0.02, 50.0)) -> float:
    """Mean of null statistics scaled to their iid expectation (``n_e D^2 / (pi^2/12)`` or ``X2 / dof``),
    clipped to ``bounds``; 1 when there are fewer than 5.

    Why: windows are not iid samples (a finite set of users, lists of correlated slots, weighted
    counts), so the iid null is too wide or too narrow. The reference period's own windows, compared
    with the reference, show the real spread of the statistic without drift; dividing by their mean
    ratio is the first-order Rao-Scott correction.
    """
    values = np.asarray([v for v in null_statistics if np.isfinite(v)], dtype=np.float64)
    if len(values) < 5:
        return 1.0
    return float(np.clip(values.mean(), *bounds))


def null_ratio(result: InputComparison) -> float:
    """A statistic over its iid null expectation (about 1 on average without drift, for iid samples)."""
    if result.test == "ks":
        return effective_n(result.n_reference, result.n_window) * result.statistic**2 / KOLMOGOROV_MEAN_SQUARE
    return result.statistic / result.dof if result.dof > 0 else float("nan")


def psi(reference_counts: Sequence[float], window_counts: Sequence[float], epsilon: float = 1e-4) -> float:
    """Population stability index of two count vectors over the same bins (shares smoothed by ``epsilon``)."""
    r = np.asarray(reference_counts, dtype=np.float64)
    w = np.asarray(window_counts, dtype=np.float64)
    if r.sum() <= 0 or w.sum() <= 0:
        return float("nan")
    r = np.maximum(r / r.sum(), epsilon)
    w = np.maximum(w / w.sum(), epsilon)
    return float(np.sum((w - r) * np.log(w / r)))


def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (repeated edges of tied values merged)."""
    reference = _finite(reference)
    if len(reference) == 0:
        return np.zeros(0)
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def binned_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    values = _finite(values)
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1).astype(np.float64)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error control across the inputs of one window).

    Same numbers as ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]`` (a test checks
    it); written out because that function runs ``gc.collect()`` on every call, 75 ms each, which was a
    third of the drift benchmark.
    """
    p = np.nan_to_num(np.asarray(p_values, dtype=np.float64), nan=1.0)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def categorical_counts(counts: Mapping[str, float], categories: Sequence[str]) -> np.ndarray:
    """Counts over fixed ``categories``; anything else goes to ``other`` (which must be listed)."""
    index = {c: i for i, c in enumerate(categories)}
    out = np.zeros(len(categories))
    other = index.get("other")
    for category, count in counts.items():
        i = index.get(category, other)
        if i is not None:
            out[i] += count
    return out


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]
