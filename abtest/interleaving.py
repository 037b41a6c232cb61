"""Team-draft interleaving of two rankers' lists, click credit, and the preference test.

Team draft (Radlinski, Kurup & Joachims, "How does clickthrough data reflect retrieval quality?", 2008):
like captains picking players, the team with fewer picks so far picks next (a fair coin decides when
both have picked equally often), always taking its highest-ranked item not yet shown. One refinement:
when both arms' next unpicked item is the *same* item, it is shown once and credited to nobody (team
``None``). Without it, two identical rankers would still "win" impressions through the coin flips
(a click on position 1 credits whichever team happened to pick it), and the test for "identical lists
never show a preference" would fail. Shared items do not change which team picks next, so the
procedure stays symmetric between the arms.

The coin flips are seeded by ``sha256(request_id)``, so the same request always yields the same
merged list (replayable from the exposure log).

Credit: each distinct clicked item counts one click for the arm that contributed it (shared items and
items not in the list count for nobody). The impression's winner is the arm with more credited clicks;
equal counts (including no clicks) mean no preference.

Preference test over impressions with a preference: ``share_a = wins_a / (wins_a + wins_b)``,
``delta = (wins_a - wins_b) / (wins_a + wins_b) = 2 share_a - 1``, the exact two-sided binomial sign test
of ``share_a = 0.5`` and the Wilson score interval of ``share_a`` (mapped to ``delta``).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from abtest.stats.formatting import format_interval, format_p, format_pct

__all__ = [
    "InterleavedList",
    "team_draft_interleave",
    "ImpressionCredit",
    "credit_clicks",
    "winners_from_arrays",
    "PreferenceResult",
    "preference_test",
    "count_wins",
]


@dataclass(frozen=True)
class InterleavedList:
    """Merged list shown to the user.

    Attributes:
        items: Items in display order.
        teams: For each position, the arm that contributed the item, or ``None`` for a shared item.
        arms: The two arm names, ``(a, b)``.
    """

    items: tuple[Hashable, ...]
    teams: tuple[str | None, ...]
    arms: tuple[str, str]

    def team_codes(self) -> np.ndarray:
        """Teams as ``int8``: 0 = first arm, 1 = second arm, -1 = shared (for :func:`winners_from_arrays`)."""
        code = {self.arms[0]: 0, self.arms[1]: 1, None: -1}
        return np.array([code[t] for t in self.teams], dtype=np.int8)


def _seeded_rng(request_id: str | int) -> random.Random:
    seed = int.from_bytes(hashlib.sha256(f"interleave:{request_id}".encode()).digest()[:8], "big")
    return random.Random(seed)


def team_draft_interleave(
    ranking_a: Sequence[Hashable],
    ranking_b: Sequence[Hashable],
    *,
    request_id: str | int,
    k: int | None = None,
    arms: tuple[str, str] = ("a", "b"),
) -> InterleavedList:
    """Team-draft interleave two ranked lists for one request.

    Args:
        ranking_a (Sequence): Items ranked by the first arm, best first.
        ranking_b (Sequence): Items ranked by the second arm, best first.
        request_id (str | int): Seeds the coin flips; the same id gives the same list.
        k (int, optional): Length of the merged list. (default: the longer input's length, capped by
            the number of distinct items)
        arms (tuple[str, str], optional): Names of the two arms. (default: ``("a", "b")``)
    """
    if arms[0] == arms[1]:
        raise ValueError("the two arms need different names")
    distinct = len(set(ranking_a) | set(ranking_b))
    k = min(max(len(ranking_a), len(ranking_b)) if k is None else k, distinct)
    rng = _seeded_rng(request_id)
    items: list[Hashable] = []
    teams: list[str | None] = []
    seen: set[Hashable] = set()
    ia = ib = picks_a = picks_b = 0
    while len(items) < k:
        while ia < len(ranking_a) and ranking_a[ia] in seen:
            ia += 1
        while ib < len(ranking_b) and ranking_b[ib] in seen:
            ib += 1
        has_a, has_b = ia < len(ranking_a), ib < len(ranking_b)
        if not (has_a or has_b):
            break
        if has_a and has_b and ranking_a[ia] == ranking_b[ib]:
            item, team = ranking_a[ia], None
        elif not has_b or (has_a and (picks_a < picks_b or (picks_a == picks_b and rng.random() < 0.5))):
            item, team = ranking_a[ia], arms[0]
            picks_a += 1
        else:
            item, team = ranking_b[ib], arms[1]
            picks_b += 1
        items.append(item)
        teams.append(team)
        seen.add(item)
    return InterleavedList(items=tuple(items), teams=tuple(teams), arms=tuple(arms))


@dataclass(frozen=True)
class ImpressionCredit:
    """Credited clicks of one impression and its winner (``None``: no preference)."""

    clicks_a: int
    clicks_b: int
    winner: str | None


def credit_clicks(interleaved: InterleavedList, clicked_items: Iterable[Hashable]) -> ImpressionCredit:
    """Credit each distinct clicked item to the arm that contributed it; the arm with more clicks wins."""
    team_of = dict(zip(interleaved.items, interleaved.teams))
    a, b = interleaved.arms
    clicks = {a: 0, b: 0}
    for item in set(clicked_items):
        team = team_of.get(item)
        if team is not None:
            clicks[team] += 1
    winner = a if clicks[a] > clicks[b] else b if clicks[b] > clicks[a] else None
    return ImpressionCredit(clicks_a=clicks[a], clicks_b=clicks[b], winner=winner)


def winners_from_arrays(team_codes: np.ndarray, clicked: np.ndarray) -> np.ndarray:
    """Vectorised credit for many impressions.

    Args:
        team_codes (np.ndarray): ``(impressions, k)`` int codes per position (0, 1, or -1 shared).
        clicked (np.ndarray): ``(impressions, k)`` booleans, one per position.

    Returns:
        ``(impressions,)`` int8: 0 when the first arm wins, 1 for the second, -1 for no preference.
    """
    team_codes = np.asarray(team_codes)
    clicked = np.asarray(clicked, dtype=bool)
    clicks_a = np.sum(clicked & (team_codes == 0), axis=-1)
    clicks_b = np.sum(clicked & (team_codes == 1), axis=-1)
    return np.where(clicks_a > clicks_b, 0, np.where(clicks_b > clicks_a, 1, -1)).astype(np.int8)


def count_wins(winners: Iterable[str | None], arms: tuple[str, str]) -> tuple[int, int, int]:
    """``(wins_a, wins_b, ties)`` from per-impression winners."""
    wins_a = wins_b = ties = 0
    for w in winners:
        if w == arms[0]:
            wins_a += 1
        elif w == arms[1]:
            wins_b += 1
        elif w is None:
            ties += 1
        else:
            raise ValueError(f"winner {w!r} is not one of {arms}")
    return wins_a, wins_b, ties


@dataclass(frozen=True)
class PreferenceResult:
    """Preference of users between two interleaved rankers."""

    arms: tuple[str, str]
    wins_a: int
    wins_b: int
    ties: int
    share_a: float
    share_ci: tuple[float, float]
    delta: float
    delta_ci: tuple[float, float]
    p_value: float
    alpha: float

    @property
    def impressions(self) -> int:
        return self.wins_a + self.wins_b + self.ties

    @property
    def significant(self) -> bool:
        return bool(self.p_value < self.alpha)

    @property
    def preferred(self) -> str | None:
        """The significantly preferred arm, or ``None``."""
        if not self.significant:
            return None
        return self.arms[0] if self.share_a > 0.5 else self.arms[1]

    def summary(self) -> str:
        a, b = self.arms
        decided = self.wins_a + self.wins_b
        head = (
            f"users prefer {self.preferred}" if self.preferred else f"no significant preference between {a} and {b}"
        )
        return (
            f"{head}: {a} wins {format_pct(self.share_a)} {format_interval(*self.share_ci)} of {decided:,} impressions "
            f"with a preference ({self.wins_a:,} vs {self.wins_b:,}; {self.ties:,} without), {format_p(self.p_value)}"
        )


def preference_test(
    wins_a: int, wins_b: int, ties: int = 0, *, arms: tuple[str, str] = ("a", "b"), alpha: float = 0.05
) -> PreferenceResult:
    """Sign test of the interleaving preference.

    Args:
        wins_a (int): Impressions won by the first arm.
        wins_b (int): Impressions won by the second arm.
        ties (int, optional): Impressions without a preference (reported, not tested). (default: 0)
        arms (tuple[str, str], optional): Arm names. (default: ``("a", "b")``)
        alpha (float, optional): Two-sided level of the test and the interval. (default: 0.05)
    """
    if min(wins_a, wins_b, ties) < 0:
        raise ValueError("win and tie counts must be non-negative")
    n = wins_a + wins_b
    if n == 0:
        return PreferenceResult(arms, wins_a, wins_b, ties, 0.5, (0.0, 1.0), 0.0, (-1.0, 1.0), 1.0, alpha)
    # Exact two-sided binomial test at p = 0.5: the distribution is symmetric, so double the smaller tail.
    p_value = min(1.0, 2.0 * float(stats.binom.cdf(min(wins_a, wins_b), n, 0.5)))
    share = wins_a / n
    z = stats.norm.ppf(1 - alpha / 2)
    # Wilson score interval: well behaved near 0 and 1 and for small n, unlike the Wald interval.
    centre = (share + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(share * (1 - share) / n + z**2 / (4 * n**2))
    lo, hi = float(centre - half), float(centre + half)
    return PreferenceResult(
        arms=tuple(arms),
        wins_a=int(wins_a),
        wins_b=int(wins_b),
        ties=int(ties),
        share_a=share,
        share_ci=(lo, hi),
        delta=2 * share - 1,
        delta_ci=(2 * lo - 1, 2 * hi - 1),
        p_value=p_value,
        alpha=alpha,
    )
