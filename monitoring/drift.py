"""Window-by-window drift detection against a reference profile, and the alarm rule over time.

For each window of ``window_hours`` (one request per user, as in the reference):

1. every input present in both the window and the reference with at least ``min_requests`` requests
   is tested (:func:`compare_window`): KS for continuous inputs, chi-square for categorical ones, PSI
   for both;
2. Holm's correction across the window's inputs; an input is *flagged* when its adjusted p-value is
   below ``alpha`` (and, for categorical inputs, its PSI is at least ``min_psi``);
3. an input is *in alarm* when it was flagged in ``persistence`` consecutive windows. An *alarm* is
   raised at the end of the first window of a run of windows in which some input is in alarm.

Why both corrections: the false-alarm target is per 30 simulated days, i.e. over ~180 four-hour
windows of ~10 inputs each. Holm bounds the per-window family-wise rate by ``alpha``; requiring
``persistence`` consecutive flags turns ``alpha`` per window into roughly ``alpha ** persistence``
per window for windows that are independent under no drift, while a real shift, which persists,
costs only ``persistence - 1`` extra windows of delay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from monitoring.config import DriftConfig
from monitoring.detectors import (
    InputComparison,
    binned_counts,
    categorical_counts,
    chi_square_calibrated_p,
    chi_square_test,
    holm,
    ks_calibrated_p,
    ks_test,
    psi,
    quantile_edges,
)
from monitoring.features import Traffic
from monitoring.profile import ReferenceProfile, input_values, sampled_requests

__all__ = ["WindowResult", "Alarm", "DriftRun", "compare_window", "monitor", "apply_rule", "alarm_states"]


@dataclass(frozen=True)
class WindowResult:
    """Tests of one window.

    Attributes:
        index (int): Window number from the run's origin.
        start_ts, end_ts (float): The window.
        n_requests (int): Requests tested (one per user).
        tests (tuple[InputComparison, ...]): One per tested input, Holm-adjusted.
        flagged (tuple[str, ...]): Inputs significant in this window.
        alarmed (tuple[str, ...]): Inputs flagged in ``persistence`` consecutive windows up to this one.
    """

    index: int
    start_ts: float
    end_ts: float
    n_requests: int
    tests: tuple[InputComparison, ...]
    flagged: tuple[str, ...] = ()
    alarmed: tuple[str, ...] = ()

    def test(self, name: str) -> InputComparison | None:
        return next((t for t in self.tests if t.input == name), None)


@dataclass(frozen=True)
class Alarm:
    """A raised alarm: the first window of a run of windows with some input in alarm.

    Attributes:
        raised_at (float): End of the window that raised it (when a monitor could have fired).
        window (int): That window's number.
        inputs (tuple[str, ...]): Inputs in alarm at any window of the run.
        last_window (int): Last window of the run.
    """

    raised_at: float
    window: int
    inputs: tuple[str, ...]
    last_window: int


@dataclass(frozen=True)
class DriftRun:
    """Every window of a monitored period and the alarms raised."""

    windows: tuple[WindowResult, ...]
    alarms: tuple[Alarm, ...]
    config: DriftConfig
    origin: float

    def first_alarm_after(self, ts: float) -> Alarm | None:
        """The first alarm raised after ``ts`` (by a window ending after ``ts``)."""
        return next((a for a in self.alarms if a.raised_at > ts), None)

    def alarms_before(self, ts: float) -> list[Alarm]:
        return [a for a in self.alarms if a.raised_at <= ts]

    @property
    def inputs(self) -> list[str]:
        return sorted({t.input for w in self.windows for t in w.tests})


def compare_window(profile: ReferenceProfile, window: Traffic, config: DriftConfig) -> list[InputComparison]:
    """Test every input of ``window`` (already one request per user) against ``profile``.

    p-values are calibrated by the profile's design effects (:func:`monitoring.detectors.design_effect`)
    but not yet adjusted across inputs.
    """
    continuous, categorical = input_values(window)
    results = []
    for name in sorted(set(continuous) & set(profile.continuous)):
        ref, cur = profile.continuous[name], continuous[name]
        if len(cur) < config.min_requests or len(ref) < config.min_requests:
            continue
        statistic, p_raw = ks_test(ref, cur)
        edges = quantile_edges(ref, config.psi_bins)
        deff = profile.design_effects.get(name, 1.0)
        results.append(InputComparison(
            input=name, test="ks", statistic=statistic, p_raw=p_raw, design_effect=deff,
            p_value=ks_calibrated_p(statistic, len(ref), len(cur), deff),
            psi=psi(binned_counts(ref, edges), binned_counts(cur, edges)),
            n_reference=float(len(ref)), n_window=float(len(cur)),
            reference_value=float(np.mean(ref)), window_value=float(np.mean(cur)),
        ))  # fmt: skip
    for name in sorted(set(categorical) & set(profile.categorical)):
        categories = sorted(profile.categorical[name])
        ref = np.asarray([profile.categorical[name][c] for c in categories])
        cur = categorical_counts(categorical[name], categories)
        if "other" not in categories:  # a category the reference never saw is drift too: count it
            unseen = sum(n for c, n in categorical[name].items() if c not in profile.categorical[name])
            if unseen > 0:
                categories, ref, cur = [*categories, "other"], np.append(ref, 0.0), np.append(cur, unseen)
        # weights add to 1 per request, so the total is the window's requests behind this input
        if cur.sum() < config.min_requests or profile.n_requests < config.min_requests:
            continue
        statistic, p_raw, dof = chi_square_test(ref, cur)
        deff = profile.design_effects.get(name, 1.0)
        ref_share, cur_share = ref / max(ref.sum(), 1e-12), cur / max(cur.sum(), 1e-12)
        moved = int(np.argmax(np.abs(cur_share - ref_share)))
        results.append(InputComparison(
            input=name, test="chi2", statistic=statistic, p_raw=p_raw, dof=dof, design_effect=deff,
            p_value=chi_square_calibrated_p(statistic, dof, deff), psi=psi(ref, cur),
            n_reference=float(ref.sum()), n_window=float(cur.sum()),
            reference_value=float(ref_share[moved]), window_value=float(cur_share[moved]),
            detail=str(categories[moved]),
        ))  # fmt: skip
    return results


def alarm_states(flagged: Iterable[tuple[int, Iterable[str]]], persistence: int) -> list[tuple[str, ...]]:
    """Inputs in alarm per window, given ``(window index, flagged inputs)`` in window order.

    An input is in alarm when flagged in ``persistence`` consecutive window indices (a window with no
    traffic breaks the run).
    """
    streak: dict[str, int] = {}
    last_index: int | None = None
    out = []
    for index, names in flagged:
        if last_index is not None and index != last_index + 1:
            streak = {}
        names = set(names)
        streak = {n: streak.get(n, 0) + 1 for n in names}
        out.append(tuple(sorted(n for n, s in streak.items() if s >= persistence)))
        last_index = index
    return out


def monitor(
    profile: ReferenceProfile,
    traffic: Traffic,
    config: DriftConfig,
    *,
    origin: float | None = None,
    progress=None,
) -> DriftRun:
    """Cut ``traffic`` into windows from ``origin`` (default: the first request), test and raise alarms.

    Args:
        profile (ReferenceProfile): The reference.
        traffic (Traffic): Monitored requests and slots (:func:`monitoring.features.traffic_tables`).
        config (DriftConfig): Windows, alpha, persistence.
        origin (float, optional): Start of window 0, Unix seconds. (default: the first request's ts)
        progress (callable, optional): Called with each window's number as it is done (a progress bar).
    """
    if len(traffic.requests) == 0:
        return DriftRun((), (), config, float(origin or 0.0))
    ts = traffic.requests["ts"].to_numpy(dtype=np.float64)
    origin = float(np.floor(ts.min())) if origin is None else float(origin)
    sampled, windows = sampled_requests(traffic, config.window_seconds, origin)
    width = config.window_seconds
    results: list[WindowResult] = []
    for index in np.unique(windows):
        if index < 0:
            continue
        window = sampled.subset(windows == index)
        tests = compare_window(profile, window, config)
        adjusted = holm([t.p_value for t in tests])
        tests = [replace(t, p_adjusted=float(p)) for t, p in zip(tests, adjusted)]
        start = origin + int(index) * width
        results.append(WindowResult(int(index), start, start + width, len(window.requests), tuple(tests)))
        if progress is not None:
            progress(int(index))
    return apply_rule(DriftRun(tuple(results), (), config, origin), config)


def apply_rule(run: DriftRun, config: DriftConfig) -> DriftRun:
    """Re-decide flags, alarm states and alarms of ``run``'s tests under ``config``'s ``alpha``,
    ``min_psi`` and ``persistence`` (the tests themselves are not recomputed)."""
    windows = []
    for w in run.windows:
        flagged = tuple(
            t.input for t in w.tests if t.p_adjusted < config.alpha and (t.test != "chi2" or t.psi >= config.min_psi)
        )
        windows.append(replace(w, flagged=flagged))
    states = alarm_states(((w.index, w.flagged) for w in windows), config.persistence)
    windows = [replace(w, alarmed=s) for w, s in zip(windows, states)]
    return DriftRun(tuple(windows), tuple(_alarms(windows)), config, run.origin)


def _alarms(windows: list[WindowResult]) -> list[Alarm]:
    alarms: list[Alarm] = []
    current: list[WindowResult] = []
    for w in [*windows, None]:
        continues = w is not None and w.alarmed and (not current or w.index == current[-1].index + 1)
        if continues:
            current.append(w)
            continue
        if current:
            inputs = tuple(sorted({n for x in current for n in x.alarmed}))
            alarms.append(Alarm(current[0].end_ts, current[0].index, inputs, current[-1].index))
            current = []
        if w is not None and w.alarmed:
            current = [w]
    return alarms
