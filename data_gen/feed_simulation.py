"""Day-by-day feed simulation: sessions, a logging feed policy, and engagement from the true model.

For each simulated day and each fixed block of users (one random stream per (day, block)):

1. Every user who has signed up (at least an hour before; late joiners follow people first) opens
   ``Poisson(activity_u)`` sessions at uniform times of the day.
2. Each session shows ``feed_length`` slots. The logging policy fills each slot from one source:
   ``following`` (a recent post by a random followee), ``social`` (a post a followee clicked within
   the social window), ``interest`` (a recent post on a topic drawn from the user's interests,
   weighted by appeal), ``trending`` (recent posts weighted by ``exp(quality) * (1 + clicks)^gamma``:
   rich get richer, the source of the long tail) or ``explore`` (any recent post). A source with
   nothing to offer falls back to trending. Own posts and repeats within a session are dropped; the
   remaining slots are numbered 0, 1, ... (the feed position).
3. Each impression is clicked with the true probability (``data_gen.behavior``), computed with the
   popularity and social state at the start of the day; a click may be followed by a like and a share.
   Rows are impression (ts), click (later ts), like / share (after the dwell time).
4. At the end of the day the click counts per post and the window of followees' clicks are updated.

Only posts created before the day starts are served, so no interaction precedes its post; sessions
end two hours before midnight, so a day's events never spill into the next day.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from tqdm import tqdm

from data_gen import behavior
from data_gen.follow_graph import FollowGraph
from data_gen.generator_config import DataGenConfig
from data_gen.io import ShardedParquetWriter, make_table, strings_from_codes
from data_gen.population import ITEM_ID_OFFSET, USER_ID_OFFSET, Population
from data_gen.posts import Posts
from data_gen.streams import stream
from feedrec_common.parquet_tables import EVENT_KINDS, INTERACTIONS

DAY = behavior.DAY_SECONDS
IMPRESSION, CLICK, LIKE, SHARE = (EVENT_KINDS.index(k) for k in ("impression", "click", "like", "share"))
SOURCES = ("following", "social", "interest", "trending", "explore")
#: Mean click-through dwell time by media type (text, image, video), milliseconds.
CLICK_DWELL_MS = np.array([15_000.0, 10_000.0, 40_000.0])


@dataclass
class SimulationResult:
    """What the simulation leaves for the manifest, realism statistics and the dataset card."""

    event_counts: dict[str, int]
    item_clicks: np.ndarray  # int64 [n_items]
    engagement_ts: np.ndarray  # int64, every click/like/share event
    engagement_user: np.ndarray  # int32
    daily_impressions: list[int] = field(default_factory=list)
    daily_engagements: list[int] = field(default_factory=list)
    daily_active_users: list[int] = field(default_factory=list)


class _DayCandidates:
    """Posts servable on one day (created within the candidate window), indexed per source."""

    def __init__(self, lo: int, hi: int, posts: Posts, item_clicks: np.ndarray, cfg: DataGenConfig) -> None:
        self.lo, self.n = lo, hi - lo
        idx = np.arange(lo, hi)
        appeal = np.exp(posts.quality[idx].astype(np.float64))
        self.trend_cum = np.cumsum(appeal * (1.0 + item_clicks[idx]) ** cfg.simulation.trending_exponent)
        order = np.argsort(posts.topic[idx], kind="stable")
        self.topic_items = idx[order]
        topics_sorted = posts.topic[self.topic_items]
        all_topics = np.arange(cfg.items.n_topics)
        self.topic_first = np.searchsorted(topics_sorted, all_topics, side="left")
        self.topic_last = np.searchsorted(topics_sorted, all_topics, side="right")
        self.topic_cum0 = np.concatenate([[0.0], np.cumsum(appeal[order])])
        order = np.argsort(posts.creator[idx], kind="stable")
        self.creator_items = idx[order]
        self.creators_sorted = posts.creator[self.creator_items]

    def trending(self, u: np.ndarray) -> np.ndarray:
        j = np.searchsorted(self.trend_cum, u * self.trend_cum[-1], side="right")
        return self.lo + np.minimum(j, self.n - 1)

    def explore(self, u: np.ndarray) -> np.ndarray:
        return self.lo + np.minimum((u * self.n).astype(np.int64), self.n - 1)

    def by_topic(self, topics: np.ndarray, u: np.ndarray) -> np.ndarray:
        f, last = self.topic_first[topics], self.topic_last[topics]
        c0, c1 = self.topic_cum0[f], self.topic_cum0[last]
        j = np.searchsorted(self.topic_cum0, c0 + u * (c1 - c0), side="right") - 1
        j = np.clip(j, f, np.maximum(last - 1, f))
        return np.where(last > f, self.topic_items[np.minimum(j, len(self.topic_items) - 1)], -1)

    def by_creator(self, creators: np.ndarray, u: np.ndarray) -> np.ndarray:
        f = np.searchsorted(self.creators_sorted, creators, side="left")
        last = np.searchsorted(self.creators_sorted, creators, side="right")
        j = f + (u * (last - f)).astype(np.int64)
        return np.where(last > f, self.creator_items[np.minimum(j, len(self.creator_items) - 1)], -1)


class FeedSimulator:
    """Runs the day loop (see the module docstring) and streams rows into a parquet writer."""

    def __init__(self, cfg: DataGenConfig, pop: Population, graph: FollowGraph, posts: Posts) -> None:
        self.cfg, self.pop, self.graph, self.posts = cfg, pop, graph, posts
        self.n_users, self.n_items = pop.n_users, posts.n_items
        ones = np.ones(len(graph.followee), dtype=np.float32)
        self.follow_matrix = sp.csr_matrix(
            (ones, graph.followee, graph.indptr), shape=(self.n_users, self.n_users)
        )
        mix = cfg.simulation.sources
        self.source_cum = np.cumsum([getattr(mix, s) for s in SOURCES])

    def run(self, writer: ShardedParquetWriter | None, progress: bool = True) -> SimulationResult:
        cfg, posts = self.cfg, self.posts
        sim = cfg.simulation
        item_clicks = np.zeros(self.n_items, dtype=np.int64)
        recent_clicks: deque[np.ndarray] = deque(maxlen=sim.social_window_days)
        counts = dict.fromkeys(EVENT_KINDS, 0)
        eng_ts: list[np.ndarray] = []
        eng_user: list[np.ndarray] = []
        result = SimulationResult(counts, item_clicks, np.empty(0, np.int64), np.empty(0, np.int32))
        block = sim.user_block_size
        n_blocks = -(-self.n_users // block)
        for day in tqdm(range(sim.n_days), desc=f"simulate {cfg.name}", unit="day", disable=not progress):
            day_start = cfg.start_ts + day * DAY
            lo, hi = np.searchsorted(
                posts.created_ts, [day_start - sim.candidate_window_days * DAY, day_start], side="left"
            )
            social = self._social_matrix(recent_clicks)
            parts = []
            if hi > lo:
                candidates = _DayCandidates(int(lo), int(hi), posts, item_clicks, cfg)
                for b in range(n_blocks):
                    rng = stream(cfg.seed, "simulation", day, b)
                    users = np.arange(b * block, min((b + 1) * block, self.n_users))
                    part = self._simulate_block(rng, users, day_start, candidates, social, item_clicks)
                    if part is not None:
                        parts.append(part)
            rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else None
            n_imp = n_eng = n_active = 0
            if rows is not None:
                order = np.lexsort((rows["event"], rows["item"], rows["user"], rows["ts"]))
                rows = {k: v[order] for k, v in rows.items()}
                if writer is not None:
                    writer.write(self._to_table(rows))
                ev = rows["event"]
                for code, kind in enumerate(EVENT_KINDS):
                    counts[kind] += int((ev == code).sum())
                is_click = ev == CLICK
                click_u, click_i = rows["user"][is_click], rows["item"][is_click]
                item_clicks += np.bincount(click_i, minlength=self.n_items)
                recent_clicks.append(np.unique(click_u.astype(np.int64) * self.n_items + click_i))
                engaged = ev != IMPRESSION
                eng_ts.append(rows["ts"][engaged])
                eng_user.append(rows["user"][engaged])
                n_imp, n_eng = int((~engaged).sum()), int(engaged.sum())
                n_active = len(np.unique(rows["user"]))
            else:
                recent_clicks.append(np.empty(0, dtype=np.int64))
            result.daily_impressions.append(n_imp)
            result.daily_engagements.append(n_eng)
            result.daily_active_users.append(n_active)
        result.engagement_ts = np.concatenate(eng_ts) if eng_ts else np.empty(0, np.int64)
        result.engagement_user = np.concatenate(eng_user) if eng_user else np.empty(0, np.int32)
        return result

    def _social_matrix(self, recent_clicks: deque[np.ndarray]) -> sp.csr_matrix:
        """Binary users x posts matrix of (user clicked post) within the social window."""
        keys = np.unique(np.concatenate(list(recent_clicks))) if recent_clicks else np.empty(0, np.int64)
        users, items = keys // self.n_items, keys % self.n_items
        indptr = np.searchsorted(users, np.arange(self.n_users + 1), side="left")
        data = np.ones(len(keys), dtype=np.float32)
        return sp.csr_matrix((data, items.astype(np.int32), indptr), shape=(self.n_users, self.n_items))

    def _simulate_block(
        self,
        rng: np.random.Generator,
        users: np.ndarray,
        day_start: int,
        cand: _DayCandidates,
        social_window: sp.csr_matrix,
        item_clicks: np.ndarray,
    ) -> dict[str, np.ndarray] | None:
        cfg, pop, posts, graph = self.cfg, self.pop, self.posts, self.graph
        params = cfg.behavior
        n_items, length = self.n_items, cfg.simulation.feed_length

        # 1. Sessions.
        active_from = np.maximum(pop.signup_ts[users] + 3600, day_start)
        latest = day_start + DAY - 2 * 3600
        n_sess = rng.poisson(pop.activity[users].astype(np.float64))
        n_sess[active_from >= latest] = 0
        sess_user = np.repeat(users, n_sess)
        n_s = len(sess_user)
        if n_s == 0:
            return None
        t0 = active_from[sess_user - users[0]]
        sess_start = t0 + (rng.random(n_s) * (latest - t0)).astype(np.int64)
        uniq_users, sess_row = np.unique(sess_user, return_inverse=True)
        counts = (self.follow_matrix[uniq_users] @ social_window).tocsr()
        counts.sum_duplicates()
        counts.sort_indices()

        # 2. Feed slots from the logging policy.
        slot_sess = np.repeat(np.arange(n_s), length)
        u = sess_user[slot_sess]
        source = np.searchsorted(self.source_cum, rng.random(len(u)) * self.source_cum[-1], side="right")
        r1, r2 = rng.random(len(u)), rng.random(len(u))
        item = np.full(len(u), -1, dtype=np.int64)
        m = np.flatnonzero(source == 0)  # following: recent post by a random followee
        deg = graph.indptr[u[m] + 1] - graph.indptr[u[m]]
        has = deg > 0
        followee = graph.followee[graph.indptr[u[m][has]] + (r1[m][has] * deg[has]).astype(np.int64)]
        item[m[has]] = cand.by_creator(followee, r2[m][has])
        m = np.flatnonzero(source == 1)  # social: a post a followee clicked recently
        row = sess_row[slot_sess[m]]
        nnz = counts.indptr[row + 1] - counts.indptr[row]
        has = nnz > 0
        item[m[has]] = counts.indices[counts.indptr[row[has]] + (r1[m][has] * nnz[has]).astype(np.int64)]
        m = np.flatnonzero(source == 2)  # interest: topic from the user's interests
        k = (r1[m][:, None] > pop.interest_cum[u[m]]).sum(axis=1)
        topics = pop.interest_topics[u[m], np.minimum(k, pop.interest_topics.shape[1] - 1)]
        item[m] = cand.by_topic(topics.astype(np.int64), r2[m])
        m = np.flatnonzero(source == 4)  # explore
        item[m] = cand.explore(r1[m])
        m = np.flatnonzero(item < 0)  # trending, and the fallback of empty sources
        item[m] = cand.trending(r2[m])
        keep = np.flatnonzero(posts.creator[item] != u)
        _, first = np.unique(slot_sess[keep] * n_items + item[keep], return_index=True)
        keep = keep[np.sort(first)]
        s, u, item = slot_sess[keep], u[keep], item[keep]
        position = np.arange(len(keep)) - np.searchsorted(s, s, side="left")

        # 3. Engagement from the true model.
        n = len(keep)
        imp_ts = sess_start[s] + 4 * position + rng.integers(0, 4, size=n)
        affinity = np.einsum("ij,ij->i", pop.factors[u], posts.factors[item]).astype(np.float64)
        social = behavior.sparse_lookup(counts, sess_row[s], item)
        logit = behavior.click_logit(
            affinity,
            posts.quality[item],
            posts.media[item],
            item_clicks[item],
            social,
            imp_ts - posts.created_ts[item],
            params,
        )
        p_click = behavior.click_probability(logit, position, params)
        clicked = rng.random(n) < p_click
        c = np.flatnonzero(clicked)
        liked = rng.random(len(c)) < behavior.like_probability(affinity[c], params)
        shared = rng.random(len(c)) < behavior.share_probability(affinity[c], social[c], params)

        imp_dwell = np.clip(rng.lognormal(np.log(1200.0), 0.5, size=n), 100, 60_000)
        click_dwell = CLICK_DWELL_MS[posts.media[item[c]]] * np.exp(
            0.5 * affinity[c] + rng.normal(0.0, 0.7, size=len(c))
        )
        click_dwell = np.clip(click_dwell, 500, 600_000)
        click_ts = imp_ts[c] + 1 + rng.integers(0, 8, size=len(c))
        read_s = (click_dwell // 1000).astype(np.int64)
        lk, sh = np.flatnonzero(liked), np.flatnonzero(shared)
        events = (
            (np.arange(n), imp_ts, IMPRESSION, imp_dwell),
            (c, click_ts, CLICK, click_dwell),
            (c[lk], click_ts[lk] + 1 + read_s[lk], LIKE, np.zeros(len(lk))),
            (c[sh], click_ts[sh] + 2 + read_s[sh], SHARE, np.zeros(len(sh))),
        )
        return {
            "user": np.concatenate([u[i] for i, *_ in events]).astype(np.int32),
            "item": np.concatenate([item[i] for i, *_ in events]).astype(np.int32),
            "ts": np.concatenate([t for _, t, *_ in events]).astype(np.int64),
            "event": np.concatenate([np.full(len(i), e, np.int8) for i, _, e, _ in events]),
            "position": np.concatenate([position[i] for i, *_ in events]).astype(np.int16),
            "dwell": np.concatenate([d for *_, d in events]).astype(np.int32),
        }

    @staticmethod
    def _to_table(rows: dict[str, np.ndarray]) -> pa.Table:
        return make_table(
            INTERACTIONS,
            {
                "user_id": rows["user"].astype(np.int64) + USER_ID_OFFSET,
                "item_id": rows["item"].astype(np.int64) + ITEM_ID_OFFSET,
                "ts": rows["ts"],
                "event": strings_from_codes(rows["event"], EVENT_KINDS),
                "position": rows["position"],
                "dwell_ms": rows["dwell"],
            },
        )
