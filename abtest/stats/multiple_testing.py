"""Adjusting the p-values of several metrics of one experiment: Holm (family-wise error) and
Benjamini-Hochberg (false discovery rate)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from abtest.stats.results import TestResult

__all__ = ["MultipleTestingResult", "holm", "benjamini_hochberg", "adjust_results"]


@dataclass(frozen=True)
class MultipleTestingResult:
    method: str
    p_values: tuple[float, ...]
    adjusted: tuple[float, ...]
    reject: tuple[bool, ...]
    alpha: float


def holm(p_values: Sequence[float], alpha: float = 0.05) -> MultipleTestingResult:
    """Holm step-down adjustment (controls the family-wise error rate).

    Sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
    """
    p = _as_p_array(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum((m - np.arange(m)) * p[order], 1.0)
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return _multiple("holm", p, adjusted, alpha)


def benjamini_hochberg(p_values: Sequence[float], alpha: float = 0.05) -> MultipleTestingResult:
    """Benjamini-Hochberg step-up adjustment (controls the false discovery rate).

    Sorted ascending, ``adj_(i) = min_{j >= i} min(1, m p_(j) / j)``.
    """
    p = _as_p_array(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(m * p[order] / np.arange(1, m + 1), 1.0)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return _multiple("benjamini_hochberg", p, adjusted, alpha)


def adjust_results(
    results: Sequence[TestResult], method: Literal["holm", "benjamini_hochberg"] = "holm"
) -> list[TestResult]:
    """Replace each result's p-value by the adjusted one across ``results`` (the metrics of one
    experiment); ``p_value_unadjusted`` keeps the raw value. Intervals are not adjusted."""
    if not results:
        return []
    raw = [r.p_value_unadjusted if r.p_value_unadjusted is not None else r.p_value for r in results]
    alpha = results[0].alpha
    adjust = {"holm": holm, "benjamini_hochberg": benjamini_hochberg}.get(method)
    if adjust is None:
        raise ValueError(f"method must be 'holm' or 'benjamini_hochberg', got {method!r}")
    out = adjust(raw, alpha)
    short = {"holm": "Holm", "benjamini_hochberg": "BH"}[method]
    return [
        replace(r, p_value=adj, p_value_unadjusted=p, adjustment=short) for r, p, adj in zip(results, raw, out.adjusted)
    ]


def _as_p_array(p_values: Sequence[float]) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("p_values must be a non-empty 1-d sequence")
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError("p_values must lie in [0, 1]")
    return p


def _multiple(method: str, p: np.ndarray, adjusted: np.ndarray, alpha: float) -> MultipleTestingResult:
    return MultipleTestingResult(
        method=method,
        p_values=tuple(float(x) for x in p),
        adjusted=tuple(float(x) for x in adjusted),
        reject=tuple(bool(x) for x in adjusted <= alpha),
        alpha=alpha,
    )
