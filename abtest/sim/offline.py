"""Offline simulator: many experiments on one simulated world, to validate the statistics end to end.

No HTTP. One world (:func:`build_world`) holds, for every active user of a data_gen dataset:

* the requests per simulated day (:func:`abtest.sim.world.daily_sessions`: Poisson sessions weighted by
  ``activity_level``);
* each ranker's top-k list (:func:`abtest.sim.world.ranker_lists`) and the true click probability of every
  slot (``ClickModel.click_probability`` at the slot's 0-based position);
* clicks per user and day, drawn **once per (user, ranker)**: ``sum_j Binomial(requests, p_j)``. An A/A
  test serves the same ranker in both arms, so both arms share the user's clicks (the sharp null);
* for interleaving, up to four team-draft merges per user (``abtest.interleaving.team_draft_interleave``,
  seeded by a request id) and, per impression, Bernoulli clicks on the merged list credited with
  ``winners_from_arrays``.

Experiments then only re-randomise the assignment: experiment ``e`` splits users 50/50 with
:func:`abtest.assignment.assign_buckets` under the salt ``offline-<seed>-<e>`` (the production hash), and
every per-arm sum is one matrix product ``assignment [E, n] @ per_user [n, ...]``. The true effect comes
from the click model: ``CTR_r = sum_u requests_u sum_j p_r(u, j) / sum_u requests_u`` over the same users.
Why re-randomising alone is enough: over assignments, the estimate centres on the realised clicks of the
whole world, whose distance to the expected (true) value is exactly the variance the Neyman interval
over-counts for a finite population, so coverage of the true effect stays at its nominal level.

Checks (:func:`validate`): A/A false-positive rate, interval coverage of the true effect, the sequential
test's false-positive rate under daily peeking, and the users needed for 80% power, A/B (clicks per
exposure, delta method) against interleaving (sign test on impressions with a preference).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from abtest.assignment import NUM_BUCKETS, assign_buckets
from abtest.interleaving import preference_test, team_draft_interleave, winners_from_arrays
from abtest.sim.synthetic import RateEstimate, ratio_moments
from abtest.sim.world import TrafficConfig, daily_sessions, load_world_users, ranker_lists
from abtest.stats.lift import LiftArrays, lift_arrays
from abtest.stats.power import mean_sample_size
from abtest.stats.sequential import z_boundary
from abtest.stats.sufficient_statistics import RatioStatistic

__all__ = [
    "OfflineWorld",
    "build_world",
    "random_assignments",
    "arm_sums",
    "ratio_lifts",
    "OfflineValidation",
    "validate",
    "format_validation",
]

INTERLEAVE_VARIANTS = 4


@dataclass
class OfflineWorld:
    """Per-user outcomes of every ranker (see the module docstring). Arrays are aligned with ``user_ids``."""

    user_ids: np.ndarray  # [n] active users (at least one request)
    requests: np.ndarray  # [n, days]
    rankers: tuple[str, str]  # (control, treatment) specs
    clicks: dict[str, np.ndarray]  # ranker -> [n, days] realised clicks
    expected_clicks_per_request: dict[str, np.ndarray]  # ranker -> [n] sum of slot probabilities
    interleave_wins: np.ndarray | None = None  # [n, days, 2]: impressions won by (treatment, control)
    interleave_ties: np.ndarray | None = None  # [n, days]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def true_ctr(self, ranker: str) -> float:
        """Expected clicks per request of ``ranker``'s lists over this world's requests."""
        weights = self.requests.sum(1)
        return float(weights @ self.expected_clicks_per_request[ranker] / weights.sum())

    @property
    def true_rel_lift(self) -> float:
        control, treatment = self.rankers
        return self.true_ctr(treatment) / self.true_ctr(control) - 1.0


def build_world(
    data_dir: str | Path,
    control: str = "popular",
    treatment: str = "oracle",
    *,
    traffic: TrafficConfig | None = None,
    seed: int = 0,
    max_users: int | None = None,
    interleave: bool = True,
    click_model=None,
) -> OfflineWorld:
    """Simulate the world once (see the module docstring).

    Args:
        data_dir (str | Path): data_gen dataset directory (with ``truth/``).
        control, treatment (str): Ranker specs of :func:`abtest.sim.world.ranker_lists`. (default:
            ``popular`` vs ``oracle``)
        traffic (TrafficConfig, optional): Arrival process. (default: ``TrafficConfig()``)
        seed (int, optional): Seed of traffic, lists and clicks. (default: 0)
        max_users (int, optional): Keep at most this many active users (the most active first are not
            preferred: a uniform sample). (default: all)
        interleave (bool, optional): Also simulate team-draft interleaving of the two rankers. (default: True)
        click_model (ClickModel, optional): Already loaded model of ``data_dir``. (default: loaded)
    """
    from data_gen.truth import ClickModel

    timings: dict[str, float] = {}
    start = time.perf_counter()
    traffic = traffic or TrafficConfig()
    rng = np.random.default_rng([seed, 1])
    model = click_model or ClickModel.load(data_dir)
    users = load_world_users(data_dir)
    requests = daily_sessions(users, traffic, rng)
    active = np.flatnonzero(requests.sum(1) > 0)
    if max_users is not None and len(active) > max_users:
        active = np.sort(rng.choice(active, size=max_users, replace=False))
    user_ids, requests = users.user_ids[active], requests[active]
    now = None if traffic.click_clock == "frozen" else users.start_ts + traffic.days * 86_400 // 2
    timings["load"] = time.perf_counter() - start

    k = traffic.k
    lists, probs = {}, {}
    for spec in dict.fromkeys((control, treatment)):
        t = time.perf_counter()
        lists[spec] = ranker_lists(spec, model, user_ids, k, seed=seed, now=now)
        probs[spec] = _slot_probabilities(model, user_ids, lists[spec], now)
        timings[f"lists {spec}"] = time.perf_counter() - t
    t = time.perf_counter()
    clicks = {}
    for spec, p in probs.items():
        # sum over slots of Binomial(requests that day, p_slot): one draw per (user, day, slot)
        clicks[spec] = rng.binomial(requests[:, :, None], p[:, None, :]).sum(-1)
    world = OfflineWorld(
        user_ids=user_ids, requests=requests, rankers=(control, treatment), clicks=clicks,
        expected_clicks_per_request={s: p.sum(1) for s, p in probs.items()}, timings=timings,
    )  # fmt: skip
    timings["clicks"] = time.perf_counter() - t
    if interleave and control != treatment:
        t = time.perf_counter()
        world.interleave_wins, world.interleave_ties = _simulate_interleaving(
            model, user_ids, requests, lists[treatment], lists[control], now, rng
        )
        timings["interleaving"] = time.perf_counter() - t
    return world


def _slot_probabilities(model, user_ids: np.ndarray, lists: np.ndarray, now) -> np.ndarray:
    n, k = lists.shape
    valid = lists >= 0
    p = np.zeros((n, k))
    users = np.repeat(user_ids, k).reshape(n, k)
    positions = np.tile(np.arange(k), (n, 1))
    p[valid] = model.click_probability(users[valid], lists[valid], positions[valid], now=now)
    return p


def _simulate_interleaving(model, user_ids, requests, treatment_lists, control_lists, now, rng):
    """Wins of (treatment, control) and ties per user and day, from Bernoulli clicks on merged lists."""
    n, days = requests.shape
    k = treatment_lists.shape[1]
    per_user = np.minimum(requests.sum(1), INTERLEAVE_VARIANTS)
    variant_items = np.full((int(per_user.sum()), k), -1, dtype=np.int64)
    variant_teams = np.full((int(per_user.sum()), k), -1, dtype=np.int8)
    variant_user = np.repeat(np.arange(n), per_user)
    row = 0
    for u in range(n):
        a = [int(x) for x in treatment_lists[u] if x >= 0]
        b = [int(x) for x in control_lists[u] if x >= 0]
        for v in range(per_user[u]):
            merged = team_draft_interleave(a, b, request_id=f"offline:{user_ids[u]}:{v}", k=k, arms=("t", "c"))
            variant_items[row, : len(merged.items)] = merged.items
            variant_teams[row, : len(merged.items)] = merged.team_codes()
            row += 1
    p = _slot_probabilities(model, user_ids[variant_user], variant_items, now)
    first_variant = np.concatenate([[0], np.cumsum(per_user)[:-1]])
    # every request of (user, day) is one impression of a randomly chosen variant of that user
    imp_user = np.repeat(np.arange(n), requests.sum(1))
    imp_day = np.concatenate([np.repeat(np.arange(days), r) for r in requests]) if n else np.zeros(0, np.int64)
    imp_variant = first_variant[imp_user] + (rng.random(len(imp_user)) * per_user[imp_user]).astype(np.int64)
    clicked = rng.random((len(imp_user), k)) < p[imp_variant]
    winners = winners_from_arrays(variant_teams[imp_variant], clicked)
    cell = imp_user * days + imp_day
    wins = np.stack([np.bincount(cell[winners == w], minlength=n * days).reshape(n, days) for w in (0, 1)], axis=-1)
    ties = np.bincount(cell[winners == -1], minlength=n * days).reshape(n, days)
    return wins, ties


def random_assignments(user_ids: np.ndarray, num_experiments: int, seed: int = 0) -> np.ndarray:
    """``float32 [E, n]``: 1 where experiment ``e`` puts the user in treatment (50/50 by the production hash,
    salt ``offline-<seed>-<e>``)."""
    ids = [int(u) for u in user_ids]
    out = np.empty((num_experiments, len(ids)), dtype=np.float32)
    for e in range(num_experiments):
        out[e] = assign_buckets(f"offline-{seed}-{e}", ids) >= NUM_BUCKETS // 2
    return out


def arm_sums(
    assign: np.ndarray, m_t: np.ndarray, m_c: np.ndarray, d: np.ndarray, present: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Sufficient sums ``n, m, m2, d, d2, md`` of each arm for every experiment: ``(control, treatment)``.

    Args:
        assign (np.ndarray): ``[E, n]`` 1 where experiment ``e`` puts the user in treatment
            (:func:`random_assignments`).
        m_t, m_c (np.ndarray): Per-user numerators (clicks) the user would have in treatment / control,
            ``[n]`` or ``[n, looks]``.
        d (np.ndarray): Per-user denominators (exposures), same shape.
        present (np.ndarray): 1 where the user counts (e.g. has been seen by that look), same shape.
    """
    columns = {
        "n": (present, present), "m": (m_t, m_c), "m2": (m_t * m_t, m_c * m_c), "d": (d, d), "d2": (d * d, d * d),
        "md": (m_t * d, m_c * d),
    }  # fmt: skip
    # One matrix product for all sums: [E, n] @ [n, 12 * columns].
    stacked = np.stack([x.astype(np.float64) for pair in columns.values() for x in pair], axis=-1)
    flat = stacked.reshape(stacked.shape[0], -1)
    products = (assign.astype(np.float64) @ flat).reshape(assign.shape[0], *stacked.shape[1:])
    totals = stacked.sum(0)
    treat, control = {}, {}
    for i, key in enumerate(columns):
        treat[key] = products[..., 2 * i]
        control[key] = totals[..., 2 * i + 1] - products[..., 2 * i + 1]
    return control, treat


def ratio_lifts(control: dict[str, np.ndarray], treat: dict[str, np.ndarray], alpha: float) -> LiftArrays:
    """Delta-method comparison of clicks per exposure for every experiment, from :func:`arm_sums`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_c, var_c, n_c = ratio_moments(control)
        ratio_t, var_t, n_t = ratio_moments(treat)
        return lift_arrays(ratio_c, var_c, n_c, ratio_t, var_t, n_t, alpha=alpha)


@dataclass
class OfflineValidation:
    """Results of :func:`validate` (rates carry their Monte-Carlo standard error)."""

    experiments: int
    users: int
    true_ctr: tuple[float, float]
    true_rel_lift: float
    aa_false_positive_rate: RateEstimate
    coverage_relative: RateEstimate
    coverage_absolute: RateEstimate
    sequential_false_positive_rate: RateEstimate
    naive_peeking_false_positive_rate: RateEstimate
    ab_users_for_power: float | None  # total users (both arms)
    ab_users_analytic: float
    interleaving_users_for_power: float | None
    power_grid: dict[str, list[tuple[int, float]]]
    timings: dict[str, float]


def _users_for_power(grid: list[tuple[int, float]], target: float) -> float | None:
    """Smallest users reaching ``target`` power, interpolated (log users) between grid points."""
    for (n0, p0), (n1, p1) in zip(grid, grid[1:]):
        if p0 < target <= p1:
            w = (target - p0) / (p1 - p0)
            return float(np.exp(np.log(n0) + w * (np.log(n1) - np.log(n0))))
    if grid and grid[0][1] >= target:
        return float(grid[0][0])
    return None


def validate(
    world: OfflineWorld,
    *,
    num_experiments: int = 1000,
    alpha: float = 0.05,
    power: float = 0.8,
    seed: int = 0,
    power_experiments: int = 400,
) -> OfflineValidation:
    """Run the four checks of the module docstring on ``world``."""
    timings = dict(world.timings)
    control, treatment = world.rankers
    t = time.perf_counter()
    assign = random_assignments(world.user_ids, num_experiments, seed)
    timings["assignment (sha256)"] = time.perf_counter() - t

    t = time.perf_counter()
    d = world.requests.sum(1).astype(np.float64)
    present = np.ones(world.n_users)
    # A/A: the control ranker in both arms; the two arms share each user's clicks.
    m = world.clicks[control].sum(1).astype(np.float64)
    aa = ratio_lifts(*arm_sums(assign, m, m, d, present), alpha)
    fpr = RateEstimate(float(np.mean(aa.p_value < alpha)), num_experiments)
    # A/B: coverage of the true effect.
    m_t = world.clicks[treatment].sum(1).astype(np.float64)
    ab = ratio_lifts(*arm_sums(assign, m_t, m, d, present), alpha)
    true_c, true_t = world.true_ctr(control), world.true_ctr(treatment)
    rel_true, abs_true = true_t / true_c - 1, true_t - true_c
    cov_rel = RateEstimate(float(np.mean((ab.rel_ci_low <= rel_true) & (rel_true <= ab.rel_ci_high))), num_experiments)
    cov_abs = RateEstimate(float(np.mean((ab.abs_ci_low <= abs_true) & (abs_true <= ab.abs_ci_high))), num_experiments)
    timings["A/A and coverage"] = time.perf_counter() - t

    # Peeking: A/A looked at after every simulated day, on cumulative per-user data.
    t = time.perf_counter()
    m_cum = np.cumsum(world.clicks[control], axis=1).astype(np.float64)
    d_cum = np.cumsum(world.requests, axis=1).astype(np.float64)
    seen = (d_cum > 0).astype(np.float64)
    control_sums, treat_sums = arm_sums(assign, m_cum, m_cum, d_cum, seen)
    looks = ratio_lifts(control_sums, treat_sums, alpha)
    n_total = control_sums["n"] + treat_sums["n"]
    boundary = z_boundary(n_total, alpha, float(n_total[:, -1].mean()))
    z = np.nan_to_num(looks.statistic)
    seq = RateEstimate(float(np.mean(np.any(np.abs(z) >= boundary, axis=1))), num_experiments)
    naive = RateEstimate(float(np.mean(np.any(np.nan_to_num(looks.p_value, nan=1.0) < alpha, axis=1))), num_experiments)
    timings["peeking"] = time.perf_counter() - t

    # Users for 80% power: the analytic A/B figure, then both designs measured on subsamples of the world.
    t = time.perf_counter()
    std = np.sqrt((RatioStatistic.from_values(m, d).variance + RatioStatistic.from_values(m_t, d).variance) / 2)
    analytic = 2 * mean_sample_size(std, abs_true, alpha=alpha, power=power).control_exact
    rng = np.random.default_rng([seed, 99])
    p_exp = min(power_experiments, num_experiments)
    # experiment e samples the users whose random rank is below the size (a fresh subsample per experiment)
    ranks = rng.permuted(np.tile(np.arange(world.n_users, dtype=np.int32), (p_exp, 1)), axis=1)
    grid_ab, grid_il = [], []
    for size in _grid(analytic, world.n_users, minimum=20):
        sample = (ranks < size).astype(np.float32)
        res = ratio_lifts(*_sample_sums(assign[:p_exp], sample, m_t, m, d), alpha)
        grid_ab.append((size, float(np.mean(np.nan_to_num(res.p_value, nan=1.0) < alpha))))
    if world.interleave_wins is not None:
        wins = world.interleave_wins.sum(1).astype(np.float64)  # [n, 2]
        ties = world.interleave_ties.sum(1).astype(np.float64)
        il_analytic = _interleaving_users_guess(wins, ties, alpha, power)
        for size in _grid(il_analytic, world.n_users, minimum=5):
            sample = (ranks < size).astype(np.float64)
            w = sample @ wins
            tie = sample @ ties
            hits = [preference_test(int(a), int(b), int(c), alpha=alpha).p_value < alpha for (a, b), c in zip(w, tie)]
            grid_il.append((size, float(np.mean(hits))))
    timings["power"] = time.perf_counter() - t
    return OfflineValidation(
        experiments=num_experiments, users=world.n_users, true_ctr=(true_c, true_t), true_rel_lift=rel_true,
        aa_false_positive_rate=fpr, coverage_relative=cov_rel, coverage_absolute=cov_abs,
        sequential_false_positive_rate=seq, naive_peeking_false_positive_rate=naive,
        ab_users_for_power=_users_for_power(grid_ab, power), ab_users_analytic=analytic,
        interleaving_users_for_power=_users_for_power(grid_il, power) if grid_il else None,
        power_grid={"ab": grid_ab, "interleaving": grid_il}, timings=timings,
    )  # fmt: skip


def _grid(guess: float, n_users: int, minimum: int) -> list[int]:
    """User counts around an analytic guess, capped by the world."""
    return sorted({int(min(n_users, max(minimum, guess * f))) for f in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)})


def _sample_sums(assign: np.ndarray, sample: np.ndarray, m_t: np.ndarray, m_c: np.ndarray, d: np.ndarray):
    """Per-arm sums over the sampled users only (``sample [E, n]`` is 1 for users in experiment e)."""
    out = []
    for arm_mask, m in ((sample * (1.0 - assign), m_c), (sample * assign, m_t)):
        out.append({"n": arm_mask.sum(1).astype(np.float64), "m": arm_mask @ m, "m2": arm_mask @ (m * m),
                    "d": arm_mask @ d, "d2": arm_mask @ (d * d), "md": arm_mask @ (m * d)})  # fmt: skip
    return out[0], out[1]


def _interleaving_users_guess(wins: np.ndarray, ties: np.ndarray, alpha: float, power: float) -> float:
    """Normal-approximation users for the sign test to reach ``power`` (a starting point for the grid)."""
    decided = wins.sum()
    if decided == 0:
        return float(len(wins))
    share = wins[:, 0].sum() / decided
    if abs(share - 0.5) < 1e-6:
        return float(len(wins))
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    needed = ((z_a * 0.5 + z_b * np.sqrt(share * (1 - share))) / (share - 0.5)) ** 2
    return float(needed / (decided / len(wins)))


def format_validation(v: OfflineValidation, world: OfflineWorld) -> str:
    """Markdown table of an :class:`OfflineValidation` of ``world``."""

    def rate(r) -> str:
        return f"{r.rate:.1%} ± {r.standard_error:.1%}"

    def users(x) -> str:
        return "n/a (effect too small for this world)" if x is None else f"{x:,.0f}"

    control, treatment = world.rankers
    lines = [
        f"World: {v.users:,} users, {int(world.requests.sum()):,} requests over {world.requests.shape[1]} days; "
        f"true CTR {control} {v.true_ctr[0]:.4f}, {treatment} {v.true_ctr[1]:.4f} "
        f"(true lift {v.true_rel_lift:+.1%}); {v.experiments:,} experiments.",
        "",
        "| check | measured (± 1 s.e.) | target |",
        "|---|---|---|",
        f"| A/A false-positive rate at alpha = 0.05 (clicks per exposure, delta method) | {rate(v.aa_false_positive_rate)} | 3.5% – 6.5% |",
        f"| coverage of the 95% interval over the true relative lift | {rate(v.coverage_relative)} | ≥ 93% |",
        f"| coverage of the 95% interval over the true absolute lift | {rate(v.coverage_absolute)} | ≥ 93% |",
        f"| sequential (mSPRT) false-positive rate, A/A peeked daily | {rate(v.sequential_false_positive_rate)} | ≤ 5% |",
        f"| contrast: fixed-horizon test peeked daily | {rate(v.naive_peeking_false_positive_rate)} | — |",
        f"| users for 80% power, A/B (both arms; measured) | {users(v.ab_users_for_power)} | — |",
        f"| users for 80% power, A/B (normal approximation) | {users(v.ab_users_analytic)} | — |",
        f"| users for 80% power, interleaving (measured) | {users(v.interleaving_users_for_power)} | far fewer than A/B |",
    ]  # fmt: skip
    if v.ab_users_for_power and v.interleaving_users_for_power:
        lines.append(f"| ratio A/B / interleaving users | {v.ab_users_for_power / v.interleaving_users_for_power:.1f}x | > 1 |")
    return "\n".join(lines)
