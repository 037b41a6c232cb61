"""The feed's real-time feature state: one incremental object fed events in time order, queried at time t.

Training replays the Parquet log through it point-in-time (:mod:`recsys.feed.replay`); serving will feed
the same object from ``POST /feedback`` and exposures. :class:`FeatureStore` is the small interface both
use; :class:`FeatureState` is the in-process implementation, and a Redis-backed store implements the
same methods with one hash per counter key and one sorted set of recent clicks per user.

What it keeps (all counts of *events*; ``truth/`` is never read):

* item counters: clicks decayed with half-lives 6 h, 1 d, 7 d and all-time; impressions 1 d and
  all-time; likes and shares all-time;
* followees' recent engagements: every click of the last ``social_window`` (7 days), so "distinct
  followees of u who clicked i" and a decayed version (half-life 1 day) can be asked for any (u, i);
* user-creator affinity: u's clicks on c's posts (7 d and all-time), impressions of them (all-time),
  and whether u follows c;
* user-topic affinity: u's clicks on a topic (7 d and all-time) and impressions of it (all-time);
* user activity: u's impressions and clicks (7 d);
* seen posts (impressions) per user and the follow graph.

Windows are exponential decays (a count with half-life h is ``sum 2^-(now - ts)/h``): an O(1) update
per event and per key, exact whatever the batching, and two numbers per key in Redis (value, time).

Point-in-time: :attr:`FeatureState.clock` is the latest event time fed; a query at ``now`` earlier than
that raises :class:`FutureEventError`, so a replay can never read an event after the time it asks about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from recsys.feed.data import CLICK, DAY, IMPRESSION, LIKE, SHARE, Catalog, EventLog, FollowLog

HOUR = 3_600
INF = math.inf
#: Key of a pair (a, b) of non-negative ids below 2^32; independent of the sizes, so new users or
#: posts need no re-keying.
_SHIFT = np.int64(32)

ITEM_COUNTERS = (
    "item_clicks_6h", "item_clicks_1d", "item_clicks_7d", "item_clicks_all",
    "item_impressions_1d", "item_impressions_all", "item_likes_all", "item_shares_all",
)  # fmt: skip
USER_COUNTERS = ("user_impressions_7d", "user_clicks_7d")
CREATOR_COUNTERS = ("creator_clicks_7d", "creator_clicks_all", "creator_impressions_all")
TOPIC_COUNTERS = ("topic_clicks_7d", "topic_clicks_all", "topic_impressions_all")
SOCIAL_COUNTERS = ("followees_clicked_7d", "followee_clicks_decayed_1d")


class FutureEventError(ValueError):
    """A query at a time before an event the state has already been fed (would leak the future)."""


def pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int64 key of each pair ``(a[j], b[j])``."""
    return (np.asarray(a, dtype=np.int64) << _SHIFT) | np.asarray(b, dtype=np.int64)


class _Level:
    """Sorted keys with their decayed values and last-update times (one level of :class:`DecayedCounts`)."""

    def __init__(self, n_rates: int) -> None:
        self.keys = np.empty(0, dtype=np.int64)
        self.values = np.empty((0, n_rates), dtype=np.float64)
        self.last = np.empty(0, dtype=np.int64)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(position, found)`` of each key."""
        at = np.searchsorted(self.keys, keys)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == keys[found]
        return at, found

    def update(self, a: np.ndarray, rates: np.ndarray, sums: np.ndarray, t_new: np.ndarray) -> None:
        """Bring entries ``a`` and the new sums (at ``t_new``) to the later of the two times and add them."""
        t_ref = np.maximum(self.last[a], t_new)
        self.values[a] = self.values[a] * np.exp(-rates * (t_ref - self.last[a])[:, None]) + sums * np.exp(
            -rates * (t_ref - t_new)[:, None]
        )
        self.last[a] = t_ref

    def insert(self, keys: np.ndarray, values: np.ndarray, last: np.ndarray) -> None:
        """Insert keys absent from this level (sorted)."""
        at = np.searchsorted(self.keys, keys)
        self.keys = np.insert(self.keys, at, keys)
        self.values = np.insert(self.values, at, values, axis=0)
        self.last = np.insert(self.last, at, last)


class DecayedCounts:
    """Event counts per int64 key, exponentially decayed with several half-lives at once.

    Keys live in two sorted levels, like :class:`_PairSet`: a large ``main`` updated in place and a
    small ``delta`` that takes the new keys, merged into the main when it outgrows a sixteenth of it.
    A stream of small batches (a service's exposures and feedback) then costs amortised O(1) copies
    per new key instead of a copy of every array per batch. A key is in exactly one level.

    Args:
        half_lives (Sequence[float]): Seconds; ``math.inf`` keeps a plain count.
    """

    def __init__(self, half_lives: Sequence[float]) -> None:
        hl = np.asarray(half_lives, dtype=np.float64)
        self.rates = np.where(np.isinf(hl), 0.0, np.log(2.0) / np.where(np.isinf(hl), 1.0, hl))
        self._main = _Level(len(hl))
        self._delta = _Level(len(hl))

    def __len__(self) -> int:
        return len(self._main.keys) + len(self._delta.keys)

    def add(self, keys: np.ndarray, ts: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Count events (``keys[j]`` at ``ts[j]``, weight 1 unless given); any order, any batching."""
        keys, ts = np.asarray(keys, dtype=np.int64), np.asarray(ts, dtype=np.int64)
        if len(keys) == 0:
            return
        w = np.ones(len(keys)) if weights is None else np.asarray(weights, dtype=np.float64)
        order = np.lexsort((ts, keys))
        keys, ts, w = keys[order], ts[order], w[order]
        uniq, start = np.unique(keys, return_index=True)
        group = np.repeat(np.arange(len(uniq)), np.diff(np.append(start, len(keys))))
        t_new = np.maximum.reduceat(ts, start)
        contrib = w[:, None] * np.exp(-self.rates[None, :] * (t_new[group] - ts)[:, None])
        sums = np.add.reduceat(contrib, start, axis=0)
        rest = np.ones(len(uniq), dtype=bool)
        for level in (self._main, self._delta):
            at, found = level.find(uniq)
            found &= rest
            if found.any():
                level.update(at[found], self.rates, sums[found], t_new[found])
                rest &= ~found
        if rest.any():
            if len(self._main.keys) == 0:
                self._main.insert(uniq[rest], sums[rest], t_new[rest])
                return
            self._delta.insert(uniq[rest], sums[rest], t_new[rest])
            if len(self._delta.keys) > max(1024, len(self._main.keys) // 16):
                d = self._delta
                self._main.insert(d.keys, d.values, d.last)
                self._delta = _Level(len(self.rates))

    def get(self, keys: np.ndarray, now: int) -> np.ndarray:
        """``float64 [len(keys), n_half_lives]`` counts decayed to ``now`` (0 for unknown keys)."""
        keys = np.asarray(keys, dtype=np.int64)
        out = np.zeros((len(keys), len(self.rates)))
        if len(keys) == 0:
            return out
        for level in (self._main, self._delta):
            if len(level.keys) == 0:
                continue
            at = np.minimum(np.searchsorted(level.keys, keys), len(level.keys) - 1)
            hit = level.keys[at] == keys
            a = at[hit]
            age = np.maximum(now - level.last[a], 0)
            out[hit] = level.values[a] * np.exp(-self.rates * age[:, None])
        return out


class _PairSet:
    """A growing set of int64 pair keys (seen posts, follows) in two sorted levels: a large ``main`` and
    a small ``delta`` of recent additions, merged when the delta outgrows a sixteenth of the main
    (amortised O(1) copies per key instead of one full copy per batch)."""

    def __init__(self) -> None:
        self.main = np.empty(0, dtype=np.int64)
        self.delta = np.empty(0, dtype=np.int64)
        self.main_version = 0

    def add(self, keys: np.ndarray) -> None:
        keys = np.sort(np.asarray(keys, dtype=np.int64))
        if len(keys) == 0:
            return
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
        keys = keys[~_member(self.main, keys) & ~_member(self.delta, keys)]
        if len(keys) == 0:
            return
        self.delta = np.insert(self.delta, np.searchsorted(self.delta, keys), keys)
        if len(self.delta) > max(1024, len(self.main) // 16):
            self.main = np.insert(self.main, np.searchsorted(self.main, self.delta), self.delta)
            self.delta = np.empty(0, dtype=np.int64)
            self.main_version += 1

    def sorted(self) -> np.ndarray:
        if len(self.delta) == 0:
            return self.main
        return np.insert(self.main, np.searchsorted(self.main, self.delta), self.delta)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64)
        return _member(self.main, keys) | _member(self.delta, keys)

    def row(self, a: int) -> np.ndarray:
        """The ``b`` of every pair ``(a, b)``, sorted."""
        bounds = [np.int64(a) << _SHIFT, np.int64(a + 1) << _SHIFT]
        parts = [level[slice(*np.searchsorted(level, bounds))] for level in (self.main, self.delta)]
        return np.sort(np.concatenate(parts)) & np.int64(0xFFFFFFFF)


def _member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


class FeatureStore(Protocol):
    """What the feed reads and writes; in-process (:class:`FeatureState`) or Redis-backed.

    Every query takes ``now`` and answers from events strictly before it.
    """

    clock: int

    def observe(self, events: EventLog) -> None:
        """Feed interaction events (impressions, clicks, likes, shares)."""

    def observe_follows(self, follows: FollowLog) -> None:
        """Feed follow edges."""

    def item_counters(self, items: np.ndarray, now: int) -> np.ndarray:
        """``[n, len(ITEM_COUNTERS)]``."""

    def user_counters(self, users: np.ndarray, now: int) -> np.ndarray:
        """``[n, len(USER_COUNTERS)]``."""

    def creator_counters(self, users: np.ndarray, creators: np.ndarray, now: int) -> np.ndarray:
        """``[n, len(CREATOR_COUNTERS)]`` for aligned (user, creator) pairs."""

    def topic_counters(self, users: np.ndarray, topics: np.ndarray, now: int) -> np.ndarray:
        """``[n, len(TOPIC_COUNTERS)]`` for aligned (user, topic) pairs."""

    def social_counters(self, users: np.ndarray, items: np.ndarray, now: int) -> np.ndarray:
        """``[n, len(SOCIAL_COUNTERS)]`` for aligned (user, item) pairs."""

    def follows(self, users: np.ndarray, others: np.ndarray) -> np.ndarray:
        """bool ``[n]``: does ``users[j]`` follow ``others[j]``."""

    def followees(self, user: int) -> np.ndarray:
        """Dense user indices ``user`` follows."""

    def followee_engaged(self, user: int, now: int) -> tuple[np.ndarray, np.ndarray]:
        """Posts ``user``'s followees clicked in the social window and their decayed click sums."""

    def seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """bool ``[n]``: has ``users[j]`` had an impression of ``items[j]``."""

    def seen_items(self, user: int) -> np.ndarray:
        """Posts ``user`` has had an impression of."""


class FeatureState:
    """In-process :class:`FeatureStore` (see the module docstring).

    Args:
        catalog (Catalog): Post metadata (creator and topic of each post).
        social_window (int): Seconds of followees' clicks kept for the social features. (default: 7 days)
        social_half_life (float): Half-life of the decayed social feature, seconds. (default: 1 day)
    """

    def __init__(self, catalog: Catalog, social_window: int = 7 * DAY, social_half_life: float = DAY) -> None:
        self.catalog = catalog
        self.social_window = int(social_window)
        self.social_rate = math.log(2.0) / social_half_life
        self.clock = -(2**62)
        self.version = 0  # bumped on every change; caches key on it
        self._item_clicks = DecayedCounts((6 * HOUR, DAY, 7 * DAY, INF))
        self._item_impressions = DecayedCounts((DAY, INF))
        self._item_likes_shares = DecayedCounts((INF,))  # key: item * 2 + (0 like, 1 share)
        self._user_activity = DecayedCounts((7 * DAY,))  # key: user * 2 + (0 impression, 1 click)
        self._creator_clicks = DecayedCounts((7 * DAY, INF))
        self._creator_impressions = DecayedCounts((INF,))
        self._topic_clicks = DecayedCounts((7 * DAY, INF))
        self._topic_impressions = DecayedCounts((INF,))
        self._seen = _PairSet()
        self._follows = _PairSet()
        self._recent: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # clicks (user, item, ts)
        self._by_user = _ClicksByUser()  # the same clicks, indexed by user (one request's social features)
        self._social_cache: tuple[tuple[int, int], sp.csr_matrix, sp.csr_matrix] | None = None
        self._follow_cache: tuple[tuple[int, int], sp.csr_matrix] | None = None
        self._n_users = 0
        self._follow_version = 0

    # -- writes ----------------------------------------------------------------------------------
    def observe(self, events: EventLog) -> None:
        if len(events) == 0:
            return
        cat = self.catalog
        u, i, ts, kind = events.user.astype(np.int64), events.item.astype(np.int64), events.ts, events.kind
        self._n_users = max(self._n_users, int(u.max()) + 1)
        imp, clk = kind == IMPRESSION, kind == CLICK
        self._item_clicks.add(i[clk], ts[clk])
        self._item_impressions.add(i[imp], ts[imp])
        ls = (kind == LIKE) | (kind == SHARE)
        self._item_likes_shares.add(i[ls] * 2 + (kind[ls] == SHARE), ts[ls])
        act = imp | clk
        self._user_activity.add(u[act] * 2 + clk[act], ts[act])
        creator = cat.creator[i]
        known = creator >= 0
        self._creator_clicks.add(pair_keys(u[clk & known], creator[clk & known]), ts[clk & known])
        self._creator_impressions.add(pair_keys(u[imp & known], creator[imp & known]), ts[imp & known])
        self._topic_clicks.add(pair_keys(u[clk], cat.topic[i[clk]]), ts[clk])
        self._topic_impressions.add(pair_keys(u[imp], cat.topic[i[imp]]), ts[imp])
        self._seen.add(pair_keys(u[imp], i[imp]))
        if clk.any():
            self._recent.append((u[clk], i[clk], ts[clk]))
            # clicks no query can still ask about (no query precedes the clock) are dropped at merges
            self._by_user.add(u[clk], i[clk], ts[clk], keep_from=max(self.clock, int(ts.max())) - self.social_window)
        self.clock = max(self.clock, int(ts.max()))
        self.version += 1

    def observe_follows(self, follows: FollowLog) -> None:
        if len(follows) == 0:
            return
        self._follows.add(pair_keys(follows.follower, follows.followee))
        self._n_users = max(self._n_users, int(max(follows.follower.max(), follows.followee.max())) + 1)
        self.clock = max(self.clock, int(follows.ts.max()))
        self._follow_version += 1
        self.version += 1

    # -- reads -----------------------------------------------------------------------------------
    def _check(self, now: int) -> None:
        if now < self.clock:
            raise FutureEventError(
                f"query at t={now} but the state holds an event at t={self.clock}: features must only "
                "use events before the time they describe"
            )

    def item_counters(self, items: np.ndarray, now: int) -> np.ndarray:
        self._check(now)
        items = np.asarray(items, dtype=np.int64)
        ls = self._item_likes_shares
        return np.concatenate(
            [
                self._item_clicks.get(items, now),
                self._item_impressions.get(items, now),
                ls.get(items * 2, now),
                ls.get(items * 2 + 1, now),
            ],
            axis=1,
        )

    def user_counters(self, users: np.ndarray, now: int) -> np.ndarray:
        self._check(now)
        users = np.asarray(users, dtype=np.int64)
        act = self._user_activity
        return np.concatenate([act.get(users * 2, now), act.get(users * 2 + 1, now)], axis=1)

    def creator_counters(self, users: np.ndarray, creators: np.ndarray, now: int) -> np.ndarray:
        self._check(now)
        creators = np.asarray(creators, dtype=np.int64)
        keys = pair_keys(users, np.maximum(creators, 0))
        out = np.concatenate([self._creator_clicks.get(keys, now), self._creator_impressions.get(keys, now)], axis=1)
        out[creators < 0] = 0.0
        return out

    def topic_counters(self, users: np.ndarray, topics: np.ndarray, now: int) -> np.ndarray:
        self._check(now)
        keys = pair_keys(users, topics)
        return np.concatenate([self._topic_clicks.get(keys, now), self._topic_impressions.get(keys, now)], axis=1)

    def follows(self, users: np.ndarray, others: np.ndarray) -> np.ndarray:
        others = np.asarray(others, dtype=np.int64)
        return self._follows.contains(pair_keys(users, np.maximum(others, 0))) & (others >= 0)

    def followees(self, user: int) -> np.ndarray:
        return self._follows.row(int(user))

    def seen(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._seen.contains(pair_keys(users, items))

    def seen_items(self, user: int) -> np.ndarray:
        return self._seen.row(int(user))

    def _follow_matrix(self, n_users: int) -> sp.csr_matrix:
        """users x users follows: the main level's CSR is cached, the small delta's is rebuilt."""
        f = self._follows
        if self._follow_cache is None or self._follow_cache[0] != (f.main_version, n_users):
            self._follow_cache = ((f.main_version, n_users), _pairs_csr(f.main, (n_users, n_users)))
        base = self._follow_cache[1]
        return base + _pairs_csr(f.delta, (n_users, n_users)) if len(f.delta) else base

    def _social_matrices(self, now: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(binary, decayed) users x items matrices of clicks in ``[now - social_window, now)``."""
        key = (now, self.version)
        if self._social_cache is not None and self._social_cache[0] == key:
            return self._social_cache[1], self._social_cache[2]
        lo = now - self.social_window
        if self._recent:
            u, i, t = (np.concatenate(x) for x in zip(*self._recent))
            # forget clicks older than any window still to be asked about (no query precedes the clock)
            keep = t >= self.clock - self.social_window
            u, i, t = u[keep], i[keep], t[keep]
            self._recent = [(u, i, t)]
            keep = t >= lo
            u, i, t = u[keep], i[keep], t[keep]
        else:
            u = i = t = np.empty(0, dtype=np.int64)
        n_users = max(self._n_users, 1)
        shape = (n_users, self.catalog.n_items)
        pair = pair_keys(u, i)
        order = np.lexsort((t, pair))
        last = np.ones(len(order), dtype=bool)
        last[:-1] = pair[order][1:] != pair[order][:-1]
        sel = order[last]  # latest click of each (user, item)
        binary = sp.csr_matrix((np.ones(len(sel), np.float32), (u[sel], i[sel])), shape=shape)
        decayed = sp.csr_matrix(
            (np.exp(-self.social_rate * (now - t[sel])).astype(np.float32), (u[sel], i[sel])), shape=shape
        )
        self._social_cache = (key, binary, decayed)
        return binary, decayed

    def social_counters(self, users: np.ndarray, items: np.ndarray, now: int) -> np.ndarray:
        self._check(now)
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        out = np.zeros((len(users), 2))
        if len(users) == 0:
            return out
        uniq, row = np.unique(users, return_inverse=True)
        if len(uniq) <= _PER_USER_MAX:
            # a serving request (one user): its followees' clicks only, no users x items matrices,
            # which a moving request clock and a stream of feedback would rebuild on every request
            for r, user in enumerate(uniq.tolist()):
                at = np.flatnonzero(row == r)
                engaged, count, decayed = self._followee_clicks(user, now)
                if len(engaged):
                    pos = np.minimum(np.searchsorted(engaged, items[at]), len(engaged) - 1)
                    hit = engaged[pos] == items[at]
                    out[at[hit], 0] = count[pos[hit]]
                    out[at[hit], 1] = decayed[pos[hit]]
            return out
        binary, decayed = self._social_matrices(now)
        known = np.flatnonzero(users < binary.shape[0])  # a user the state never saw has no followees
        uniq, row = np.unique(users[known], return_inverse=True)
        fol = self._follow_matrix(binary.shape[0])[uniq]
        for col, matrix in enumerate((binary, decayed)):
            out[known, col] = _lookup((fol @ matrix).tocsr(), row, items[known])
        return out

    def followee_engaged(self, user: int, now: int) -> tuple[np.ndarray, np.ndarray]:
        self._check(now)
        engaged, _, decayed = self._followee_clicks(int(user), now)
        return engaged, decayed

    def _followee_clicks(self, user: int, now: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posts ``user``'s followees clicked in ``[now - social_window, now]`` (sorted), how many
        distinct followees clicked each, and the sum over them of ``2^-(now - latest click) / half-life``:
        the users x items matrices' numbers for one user (float64 instead of float32)."""
        followees = self._follows.row(int(user))
        u, i, t = self._by_user.of(followees)
        keep = t >= now - self.social_window
        u, i, t = u[keep], i[keep], t[keep]
        if len(u) == 0:
            return np.empty(0, np.int64), np.empty(0), np.empty(0)
        pair = pair_keys(u, i)
        order = np.lexsort((t, pair))
        last = np.ones(len(order), dtype=bool)
        last[:-1] = pair[order][1:] != pair[order][:-1]
        sel = order[last]  # latest click of each (followee, item)
        engaged, inverse = np.unique(i[sel], return_inverse=True)
        count = np.bincount(inverse, minlength=len(engaged)).astype(np.float64)
        decayed = np.bincount(inverse, weights=np.exp(-self.social_rate * (now - t[sel])), minlength=len(engaged))
        return engaged, count, decayed


#: Distinct users up to which :meth:`FeatureState.social_counters` reads each one's followees' clicks
#: instead of building the users x items matrices (training's replay asks for thousands at once).
_PER_USER_MAX = 8


class _ClicksByUser:
    """Clicks ``(user, item, ts)`` indexed by user: a CSR main level plus a small unsorted delta of
    recent batches, merged when it outgrows a sixteenth of the main (clicks older than every window
    still to be asked about are dropped then)."""

    def __init__(self) -> None:
        self.indptr = np.zeros(1, dtype=np.int64)
        self.item = np.empty(0, dtype=np.int64)
        self.ts = np.empty(0, dtype=np.int64)
        self.delta: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.n_delta = 0

    def add(self, users: np.ndarray, items: np.ndarray, ts: np.ndarray, keep_from: int) -> None:
        self.delta.append((users.astype(np.int64), items.astype(np.int64), ts.astype(np.int64)))
        self.n_delta += len(users)
        if self.n_delta > max(4096, len(self.item) // 16):
            self._merge(keep_from)
        elif len(self.delta) > 8:  # one request's clicks at a time: keep the delta one array, not thousands
            self.delta = [tuple(np.concatenate(part) for part in zip(*self.delta))]

    def _merge(self, keep_from: int) -> None:
        u_main = np.repeat(np.arange(len(self.indptr) - 1, dtype=np.int64), np.diff(self.indptr))
        u, i, t = (np.concatenate([main, *parts]) for main, *parts in
                   zip((u_main, self.item, self.ts), *self.delta))  # fmt: skip
        keep = t >= keep_from
        u, i, t = u[keep], i[keep], t[keep]
        order = np.argsort(u, kind="stable")
        u, self.item, self.ts = u[order], i[order], t[order]
        n = int(u.max()) + 1 if len(u) else 0
        self.indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n), out=self.indptr[1:])
        self.delta, self.n_delta = [], 0

    def of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every stored click of ``users`` (any order)."""
        users = np.asarray(users, dtype=np.int64)
        inside = users[users < len(self.indptr) - 1]
        lo, hi = self.indptr[inside], self.indptr[inside + 1]
        counts = hi - lo
        idx = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())
        parts_u, parts_i, parts_t = [np.repeat(inside, counts)], [self.item[idx]], [self.ts[idx]]
        for du, di, dt in self.delta:
            m = np.isin(du, users)
            parts_u.append(du[m])
            parts_i.append(di[m])
            parts_t.append(dt[m])
        return np.concatenate(parts_u), np.concatenate(parts_i), np.concatenate(parts_t)


def _pairs_csr(keys: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    a, b = keys >> _SHIFT, keys & np.int64(0xFFFFFFFF)
    return sp.csr_matrix((np.ones(len(keys), np.float32), (a, b)), shape=shape)


def _lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows[j], cols[j]]`` vectorised (0 where absent)."""
    matrix.sum_duplicates()
    matrix.sort_indices()
    n_cols = np.int64(matrix.shape[1])
    keys = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr)) * n_cols
    keys += matrix.indices
    query = np.asarray(rows, dtype=np.int64) * n_cols + np.asarray(cols, dtype=np.int64)
    if len(keys) == 0:
        return np.zeros(len(query))
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, matrix.data[at], 0.0).astype(np.float64)
