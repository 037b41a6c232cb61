"""Champion against challenger in the offline simulator: lists from each model, clicks from the truth.

**This module is a simulator: it reads ``truth/``** (:class:`data_gen.truth.ClickModel`), like
:mod:`abtest.sim` and :mod:`monitoring.scenarios`; the loop's other steps never do.

Traffic is the service's own: the users of the logged exposures of the last ``days`` of the log,
each weighted by the lists they were served. Users are split 50/50 by the production hash
(:func:`abtest.assignment.assign_buckets`, salt ``retrain-<loop id>``); each user's clicks are drawn from
the true click model on the list of their arm's model, ``sum_j Binomial(requests, P(click at slot j))``;
the metric is clicks per served list, compared with the delta-method ratio test of
:func:`abtest.stats.significance.ratio_z_test` (the A/B report's test). The verdict is ``ship`` only
when the challenger is better at ``alpha``.

The click model's clock stays where the world that produced the logs keeps it: frozen at the end of
the base data by default (``click_now=None``, as in :mod:`monitoring.scenarios`), so the experiment
judges the models in the same world as their traffic; the feed pipeline itself runs at ``now`` (the end
of the logs).

Also reported: the expected clicks per list of both models over *all* the traffic users (no sampling
noise), the policy benchmark's figure (``benchmarks/bench_policy.py``) on this traffic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from abtest.assignment import NUM_BUCKETS, assign_buckets
from abtest.stats.aggregate import ratio_statistics_from_arrays
from abtest.stats.significance import ratio_z_test

__all__ = ["ExperimentResult", "model_lists", "expected_clicks", "run_experiment"]


@dataclass(frozen=True)
class ExperimentResult:
    """One simulated A/B test; ``verdict`` is ``ship``, ``do_not_ship`` or ``no_difference``."""

    kind: str
    champion: str
    challenger: str
    users: int
    requests: int
    control_clicks_per_list: float
    treatment_clicks_per_list: float
    relative_lift: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    expected_champion: float
    expected_challenger: float

    def summary(self) -> str:
        return (
            f"{self.kind}: {self.challenger} vs {self.champion}: clicks per list {self.treatment_clicks_per_list:.3f} "
            f"vs {self.control_clicks_per_list:.3f} ({self.relative_lift:+.1%}, 95% CI {self.ci_low:+.1%} .. "
            f"{self.ci_high:+.1%}, p {self.p_value:.3g}) -> {self.verdict}; expected (truth, all traffic users) "
            f"{self.expected_challenger:.3f} vs {self.expected_champion:.3f}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def model_lists(kind: str, bundle_dir: str | Path, data_dir: str | Path, user_ids: np.ndarray, k: int, now: int) -> np.ndarray:
    """``[n, k]`` external item ids (``-1`` pads) a bundle serves to ``user_ids`` at ``now``.

    ``gnn`` / ``mf``: the recommender's top-k, its training positives excluded. ``ranker``: the feed
    pipeline of the bundle over a feature state fed every event of ``data_dir`` (the same state for
    champion and challenger, so only the model differs).
    """
    if kind == "ranker":
        from recsys.feed.bundle import load_feed_bundle
        from recsys.feed.candidates import FeedContext
        from recsys.feed.data import load_feed_data
        from recsys.feed.pipeline import FeedConfig, build_pipeline
        from recsys.feed.state import FeatureState

        data = load_feed_data(data_dir)
        bundle = load_feed_bundle(bundle_dir)
        state = FeatureState(data.catalog)
        state.observe(data.events)
        state.observe_follows(data.follows)
        pipeline = build_pipeline(FeedContext(data.catalog, state, bundle.embeddings), bundle.onnx,
                                  FeedConfig.model_validate(bundle.feed_config))  # fmt: skip
        dense = data.users.indices(user_ids, missing=-1)
        out = np.full((len(user_ids), k), -1, dtype=np.int64)
        for r, u in enumerate(dense):
            if u >= 0:
                items, _ = pipeline.recommend(int(u), k, now)
                out[r, : len(items)] = data.items.ids[items]
        return out
    from abtest.sim.world import model_lists
    from recsys.models.base import Recommender

    return model_lists(Recommender.load(bundle_dir), user_ids, k)[0]


def expected_clicks(click_model, user_ids: np.ndarray, lists: np.ndarray, now: int | None) -> np.ndarray:
    """``[n, k]`` true P(click) of each slot (0-based position) at ``now`` (``None``: the click model's
    frozen clock, the end of its data); 0 for empty slots."""
    n, k = lists.shape
    valid = lists >= 0
    p = np.zeros((n, k))
    if valid.any():
        users = np.repeat(user_ids, k).reshape(n, k)
        pos = np.tile(np.arange(k), (n, 1))
        p[valid] = click_model.click_probability(users[valid], lists[valid], pos[valid], now=now)
    return p


def load_click_model(truth_dir: str | Path):
    """The simulator's judge (``truth/`` of the base dataset)."""
    from data_gen.truth import ClickModel

    return ClickModel.load(truth_dir)


def run_experiment(
    kind: str, champion: tuple[str, str], challenger: tuple[str, str], *, truth_dir: str | Path,
    data_dir: str | Path, user_ids: np.ndarray, requests: np.ndarray, now: int, salt: str,
    k: int = 20, alpha: float = 0.05, seed: int = 0, click_now: int | None = None,
) -> ExperimentResult:  # fmt: skip
    """A/B test of ``challenger`` against ``champion`` (each ``(ref, bundle_dir)``), module docstring."""
    click_model = load_click_model(truth_dir)
    user_ids = np.asarray(user_ids, dtype=np.int64)
    requests = np.asarray(requests, dtype=np.int64)
    probs = [expected_clicks(click_model, user_ids, model_lists(kind, b, data_dir, user_ids, k, now), click_now)
             for _, b in (champion, challenger)]  # fmt: skip
    treated = assign_buckets(salt, user_ids.tolist()) >= NUM_BUCKETS // 2
    rng = np.random.default_rng([seed, 2718])
    p_arm = np.where(treated[:, None], probs[1], probs[0])
    clicks = rng.binomial(np.repeat(requests[:, None], k, axis=1), p_arm).sum(1)
    control, treatment = ratio_statistics_from_arrays(treated.astype(np.int64), clicks, requests, num_arms=2)
    test = ratio_z_test(control, treatment, alpha=alpha, metric="clicks per list")
    significant = test.p_value < alpha
    verdict = "ship" if significant and test.abs_lift > 0 else "do_not_ship" if significant else "no_difference"
    w = requests / requests.sum()
    return ExperimentResult(
        kind=kind, champion=champion[0], challenger=challenger[0], users=len(user_ids), requests=int(requests.sum()),
        control_clicks_per_list=control.mean, treatment_clicks_per_list=treatment.mean,
        relative_lift=float(test.rel_lift), ci_low=float(test.rel_ci[0]), ci_high=float(test.rel_ci[1]),
        p_value=float(test.p_value), verdict=verdict,
        expected_champion=float(w @ probs[0].sum(1)), expected_challenger=float(w @ probs[1].sum(1)),
    )  # fmt: skip
