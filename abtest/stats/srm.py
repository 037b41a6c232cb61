"""Sample ratio mismatch: chi-square goodness of fit of the users per arm against the configured weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from abtest.stats.formatting import format_p

__all__ = ["SRMResult", "sample_ratio_mismatch"]


@dataclass(frozen=True)
class SRMResult:
    """Chi-square goodness-of-fit of the observed users per arm against the configured weights."""

    arms: tuple[str, ...]
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    chi2: float
    p_value: float
    threshold: float

    @property
    def mismatch(self) -> bool:
        return bool(self.p_value < self.threshold)

    def summary(self) -> str:
        split = ", ".join(f"{a}={o} (expected {e:.0f})" for a, o, e in zip(self.arms, self.observed, self.expected))
        verdict = "SAMPLE RATIO MISMATCH: do not trust the results" if self.mismatch else "no sample ratio mismatch"
        return f"{verdict}: {split}; chi2 = {self.chi2:.2f}, {format_p(self.p_value)}"


def sample_ratio_mismatch(
    observed: Mapping[str, int] | Sequence[int],
    weights: Mapping[str, float] | Sequence[float],
    *,
    threshold: float = 0.001,
) -> SRMResult:
    """Flag a sample ratio mismatch: chi-square test of users per arm against the expected weights.

    Args:
        observed: Users per arm, as ``{arm: count}`` or a sequence in the order of ``weights``.
        weights: Configured arm weights (any positive scale), same keys/order as ``observed``.
        threshold (float, optional): Flag when ``p < threshold``; a strict threshold because SRM is checked
            on every experiment and a true mismatch gives tiny p-values. (default: 0.001)
    """
    if isinstance(observed, Mapping):
        if not isinstance(weights, Mapping) or set(observed) != set(weights):
            raise ValueError(f"observed arms {sorted(observed)} do not match weighted arms {sorted(weights)}")
        arms = tuple(weights)
        counts = np.array([observed[a] for a in arms], dtype=np.float64)
        w = np.array([weights[a] for a in arms], dtype=np.float64)
    else:
        counts = np.asarray(observed, dtype=np.float64)
        w = np.asarray(list(weights.values()) if isinstance(weights, Mapping) else weights, dtype=np.float64)
        arms = tuple(weights) if isinstance(weights, Mapping) else tuple(f"arm{i}" for i in range(len(w)))
    if counts.shape != w.shape or counts.size < 2:
        raise ValueError("need the same number (at least two) of observed counts and weights")
    if np.any(w <= 0):
        raise ValueError("weights must be positive")
    expected = counts.sum() * w / w.sum()
    if counts.sum() == 0:
        chi2, p = 0.0, 1.0
    else:
        chi2 = float(np.sum((counts - expected) ** 2 / expected))
        p = float(stats.chi2.sf(chi2, counts.size - 1))
    return SRMResult(
        arms=arms,
        observed=tuple(int(c) for c in counts),
        expected=tuple(float(e) for e in expected),
        chi2=chi2,
        p_value=p,
        threshold=threshold,
    )
