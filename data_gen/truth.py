"""Ground truth of a dataset (``DIR/truth/``) and :class:`ClickModel`, the true behaviour model.

Only the A/B traffic simulator and the oracle metric may use this; models must not read ``truth/``.

Files in ``truth/`` (numpy ``.npy``, loaded with ``allow_pickle=False``; row i = user/post index i,
i.e. ``user_id - user_id_offset`` / ``item_id - item_id_offset``)::

    params.json                   behaviour coefficients (BehaviorConfig), time range, id offsets
    user_factors.npy              float32 [n_users, d]   latent taste p_u
    item_factors.npy              float32 [n_items, d]   latent post factors q_i
    item_quality.npy              float32 [n_items]      intrinsic appeal
    user_primary_community.npy    int32   [n_users]
    user_secondary_community.npy  int32   [n_users]      -1: none
    user_primary_weight.npy       float32 [n_users]      membership weight of the primary community
    community_centers.npy         float32 [K, d]
    topic_vectors.npy             float32 [T, d]
    topic_community.npy           int32   [T]            community each topic is anchored on
    user_interest_topics.npy      int16   [n_users, M]   the user's top-M topics
    user_interest_probs.npy       float32 [n_users, M]   and their probabilities

Example::

    model = ClickModel.load("data/small")
    p = model.click_probability(user_ids, item_ids, positions)       # P(click) per served slot
    best = model.oracle_topk(user_ids, k=20, exclude=seen_items)     # [n_users, 20] item ids
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import scipy.sparse as sp

from data_gen import behavior
from data_gen.generator_config import BehaviorConfig, DataGenConfig
from data_gen.population import ITEM_ID_OFFSET, USER_ID_OFFSET, Population
from data_gen.posts import MEDIA_TYPES, Posts
from feedrec_common.parquet_tables import read_table, table_path

TRUTH_FORMAT = 1


def write_truth(root: Path, cfg: DataGenConfig, pop: Population, posts: Posts) -> None:
    """Write the ``truth/`` directory (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=False)
    interest_probs = np.diff(pop.interest_cum, axis=1, prepend=0.0).astype(np.float32)
    arrays = {
        "user_factors": pop.factors,
        "item_factors": posts.factors,
        "item_quality": posts.quality,
        "user_primary_community": pop.primary,
        "user_secondary_community": pop.secondary,
        "user_primary_weight": pop.primary_weight,
        "community_centers": pop.community_centers,
        "topic_vectors": pop.topic_vectors,
        "topic_community": pop.topic_community,
        "user_interest_topics": pop.interest_topics,
        "user_interest_probs": interest_probs,
    }
    for name, array in arrays.items():
        np.save(root / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
    params = {
        "format": TRUTH_FORMAT,
        "behavior": cfg.behavior.model_dump(mode="json"),
        "start_ts": cfg.start_ts,
        "end_ts": cfg.end_ts,
        "n_days": cfg.simulation.n_days,
        "social_window_days": cfg.simulation.social_window_days,
        "user_id_offset": USER_ID_OFFSET,
        "item_id_offset": ITEM_ID_OFFSET,
        "n_users": pop.n_users,
        "n_items": posts.n_items,
        "latent_dim": cfg.users.latent_dim,
        "media_types": list(MEDIA_TYPES),
        "model": (behavior.__doc__ or "").strip(),
    }
    (root / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


class ClickModel:
    """The true engagement model of a dataset, vectorised over (user, post, position) triples.

    Popularity (clicks on the post) and social influence (distinct followees who clicked the post in
    the last ``social_window_days``) are counted from the dataset's click events, plus any clicks added
    with :meth:`record_clicks`, before the start of the day of ``now`` (as during generation).

    Args:
        data_dir (Path): Dataset directory (used by :meth:`load`; kept for messages).
    """

    def __init__(
        self,
        data_dir: Path,
        params: dict[str, Any],
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        user_factors: np.ndarray,
        item_factors: np.ndarray,
        item_quality: np.ndarray,
        item_media: np.ndarray,
        item_created_ts: np.ndarray,
        follow_matrix: sp.csr_matrix,
        click_user: np.ndarray,
        click_item: np.ndarray,
        click_ts: np.ndarray,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.params = params
        self.behavior = BehaviorConfig.model_validate(params["behavior"])
        self.start_ts, self.end_ts = int(params["start_ts"]), int(params["end_ts"])
        self.social_window = int(params["social_window_days"]) * behavior.DAY_SECONDS
        self.user_ids, self.item_ids = user_ids, item_ids
        self._user_order = np.argsort(user_ids, kind="stable")
        self._item_order = np.argsort(item_ids, kind="stable")
        self.user_factors, self.item_factors = user_factors, item_factors
        self.item_quality = item_quality.astype(np.float64)
        self.item_media, self.item_created_ts = item_media, item_created_ts
        self.follow_matrix = follow_matrix
        self._clicks = (click_user, click_item, click_ts)
        self._state_cache: tuple[int, np.ndarray, sp.csr_matrix] | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def load(cls, data_dir: str | Path) -> ClickModel:
        """Load ``truth/`` plus the users, items, follows and click events of a dataset directory."""
        data_dir = Path(data_dir)
        truth = data_dir / "truth"
        params = json.loads((truth / "params.json").read_text())
        if params.get("format") != TRUTH_FORMAT:
            raise ValueError(f"{truth / 'params.json'}: unsupported truth format {params.get('format')}")

        def arr(name: str) -> np.ndarray:
            return np.load(truth / f"{name}.npy", allow_pickle=False)

        users = read_table(data_dir, "users", ["user_id"])
        items = read_table(data_dir, "items", ["item_id", "created_ts", "media_type"])
        user_ids = users["user_id"].to_numpy()
        item_ids = items["item_id"].to_numpy()
        media = np.asarray(pc.index_in(items["media_type"], value_set=pa.array(list(MEDIA_TYPES)))).astype(
            np.int8
        )
        follows = read_table(data_dir, "follows", ["follower_id", "followee_id"])
        user_order, item_order = np.argsort(user_ids, kind="stable"), np.argsort(item_ids, kind="stable")
        src = _index(user_ids, user_order, follows["follower_id"].to_numpy(), "user")
        dst = _index(user_ids, user_order, follows["followee_id"].to_numpy(), "user")
        n = len(user_ids)
        follow_matrix = sp.csr_matrix((np.ones(len(src), np.float32), (src, dst)), shape=(n, n))
        follow_matrix.sum_duplicates()
        follow_matrix.data[:] = 1.0

        dataset = ds.dataset(table_path(data_dir, "interactions"), format="parquet")
        clicks = dataset.to_table(columns=["user_id", "item_id", "ts"], filter=ds.field("event") == "click")
        return cls(
            data_dir,
            params,
            user_ids,
            item_ids,
            arr("user_factors"),
            arr("item_factors"),
            arr("item_quality"),
            media,
            items["created_ts"].to_numpy(),
            follow_matrix,
            _index(user_ids, user_order, clicks["user_id"].to_numpy(), "user").astype(np.int32),
            _index(item_ids, item_order, clicks["item_id"].to_numpy(), "item").astype(np.int32),
            clicks["ts"].to_numpy(),
        )

    # -- ids -------------------------------------------------------------------------------------
    def user_index(self, user_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Dense indices of external user ids (KeyError naming unknown ids)."""
        return _index(self.user_ids, self._user_order, user_ids, "user")

    def item_index(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Dense indices of external item ids (KeyError naming unknown ids)."""
        return _index(self.item_ids, self._item_order, item_ids, "item")

    # -- state -----------------------------------------------------------------------------------
    def record_clicks(self, user_ids: np.ndarray, item_ids: np.ndarray, ts: np.ndarray) -> None:
        """Add clicks (e.g. from an A/B simulation) to the popularity and social state."""
        u, i = self.user_index(user_ids).astype(np.int32), self.item_index(item_ids).astype(np.int32)
        ts = np.broadcast_to(np.asarray(ts, dtype=np.int64), u.shape)
        cu, ci, ct = self._clicks
        self._clicks = (np.concatenate([cu, u]), np.concatenate([ci, i]), np.concatenate([ct, ts]))
        self._state_cache = None

    def _state(self, now: int) -> tuple[np.ndarray, sp.csr_matrix]:
        """(clicks per post before the day of ``now``, binary users x posts clicks in the social window)."""
        start = behavior.day_start(now, self.start_ts)
        if self._state_cache is not None and self._state_cache[0] == start:
            return self._state_cache[1], self._state_cache[2]
        cu, ci, ct = self._clicks
        before = ct < start
        clicks_before = np.bincount(ci[before], minlength=self.n_items).astype(np.int64)
        window = before & (ct >= start - self.social_window)
        recent = sp.csr_matrix(
            (np.ones(int(window.sum()), np.float32), (cu[window], ci[window])),
            shape=(self.n_users, self.n_items),
        )
        recent.sum_duplicates()
        recent.data[:] = 1.0
        self._state_cache = (start, clicks_before, recent)
        return clicks_before, recent

    def _social(self, u: np.ndarray, i: np.ndarray, recent: sp.csr_matrix) -> np.ndarray:
        uniq, row = np.unique(u, return_inverse=True)
        counts = (self.follow_matrix[uniq] @ recent).tocsr()
        counts.sum_duplicates()
        counts.sort_indices()
        return behavior.sparse_lookup(counts, row, i)

    # -- probabilities ---------------------------------------------------------------------------
    def click_logit(
        self, user_ids: np.ndarray, item_ids: np.ndarray, now: int | np.ndarray | None = None
    ) -> np.ndarray:
        """Logit of an examined slot (position 0) for each (user, item) pair at time ``now``.

        ``now`` is a scalar or one time per pair; the popularity and social state is evaluated once per
        distinct day (a loop over days, not pairs).
        """
        u, i = self.user_index(user_ids), self.item_index(item_ids)
        now_arr = np.broadcast_to(np.asarray(self.end_ts if now is None else now, dtype=np.int64), u.shape)
        affinity = np.einsum("ij,ij->i", self.user_factors[u], self.item_factors[i]).astype(np.float64)
        clicks = np.zeros(len(u), dtype=np.int64)
        social = np.zeros(len(u), dtype=np.float64)
        day_of = (
            self.start_ts
            + np.maximum((now_arr - self.start_ts) // behavior.DAY_SECONDS, 0) * behavior.DAY_SECONDS
        )
        for d in np.unique(day_of):
            rows = np.flatnonzero(day_of == d)
            clicks_before, recent = self._state(int(d))
            clicks[rows] = clicks_before[i[rows]]
            social[rows] = self._social(u[rows], i[rows], recent)
        return behavior.click_logit(
            affinity,
            self.item_quality[i],
            self.item_media[i],
            clicks,
            social,
            now_arr - self.item_created_ts[i],
            self.behavior,
        )

    def click_probability(
        self,
        user_ids: Sequence[int] | np.ndarray,
        item_ids: Sequence[int] | np.ndarray,
        positions: Sequence[int] | np.ndarray | int,
        now: int | np.ndarray | None = None,
    ) -> np.ndarray:
        """True ``P(click)`` of each (user, item) shown at 0-based feed position, at time ``now``.

        Args:
            user_ids (array of int): External user ids, shape ``[n]``.
            item_ids (array of int): External item ids, shape ``[n]``.
            positions (array of int or int): 0-based feed positions (broadcast to ``[n]``).
            now (int or array of int, optional): Unix seconds, one or one per pair; defaults to the
                end of the generated period.

        Returns:
            np.ndarray: float64 ``[n]``.
        """
        user_ids, item_ids = np.asarray(user_ids), np.asarray(item_ids)
        if user_ids.shape != item_ids.shape:
            raise ValueError(f"user_ids {user_ids.shape} and item_ids {item_ids.shape} differ in shape")
        positions = np.broadcast_to(np.asarray(positions), user_ids.shape)
        if (positions < 0).any():
            raise ValueError("positions must be >= 0")
        logit = self.click_logit(user_ids, item_ids, now)
        return behavior.click_probability(logit, positions, self.behavior)

    def like_probability(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """True ``P(like | click)`` per pair."""
        u, i = self.user_index(user_ids), self.item_index(item_ids)
        affinity = np.einsum("ij,ij->i", self.user_factors[u], self.item_factors[i]).astype(np.float64)
        return behavior.like_probability(affinity, self.behavior)

    def share_probability(
        self, user_ids: np.ndarray, item_ids: np.ndarray, now: int | None = None
    ) -> np.ndarray:
        """True ``P(share | click)`` per pair at time ``now``."""
        now = self.end_ts if now is None else int(now)
        u, i = self.user_index(user_ids), self.item_index(item_ids)
        _, recent = self._state(now)
        affinity = np.einsum("ij,ij->i", self.user_factors[u], self.item_factors[i]).astype(np.float64)
        return behavior.share_probability(affinity, self._social(u, i, recent), self.behavior)

    # -- oracle ----------------------------------------------------------------------------------
    def oracle_topk(
        self,
        user_ids: Sequence[int] | np.ndarray,
        k: int,
        exclude: Sequence[Sequence[int]] | None = None,
        now: int | None = None,
    ) -> np.ndarray:
        """The ``k`` posts with the highest true click probability at position 0, per user.

        Args:
            user_ids (array of int): External user ids, shape ``[n]``.
            k (int): Number of posts per user.
            exclude (sequence of sequences of int, optional): Per user, item ids to leave out
                (e.g. already seen). Posts created after ``now`` are always left out.
            now (int, optional): Unix seconds; defaults to the end of the generated period.

        Returns:
            np.ndarray: int64 ``[n, k]`` external item ids, best first; ``-1`` pads when fewer than
            ``k`` posts are eligible.
        """
        now = self.end_ts if now is None else int(now)
        u_all = self.user_index(np.asarray(user_ids))
        if exclude is not None and len(exclude) != len(u_all):
            raise ValueError(f"exclude has {len(exclude)} entries for {len(u_all)} users")
        clicks_before, recent = self._state(now)
        p = self.behavior
        media_bias = np.asarray(p.media_bias)[self.item_media]
        static = (
            p.quality_weight * self.item_quality
            + media_bias
            + p.popularity_weight * np.log1p(clicks_before)
            - p.freshness_per_day * np.maximum(now - self.item_created_ts, 0) / behavior.DAY_SECONDS
        )
        static[self.item_created_ts > now] = -np.inf
        out = np.full((len(u_all), k), -1, dtype=np.int64)
        batch = max(1, (1 << 25) // max(self.n_items, 1))  # ~256 MiB of float64 scores per batch
        for lo in range(0, len(u_all), batch):
            u = u_all[lo : lo + batch]
            scores = p.affinity_weight * (self.user_factors[u] @ self.item_factors.T).astype(np.float64)
            scores += static
            social = (self.follow_matrix[u] @ recent).tocsr()
            social.sum_duplicates()
            rows = np.repeat(np.arange(len(u)), np.diff(social.indptr))
            scores[rows, social.indices] += p.social_weight * np.log1p(social.data)
            if exclude is not None:
                for r, items in enumerate(exclude[lo : lo + batch]):
                    if len(items):
                        scores[r, self.item_index(np.asarray(items))] = -np.inf
            kk = min(k, self.n_items)
            top = (
                np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
                if kk < self.n_items
                else np.tile(np.arange(self.n_items), (len(u), 1))
            )
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.lexsort((top, -top_scores), axis=1)
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            ids = np.where(np.isfinite(top_scores), self.item_ids[top], -1)
            out[lo : lo + len(u), :kk] = ids
        return out


def _index(ids: np.ndarray, order: np.ndarray, query: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    query = np.asarray(query, dtype=np.int64)
    sorted_ids = ids[order]
    at = np.minimum(np.searchsorted(sorted_ids, query), len(ids) - 1)
    bad = sorted_ids[at] != query
    if bad.any():
        examples = ", ".join(str(x) for x in np.unique(query[bad])[:5])
        raise KeyError(f"{int(bad.sum())} unknown {what} id(s), e.g. {examples}")
    return order[at]
