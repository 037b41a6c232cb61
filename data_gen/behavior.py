"""The ground-truth engagement model, as pure vectorised functions.

The generator (``data_gen.feed_simulation``) and the public :class:`data_gen.truth.ClickModel` both call these
functions, so the probabilities the simulator and the oracle see are the ones the data came from.

For user ``u``, post ``i`` shown at 0-based feed position ``k`` at time ``t``::

    z     = base_logit
          + affinity_weight   * <p_u, q_i>                 latent user-item affinity
          + quality_weight    * quality_i                  intrinsic appeal of the post
          + media_bias[media_i]
          + popularity_weight * log1p(clicks_i(t))         clicks on i before the day of t
          + social_weight     * log1p(social_ui(t))        distinct followees of u who clicked i
                                                           within social_window_days before the day of t
          - freshness_per_day * age_days_i(t)              age of the post at t
    P(click)          = (1 + k) ** -position_decay * sigmoid(z)     (examination hypothesis)
    P(like  | click)  = sigmoid(like_base_logit  + like_affinity_weight  * <p_u, q_i>)
    P(share | click)  = sigmoid(share_base_logit + share_affinity_weight * <p_u, q_i>
                                + share_social_weight * log1p(social_ui(t)))
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from data_gen.generator_config import BehaviorConfig

DAY_SECONDS = 86_400


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def examination(positions: np.ndarray, params: BehaviorConfig) -> np.ndarray:
    """Probability that the slot at 0-based ``positions`` is looked at (position bias)."""
    return np.power(1.0 + np.asarray(positions, dtype=np.float64), -params.position_decay)


def click_logit(
    affinity: np.ndarray,
    quality: np.ndarray,
    media: np.ndarray,
    clicks_before: np.ndarray,
    social: np.ndarray,
    age_seconds: np.ndarray,
    params: BehaviorConfig,
) -> np.ndarray:
    """Logit ``z`` of an examined slot (all arguments are aligned 1-d arrays or broadcastable).

    Args:
        affinity (np.ndarray): ``<p_u, q_i>``.
        quality (np.ndarray): ``quality_i``.
        media (np.ndarray): media type code of the post (0 text, 1 image, 2 video).
        clicks_before (np.ndarray): clicks on the post before the current day.
        social (np.ndarray): distinct followees of the user who clicked the post in the social window.
        age_seconds (np.ndarray): age of the post in seconds at the time of the impression.
        params (BehaviorConfig): coefficients.
    """
    media_bias = np.asarray(params.media_bias, dtype=np.float64)
    return (
        params.base_logit
        + params.affinity_weight * affinity
        + params.quality_weight * quality
        + media_bias[media]
        + params.popularity_weight * np.log1p(clicks_before)
        + params.social_weight * np.log1p(social)
        - params.freshness_per_day * (np.maximum(age_seconds, 0) / DAY_SECONDS)
    )


def click_probability(logit: np.ndarray, positions: np.ndarray, params: BehaviorConfig) -> np.ndarray:
    """``P(click) = examination(position) * sigmoid(logit)``."""
    return examination(positions, params) * sigmoid(logit)


def like_probability(affinity: np.ndarray, params: BehaviorConfig) -> np.ndarray:
    """``P(like | click)``."""
    return sigmoid(params.like_base_logit + params.like_affinity_weight * affinity)


def share_probability(affinity: np.ndarray, social: np.ndarray, params: BehaviorConfig) -> np.ndarray:
    """``P(share | click)``."""
    return sigmoid(
        params.share_base_logit
        + params.share_affinity_weight * affinity
        + params.share_social_weight * np.log1p(social)
    )


def day_start(now: int, start_ts: int) -> int:
    """Start of the day containing ``now`` (days are counted from ``start_ts``; none before it).

    Popularity and social counts only change at day boundaries: they count clicks before this time.
    The end of the simulated period is a day boundary, so ``day_start(end_ts) == end_ts``.
    """
    day = max((int(now) - start_ts) // DAY_SECONDS, 0)
    return start_ts + day * DAY_SECONDS


def sparse_lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows[j], cols[j]]`` for every j, vectorised (0 where absent).

    ``matrix`` must have sorted indices without duplicates (``sum_duplicates(); sort_indices()``).
    """
    n_cols = matrix.shape[1]
    keys = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr)) * n_cols
    keys += matrix.indices
    query = np.asarray(rows, dtype=np.int64) * n_cols + np.asarray(cols, dtype=np.int64)
    if len(keys) == 0:
        return np.zeros(len(query), dtype=np.float64)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, matrix.data[at], 0).astype(np.float64)
