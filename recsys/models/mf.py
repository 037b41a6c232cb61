"""Matrix factorisation with `implicit`: ALS (Hu, Koren & Volinsky 2008) and BPR (Rendle et al. 2009).

Both are two-tower scorers whose towers are plain embedding tables, so the wrappers only translate
between :class:`~recsys.models.base.Recommender` and ``implicit.cpu``; weights are stored as
safetensors by the base class (``implicit``'s own ``save``/``load`` is never used).

Conventions:

* Input is ``dataset.user_items`` (users x items CSR, the ``implicit >= 0.5`` orientation).
* ALS confidence is ``1 + alpha * value`` (the paper's linear scheme). We compute it ourselves and
  hand ``implicit`` ``alpha=1``, because ``implicit`` multiplies by ``alpha`` internally (``alpha *
  value``, no ``+ 1``) in ``fit`` and ``recalculate_user`` alike; doing it once here keeps ``fit`` and
  fold-in on the same scale.
* BPR ignores values (any positive is a 1). ``implicit`` stores the item bias as the last column of
  the item factors and a constant ``1`` as the last column of the user factors, so
  ``user_factors @ item_factors.T`` is exactly ``implicit``'s score; our vectors keep that layout.
* ``num_threads=0`` uses every core. BLAS is limited to one thread while fitting, as ``implicit``
  asks (its solvers parallelise over users themselves; a threaded BLAS underneath oversubscribes).
  ``implicit`` is imported at module level because importing it loads another OpenBLAS, which a
  ``threadpool_limits`` entered before that import would not cover.
* Followees are ignored: these models have no social tower.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from recsys.data.dataset import Dataset
from recsys.models.base import Recommender

#: ``callback(iteration, model)`` after each training epoch (0-based); the model is usable
#: (``recommend_many`` works) inside the callback, with the factors of that epoch.
FitCallback = Callable[[int, "Recommender"], None]


class _FactorModel(Recommender):
    """Shared plumbing of the two ``implicit`` wrappers: factor tables, save/load, callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self._implicit: Any = None  # the implicit.cpu model holding user_factors / item_factors

    @abstractmethod
    def _new_implicit(self) -> Any:
        """A fresh, unfitted ``implicit.cpu`` model with this wrapper's hyper-parameters."""

    @abstractmethod
    def _fit_matrix(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        """The matrix ``implicit`` fits on (confidences for ALS, binary for BPR)."""

    def fit(
        self,
        dataset: Dataset,
        *,
        callback: FitCallback | None = None,
        show_progress: bool = False,
    ) -> Self:
        """Factorise ``dataset.user_items``.

        Args:
            dataset (Dataset): Training data.
            callback (FitCallback, optional): Called as ``callback(iteration, self)`` after every
                epoch, e.g. to log a validation metric per step. (default: None)
            show_progress (bool, optional): ``implicit``'s tqdm bar. (default: False)
        """
        self._remember(dataset)  # before fitting, so recommend() works inside the callback
        matrix = self._fit_matrix(dataset.user_items.tocsr())
        with threadpool_limits(1, "blas"):
            self._implicit = self._new_implicit()
            hook = None
            if callback is not None:

                def hook(iteration: int, *_: Any) -> None:
                    callback(iteration, self)

            self._implicit.fit(matrix, show_progress=show_progress, callback=hook)
        return self

    def _factors(self) -> tuple[np.ndarray, np.ndarray]:
        if self._implicit is None or self._implicit.user_factors is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._implicit.user_factors, self._implicit.item_factors

    def user_vectors(self, user_idx: np.ndarray) -> torch.Tensor:
        users, _ = self._factors()
        return torch.from_numpy(np.ascontiguousarray(users[np.asarray(user_idx, dtype=np.int64)]))

    def item_vectors(self) -> torch.Tensor:
        _, items = self._factors()
        return torch.from_numpy(items)

    def _state(self) -> dict[str, torch.Tensor]:
        users, items = self._factors()
        return {"user_factors": torch.from_numpy(users), "item_factors": torch.from_numpy(items)}

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        model = cls(**config)
        with threadpool_limits(1, "blas"):
            model._implicit = model._new_implicit()
        # copies: safetensors tensors may be read-only views of the file
        model._implicit.user_factors = np.array(tensors["user_factors"].numpy(), dtype=np.float32)
        model._implicit.item_factors = np.array(tensors["item_factors"].numpy(), dtype=np.float32)
        return model


class ALSRecommender(_FactorModel):
    """Weighted ALS for implicit feedback (``implicit.cpu.als.AlternatingLeastSquares``).

    The defaults are ``implicit``'s; the tuned Gowalla values are factors 256, regularization 10,
    alpha 20, 15 iterations (``configs/train/mf_gowalla.yaml``).

    Args:
        factors (int, optional): Embedding dimension. (default: 100)
        regularization (float, optional): L2 penalty on the factors. (default: 0.01)
        alpha (float, optional): Confidence slope, ``confidence = 1 + alpha * value``. (default: 1.0)
        iterations (int, optional): ALS sweeps (users then items). (default: 15)
        use_cg (bool, optional): Conjugate-gradient solver (fast) instead of Cholesky. (default: True)
        num_threads (int, optional): Solver threads; 0 means every core. (default: 0)
        random_state (int, optional): Seed of the initial factors. (default: 0)
    """

    kind = "als"

    def __init__(
        self,
        factors: int = 100,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        use_cg: bool = True,
        num_threads: int = 0,
        random_state: int = 0,
    ) -> None:
        super().__init__()
        if factors < 1 or iterations < 1:
            raise ValueError("factors and iterations must be >= 1")
        if regularization < 0 or alpha < 0:
            raise ValueError("regularization and alpha must be >= 0")
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.use_cg = use_cg
        self.num_threads = num_threads
        self.random_state = random_state

    def _new_implicit(self) -> Any:
        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=1.0,  # confidence is precomputed by _confidence (see module docstring)
            iterations=self.iterations,
            use_cg=self.use_cg,
            num_threads=self.num_threads,
            random_state=self.random_state,
        )

    def _confidence(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        conf = user_items.astype(np.float32, copy=True)
        conf.data = 1.0 + self.alpha * conf.data
        return conf

    def _fit_matrix(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        return self._confidence(user_items)

    def fold_in(self, recent_items: Sequence[int], followees: Sequence[int] = ()) -> torch.Tensor:
        """One exact ALS user step against the trained item factors (``implicit``'s
        ``recalculate_user``, Cholesky), with the user's recent items as positives of value 1.
        Followees are ignored."""
        self._factors()
        items = np.unique(np.asarray(recent_items, dtype=np.int64))
        row = sp.csr_matrix(
            (np.ones(len(items), dtype=np.float32), items, [0, len(items)]), shape=(1, self.n_items)
        )
        # one user: no parallelism to gain, and under a loaded CPU each OpenMP fork/join of the
        # default thread team costs far more than the solve itself
        threads, self._implicit.num_threads = self._implicit.num_threads, 1
        try:
            vec = self._implicit.recalculate_user(0, self._confidence(row))
        finally:
            self._implicit.num_threads = threads
        return torch.from_numpy(np.asarray(vec, dtype=np.float32))

    def config(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "use_cg": self.use_cg,
            "num_threads": self.num_threads,
            "random_state": self.random_state,
        }


class BPRRecommender(_FactorModel):
    """Bayesian Personalised Ranking by SGD (``implicit.cpu.bpr.BayesianPersonalizedRanking``).

    Vectors have ``factors + 1`` entries: the last is the item bias on the item side and a
    constant 1 on the user side, so the dot product equals ``implicit``'s score.

    Fold-in (``implicit``'s BPR has no user recalculation) is a regularised least-squares fit onto
    the trained item factors, the same objective as one ALS user step: with ``Q`` the item factors
    without the bias column and ``R`` the recent items, it solves::

        min_w  sum_i c_i (p_i - w . q_i)^2 + lambda |w|^2,
        p_i = 1, c_i = 1 + fold_in_alpha for i in R;  p_i = 0, c_i = 1 otherwise,

    i.e. ``(Q^T Q + fold_in_alpha Q_R^T Q_R + lambda I) w = (1 + fold_in_alpha) Q_R^T 1`` (one ALS
    user step on BPR's item factors), and appends the bias coordinate ``1``. Known weakness: the
    0/1-scale fit is not calibrated against BPR's logit-scale item biases, so on Gowalla (factors
    128, 100 epochs) folded-in users reach Recall@20 0.031 against 0.089 for the trained vectors
    (``benchmarks/bench_mf.py`` fold-in rows); ALS fold-in has no such gap (0.174 vs 0.176).

    Args:
        factors (int, optional): Embedding dimension, without the bias column. (default: 100)
        learning_rate (float, optional): SGD step. (default: 0.01)
        regularization (float, optional): L2 penalty. (default: 0.01)
        iterations (int, optional): Epochs. (default: 100)
        verify_negative_samples (bool, optional): Resample negatives the user has seen. (default: True)
        num_threads (int, optional): SGD threads (Hogwild); 0 means every core; use 1 for a
            bit-reproducible fit. (default: 0)
        random_state (int, optional): Seed. (default: 0)
        fold_in_alpha (float, optional): Confidence of the recent items in fold-in. (default: 20.0)
        fold_in_regularization (float, optional): ``lambda`` of the fold-in. (default: 1.0)
    """

    kind = "bpr"

    def __init__(
        self,
        factors: int = 100,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        verify_negative_samples: bool = True,
        num_threads: int = 0,
        random_state: int = 0,
        fold_in_alpha: float = 20.0,
        fold_in_regularization: float = 1.0,
    ) -> None:
        super().__init__()
        if factors < 1 or iterations < 1:
            raise ValueError("factors and iterations must be >= 1")
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.verify_negative_samples = verify_negative_samples
        self.num_threads = num_threads
        self.random_state = random_state
        self.fold_in_alpha = fold_in_alpha
        self.fold_in_regularization = fold_in_regularization
        self._fold_cache: tuple[np.ndarray, np.ndarray] | None = None  # (Q, Q^T Q) in float64

    def _new_implicit(self) -> Any:
        self._fold_cache = None
        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            verify_negative_samples=self.verify_negative_samples,
            num_threads=self.num_threads,
            random_state=self.random_state,
        )

    def _fit_matrix(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        binary = user_items.astype(np.float32, copy=True)
        binary.data[:] = 1.0
        return binary

    def fold_in(self, recent_items: Sequence[int], followees: Sequence[int] = ()) -> torch.Tensor:
        """Regularised least squares onto the item factors (see the class docstring)."""
        _, items = self._factors()
        if self._fold_cache is None:  # per model, not per call: q is n_items x factors
            q = items[:, :-1].astype(np.float64)
            self._fold_cache = (q, q.T @ q)
        q, gram = self._fold_cache
        recent = np.unique(np.asarray(recent_items, dtype=np.int64))
        w = np.zeros(q.shape[1])
        if len(recent):
            q_r = q[recent]
            lhs = gram + self.fold_in_alpha * (q_r.T @ q_r) + self.fold_in_regularization * np.eye(q.shape[1])
            w = np.linalg.solve(lhs, (1.0 + self.fold_in_alpha) * q_r.sum(axis=0))
        return torch.from_numpy(np.append(w, 1.0).astype(np.float32))

    def config(self) -> dict[str, Any]:
        return {
            "factors": self.factors,
            "learning_rate": self.learning_rate,
            "regularization": self.regularization,
            "iterations": self.iterations,
            "verify_negative_samples": self.verify_negative_samples,
            "num_threads": self.num_threads,
            "random_state": self.random_state,
            "fold_in_alpha": self.fold_in_alpha,
            "fold_in_regularization": self.fold_in_regularization,
        }


def make_mf_model(kind: str, **params: Any) -> _FactorModel:
    """``"als"`` or ``"bpr"`` with keyword hyper-parameters (what the training config holds)."""
    classes: dict[str, type[_FactorModel]] = {"als": ALSRecommender, "bpr": BPRRecommender}
    if kind not in classes:
        raise ValueError(f"unknown matrix-factorisation model {kind!r} (expected 'als' or 'bpr')")
    return classes[kind](**params)
