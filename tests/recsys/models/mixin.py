"""The tests every recommender passes (after benfred/implicit's ``RecommenderBaseTestMixin``).

A model's test class is a few lines::

    class TestALS(RecommenderTestMixin):
        def make_model(self):
            return ALSRecommender(factors=8, regularization=0.1, alpha=10, num_threads=1)

Hooks:

* ``make_model()`` (required): a fresh, unfitted model with a fixed seed.
* ``fit_kwargs`` (class attribute): extra keyword arguments for ``fit``.
* ``supports_personalisation`` (class attribute, default True): the model learns per-user
  preferences, so the planted signal must be recovered (False for popular/random).

The fixture is a *planted signal* with a known answer: users and items fall into groups; a user
interacts only with (most of) their own group's items and follows users of their group. For every
user the held-out items of their group are the right answer: a personalised model must rank exactly
those first once seen items are excluded, and must recommend a group's other items to a new user
folded in from some of that group's items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys.bundle import WEIGHTS, BundleError
from recsys.data.dataset import Dataset, IdMap
from recsys.models.base import MODEL_KINDS, Recommender


@dataclass(frozen=True)
class PlantedSignal:
    """A dataset with a known answer (see the module docstring).

    Attributes:
        dataset (Dataset): Training data.
        user_group (np.ndarray): ``[n_users]`` group of each user.
        item_group (np.ndarray): ``[n_items]`` group of each item.
        held_out (sp.csr_matrix): ``[n_users, n_items]`` group items each user has not seen.
    """

    dataset: Dataset
    user_group: np.ndarray
    item_group: np.ndarray
    held_out: sp.csr_matrix

    def group_items(self, group: int) -> np.ndarray:
        return np.flatnonzero(self.item_group == group)


def planted_signal(
    n_groups: int = 4,
    users_per_group: int = 12,
    items_per_group: int = 12,
    seen_per_user: int = 8,
    followees_per_user: int = 3,
    seed: int = 0,
) -> PlantedSignal:
    """Build the planted-signal fixture; external ids are offset so they differ from indices."""
    rng = np.random.default_rng(seed)
    n_users, n_items = n_groups * users_per_group, n_groups * items_per_group
    user_group = np.repeat(np.arange(n_groups), users_per_group)
    item_group = np.repeat(np.arange(n_groups), items_per_group)
    rows, cols, held_rows, held_cols, f_rows, f_cols = [], [], [], [], [], []
    for u in range(n_users):
        g = user_group[u]
        group_items = np.flatnonzero(item_group == g)
        order = rng.permutation(group_items)
        seen, held = np.sort(order[:seen_per_user]), np.sort(order[seen_per_user:])
        rows += [u] * len(seen)
        cols += seen.tolist()
        held_rows += [u] * len(held)
        held_cols += held.tolist()
        peers = np.flatnonzero((user_group == g) & (np.arange(n_users) != u))
        followees = np.sort(rng.choice(peers, size=followees_per_user, replace=False))
        f_rows += [u] * len(followees)
        f_cols += followees.tolist()

    def csr(r: list[int], c: list[int], shape: tuple[int, int]) -> sp.csr_matrix:
        m = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=shape)
        m.sort_indices()
        return m

    user_items = csr(rows, cols, (n_users, n_items))
    timestamps = user_items.copy().astype(np.int64)
    timestamps.data = 1_700_000_000 + np.arange(user_items.nnz, dtype=np.int64)
    dataset = Dataset(
        name="planted",
        users=IdMap(np.arange(n_users, dtype=np.int64) + 1000, "user"),
        items=IdMap(np.arange(n_items, dtype=np.int64) + 5000, "item"),
        user_items=user_items,
        timestamps=timestamps,
        follows=csr(f_rows, f_cols, (n_users, n_users)),
        source="tests/recsys/models/mixin.py",
    )
    return PlantedSignal(dataset, user_group, item_group, csr(held_rows, held_cols, (n_users, n_items)))


class RecommenderTestMixin:
    """Shared behaviour tests; subclass as ``TestX(RecommenderTestMixin)`` and define ``make_model``."""

    fit_kwargs: ClassVar[dict[str, Any]] = {}
    supports_personalisation: ClassVar[bool] = True

    #: Tests that need a per-user answer; not collected at all (rather than skipped) for models
    #: with ``supports_personalisation = False``.
    _personalised_tests: ClassVar[tuple[str, ...]] = (
        "test_held_out_group_items_rank_first",
        "test_fold_in_recommends_the_group",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.supports_personalisation:
            for name in cls._personalised_tests:
                setattr(cls, name, None)  # pytest only collects callables

    def make_model(self) -> Recommender:
        raise NotImplementedError("define make_model() in the test class")

    # --- fixtures -----------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def planted(cls) -> PlantedSignal:
        return planted_signal()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, planted: PlantedSignal) -> Recommender:
        # class-scoped: fit once per model class; every test only reads the model
        return cls().make_model().fit(planted.dataset, **cls.fit_kwargs)

    @pytest.fixture(scope="class")
    @classmethod
    def bundle_path(cls, fitted: Recommender, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return fitted.save(tmp_path_factory.mktemp("bundle") / "model")

    # --- interface ----------------------------------------------------------------------------
    def test_kind_is_registered(self, fitted: Recommender) -> None:
        assert fitted.kind and MODEL_KINDS[fitted.kind] is type(fitted)

    def test_vectors_have_consistent_shapes(self, fitted: Recommender, planted: PlantedSignal) -> None:
        ds = planted.dataset
        items = fitted.item_vectors()
        users = fitted.user_vectors(np.arange(ds.n_users))
        assert items.dtype == torch.float32 and users.dtype == torch.float32
        assert items.shape[0] == ds.n_items
        assert users.shape == (ds.n_users, items.shape[1])
        assert fitted.fold_in([0, 1], [2]).shape == (items.shape[1],)
        assert fitted.n_users == ds.n_users and fitted.n_items == ds.n_items

    def test_recommend_shape_and_order(self, fitted: Recommender, planted: PlantedSignal) -> None:
        items, scores = fitted.recommend(3, k=5)
        assert items.shape == (5,) and scores.shape == (5,)
        assert items.dtype == np.int64
        assert len(set(items.tolist())) == 5
        assert ((items >= 0) & (items < planted.dataset.n_items)).all()
        assert (np.diff(scores) <= 1e-6).all(), "scores must be best first"

    def test_scores_match_dense_scores(self, fitted: Recommender) -> None:
        # With nothing excluded, the top-k scores are the k largest entries of the dense score row.
        users = np.arange(fitted.n_users)
        items, scores = fitted.recommend_many(users, k=6, exclude_seen=False)
        dense = fitted.scores(users).numpy()
        expected = -np.sort(-dense, axis=1)[:, :6]
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.take_along_axis(dense, items, axis=1), scores, rtol=1e-4, atol=1e-5)

    def test_recommend_many_agrees_with_recommend(self, fitted: Recommender) -> None:
        users = np.array([0, 5, 17, 30, 47])
        items, scores = fitted.recommend_many(users, k=7, batch_size=2)
        for row, u in enumerate(users):
            one_items, one_scores = fitted.recommend(int(u), k=7)
            np.testing.assert_array_equal(items[row], one_items)
            np.testing.assert_allclose(scores[row], one_scores, rtol=1e-5, atol=1e-6)

    def test_exclude_seen_is_honoured(self, fitted: Recommender, planted: PlantedSignal) -> None:
        seen = planted.dataset.user_items
        items, _ = fitted.recommend_many(np.arange(fitted.n_users), k=10, exclude_seen=True)
        for u in range(fitted.n_users):
            assert not set(items[u].tolist()) & set(seen.indices[seen.indptr[u] : seen.indptr[u + 1]])

    def test_k_larger_than_catalogue_pads(self, fitted: Recommender, planted: PlantedSignal) -> None:
        n_items = planted.dataset.n_items
        n_seen = planted.dataset.user_counts()[0]
        items, scores = fitted.recommend(0, k=n_items + 5, exclude_seen=True)
        valid = n_items - n_seen
        assert (items[:valid] >= 0).all() and len(set(items[:valid].tolist())) == valid
        assert (items[valid:] == -1).all()
        assert np.isneginf(scores[valid:]).all() and np.isfinite(scores[:valid]).all()

    def test_unknown_user_raises(self, fitted: Recommender) -> None:
        with pytest.raises(IndexError):
            fitted.recommend(fitted.n_users, k=3)

    def test_fit_is_reproducible(self, fitted: Recommender, planted: PlantedSignal) -> None:
        again = self.make_model().fit(planted.dataset, **self.fit_kwargs)
        users = np.arange(fitted.n_users)
        np.testing.assert_array_equal(
            again.recommend_many(users, k=5)[0], fitted.recommend_many(users, k=5)[0]
        )

    # --- the planted signal -------------------------------------------------------------------
    def test_held_out_group_items_rank_first(self, fitted: Recommender, planted: PlantedSignal) -> None:
        held = planted.held_out
        n_held = int(np.diff(held.indptr).max())
        items, _ = fitted.recommend_many(np.arange(fitted.n_users), k=n_held)
        for u in range(fitted.n_users):
            expected = set(held.indices[held.indptr[u] : held.indptr[u + 1]].tolist())
            assert set(items[u].tolist()) == expected, f"user {u} (group {planted.user_group[u]})"

    def test_fold_in_recommends_the_group(self, fitted: Recommender, planted: PlantedSignal) -> None:
        for group in range(int(planted.user_group.max()) + 1):
            group_items = planted.group_items(group)
            recent, rest = group_items[:6], group_items[6:]
            followees = np.flatnonzero(planted.user_group == group)[:2]
            items, scores = fitted.recommend_new_user(recent.tolist(), followees.tolist(), k=len(rest))
            assert set(items.tolist()) == set(rest.tolist()), f"group {group}"
            assert np.isfinite(scores).all()

    def test_recommend_new_user_excludes_recent(self, fitted: Recommender) -> None:
        recent = [0, 1, 2, 3]
        items, _ = fitted.recommend_new_user(recent, k=fitted.n_items)
        assert not set(items.tolist()) & set(recent)
        assert (items[: fitted.n_items - len(recent)] >= 0).all()

    # --- bundles ------------------------------------------------------------------------------
    def test_save_load_round_trip(self, fitted: Recommender, bundle_path: Path) -> None:
        loaded = Recommender.load(bundle_path)
        assert type(loaded) is type(fitted)
        assert loaded.config() == fitted.config()
        np.testing.assert_array_equal(loaded.users.ids, fitted.users.ids)
        np.testing.assert_array_equal(loaded.items.ids, fitted.items.ids)
        assert loaded.data_fingerprint == fitted.data_fingerprint
        users = np.arange(fitted.n_users)
        a_items, a_scores = fitted.recommend_many(users, k=8)
        b_items, b_scores = loaded.recommend_many(users, k=8)
        np.testing.assert_array_equal(a_items, b_items)
        np.testing.assert_allclose(a_scores, b_scores, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(loaded.fold_in([1, 2, 3]), fitted.fold_in([1, 2, 3]))
        # loading through the model's own class works too
        assert type(type(fitted).load(bundle_path)) is type(fitted)

    def test_load_refuses_tampered_weights(self, bundle_path: Path, tmp_path: Path) -> None:
        import shutil

        copy = tmp_path / "tampered"
        shutil.copytree(bundle_path, copy)
        weights = copy / WEIGHTS
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF  # flip the last byte of the last tensor
        weights.write_bytes(bytes(data))
        with pytest.raises(BundleError, match="checksum"):
            Recommender.load(copy)

    def test_load_refuses_foreign_kind(self, fitted: Recommender, bundle_path: Path) -> None:
        import recsys.models.popular  # noqa: F401  (so at least two kinds are registered)
        import recsys.models.random_model  # noqa: F401

        other = next(cls for kind, cls in MODEL_KINDS.items() if kind != fitted.kind)
        with pytest.raises(BundleError, match=fitted.kind):
            other.load(bundle_path)
