"""Point-in-time training examples: replay the logged events through the feature state.

Time is cut into steps of ``step`` seconds (default one hour). For the step ``[a, b)``:

1. every logged impression in ``[a, b)`` gets its features from the state *as of* ``a``
   (:func:`recsys.feed.features.build_features` with ``now = a``), which has been fed only events
   before ``a``, so no feature can see the impression's own outcome or anything after it;
2. then the step's events (and follows) are fed to the state.

The label of an impression is whether the same user clicked the same post from the same feed slot
within :data:`CLICK_MATCH_SECONDS` after it (data_gen logs a click a few seconds after its impression).
Serving calls the same :func:`build_features` on a state fed the same events, so a request at ``a``
sees exactly these features (``tests/recsys/feed/test_replay.py`` checks both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from recsys.feed.data import CLICK, IMPRESSION, EventLog, FeedData, FollowLog
from recsys.feed.embeddings import FeedEmbeddings
from recsys.feed.features import build_features
from recsys.feed.state import FeatureState

HOUR = 3_600
CLICK_MATCH_SECONDS = 60


@dataclass
class Impressions:
    """Logged impressions with point-in-time features and their click label (aligned arrays)."""

    features: np.ndarray  # float32 [n, N_FEATURES]
    clicked: np.ndarray  # bool [n]
    user: np.ndarray  # int64
    item: np.ndarray  # int64
    ts: np.ndarray  # int64
    position: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ts)

    def select(self, mask: np.ndarray) -> Impressions:
        return Impressions(*(getattr(self, f)[mask] for f in ("features", "clicked", "user", "item", "ts", "position")))


def click_labels(events: EventLog) -> np.ndarray:
    """bool per event: for an impression, was it clicked (same user, post and slot, within a minute)."""
    imp = np.flatnonzero(events.kind == IMPRESSION)
    clk = np.flatnonzero(events.kind == CLICK)
    out = np.zeros(len(events), dtype=bool)
    if len(imp) == 0 or len(clk) == 0:
        return out

    def key(idx: np.ndarray) -> np.ndarray:
        # (user, item, position) in one int64: items < 2^31, positions < 2^10, users < 2^22 here;
        # a collision could only add a label, and the time window makes that practically impossible
        return (
            (events.user[idx].astype(np.int64) << np.int64(41))
            ^ (events.item[idx].astype(np.int64) << np.int64(10))
            ^ events.position[idx].astype(np.int64)
        )

    ck, ct = key(clk), events.ts[clk]
    order = np.lexsort((ct, ck))
    ck, ct = ck[order], ct[order]
    ik, it = key(imp), events.ts[imp]
    # first click of the same key at or after the impression
    lo = np.searchsorted(ck, ik, side="left")
    hi = np.searchsorted(ck, ik, side="right")
    # within [lo, hi) the clicks are sorted by time: find the first at >= it
    found = np.zeros(len(imp), dtype=bool)
    one = np.flatnonzero(hi - lo == 1)  # the common case: one click with this key, compare directly
    gap = ct[lo[one]] - it[one]
    found[one] = (gap >= 0) & (gap <= CLICK_MATCH_SECONDS)
    for j in np.flatnonzero(hi - lo > 1):  # keys repeat rarely (same post and slot, another session)
        t = ct[lo[j] : hi[j]]
        k = np.searchsorted(t, it[j], side="left")
        found[j] = k < len(t) and t[k] - it[j] <= CLICK_MATCH_SECONDS
    out[imp] = found
    return out


def replay_impressions(
    data: FeedData,
    embeddings: FeedEmbeddings,
    start_ts: int,
    end_ts: int,
    step: int = HOUR,
    progress: bool = False,
) -> tuple[Impressions, FeatureState]:
    """Features and labels of the impressions logged in ``[start_ts, end_ts)``, point-in-time.

    Returns:
        (Impressions, FeatureState): the examples, and the state fed every event before ``end_ts``.
    """
    if end_ts <= start_ts or step <= 0:
        raise ValueError(f"need start_ts < end_ts and step > 0, got {start_ts}, {end_ts}, {step}")
    events, follows = data.events, data.follows
    labels = click_labels(events)
    state = FeatureState(data.catalog)
    first = int(np.searchsorted(events.ts, start_ts, side="left"))
    f_first = int(np.searchsorted(follows.ts, start_ts, side="left"))
    state.observe(events.select(slice(0, first)))
    state.observe_follows(_follows(follows, 0, f_first))
    parts: list[Impressions] = []
    steps = range(start_ts, end_ts, step)
    for a in tqdm(steps, desc="replay", unit="step", disable=not progress):
        b = min(a + step, end_ts)
        last = int(np.searchsorted(events.ts, b, side="left"))
        block = np.arange(first, last)
        imp = block[events.kind[block] == IMPRESSION]
        if len(imp):
            feats = build_features(
                state, data.catalog, embeddings, events.user[imp], events.item[imp], a, events.position[imp]
            )
            parts.append(
                Impressions(
                    feats, labels[imp], events.user[imp].astype(np.int64), events.item[imp].astype(np.int64),
                    events.ts[imp], events.position[imp].astype(np.int64),
                )  # fmt: skip
            )
        state.observe(events.select(block))
        f_last = int(np.searchsorted(follows.ts, b, side="left"))
        state.observe_follows(_follows(follows, f_first, f_last))
        first, f_first = last, f_last
    if not parts:
        raise ValueError(f"no impressions logged in [{start_ts}, {end_ts})")
    fields = ("features", "clicked", "user", "item", "ts", "position")
    return Impressions(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields)), state


def _follows(follows: FollowLog, lo: int, hi: int) -> FollowLog:
    return FollowLog(follows.follower[lo:hi], follows.followee[lo:hi], follows.ts[lo:hi])
