"""Each detector on planted shifts with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from monitoring.detectors import (
    InputComparison,
    binned_counts,
    chi_square_calibrated_p,
    chi_square_test,
    design_effect,
    holm,
    ks_calibrated_p,
    ks_test,
    null_ratio,
    psi,
    quantile_edges,
)


def test_ks_finds_a_planted_mean_shift_and_not_a_null():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 5000)
    d_shift, p_shift = ks_test(reference, rng.normal(0.4, 1, 400))
    d_null, p_null = ks_test(reference, rng.normal(0, 1, 400))
    assert p_shift < 1e-6 and d_shift > 0.1
    assert p_null > 0.01 and d_null < d_shift


def test_ks_ignores_nan_and_handles_empty():
    assert ks_test(np.array([np.nan, 1.0]), np.array([]))[1] == 1.0
    d, p = ks_test(np.array([1.0, 2.0, np.nan, 3.0]), np.array([1.0, 2.0, 3.0]))
    assert d == pytest.approx(0.0) and p == pytest.approx(1.0)


def test_chi_square_finds_a_category_gaining_share():
    reference = [500.0, 300.0, 200.0]
    _, p_same, dof = chi_square_test(reference, [50.0, 30.0, 20.0])
    _, p_moved, _ = chi_square_test(reference, [25.0, 30.0, 45.0])
    assert dof == 2
    assert p_same > 0.99
    assert p_moved < 1e-4


def test_chi_square_degenerate_tables():
    assert chi_square_test([10.0, 0.0], [5.0, 0.0]) == (0.0, 1.0, 0)
    assert chi_square_test([10.0, 5.0], [0.0, 0.0]) == (0.0, 1.0, 0)


def test_psi_known_value():
    # shares (0.5, 0.5) -> (0.25, 0.75): 0.25 ln(0.5) ... = -0.25 ln 0.5 + 0.25 ln 1.5
    expected = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert psi([50, 50], [25, 75]) == pytest.approx(expected)
    assert psi([1, 1], [1, 1]) == pytest.approx(0.0)


def test_quantile_bins_split_the_reference_evenly():
    reference = np.arange(1000, dtype=float)
    edges = quantile_edges(reference, 10)
    assert len(edges) == 9
    np.testing.assert_allclose(binned_counts(reference, edges), 100, atol=1)


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, 0.03, 0.2, 0.001, np.nan])
    np.testing.assert_allclose(holm(p), multipletests(np.nan_to_num(p, nan=1.0), method="holm")[1])
    assert len(holm([])) == 0


def test_calibration_with_unit_design_effect_is_the_iid_test():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=3000), rng.normal(0.1, 1, 800)
    d, _ = ks_test(a, b)
    assert ks_calibrated_p(d, 3000, 800, 1.0) == pytest.approx(stats.kstwobign.sf(d * np.sqrt(3000 * 800 / 3800)))
    x2, p, dof = chi_square_test([300, 200, 100], [40, 40, 10])
    assert chi_square_calibrated_p(x2, dof, 1.0) == pytest.approx(p)
    # a design effect above 1 (clustered samples) makes the same distance less significant
    assert chi_square_calibrated_p(x2, dof, 4.0) > p


def test_design_effect_recovers_a_planted_cluster_size():
    """Windows of clusters of 5 identical draws: the KS null statistic is ~5x its iid size."""
    rng = np.random.default_rng(2)
    reference = rng.normal(size=20000)
    ratios = []
    for _ in range(200):
        window = np.repeat(rng.normal(size=100), 5)
        d, _ = ks_test(reference, window)
        ratios.append(null_ratio(InputComparison("x", "ks", d, 1.0, 0.0, 20000, 500, 0.0, 0.0)))
    assert 3.5 < design_effect(ratios) < 6.5
    assert design_effect([1.0, 2.0]) == 1.0  # too few windows to say
