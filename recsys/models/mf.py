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
from typing import Any, ClassVar, Literal, Self

import numpy as np
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from pydantic import BaseModel, Field
from threadpoolctl import threadpool_limits

from feedrec_common.config import StrictModel
from recsys.data.dataset import Dataset
from recsys.models.base import Recommender

#: ``callback(iteration, model)`` after each training epoch (0-based); the model is usable
#: (``recommend_many`` works) inside the callback, with the factors of that epoch.
FitCallback = Callable[[int, "Recommender"], None]


class ALSConfig(StrictModel):
    """Hyper-parameters of :class:`ALSRecommender` (defaults are ``implicit``'s).

    The tuned Gowalla values are factors 256, regularization 10, alpha 20, 15 iterations
    (``configs/train/mf_gowalla.yaml``).

    Args:
        factors (int): Embedding dimension. (default: 100)
        regularization (float): L2 penalty on the factors. (default: 0.01)
        alpha (float): Confidence slope, ``confidence = 1 + alpha * value``. (default: 1.0)
        iterations (int): ALS sweeps (users then items). (default: 15)
        use_cg (bool): Conjugate-gradient solver (fast) instead of Cholesky. (default: True)
        num_threads (int): Solver threads; 0 means every core. (default: 0)
        random_state (int): Seed of the initial factors. (default: 0)
    """

    factors: int = Field(100, ge=1)
    regularization: float = Field(0.01, ge=0.0)
    alpha: float = Field(1.0, ge=0.0)
    iterations: int = Field(15, ge=1)
    use_cg: bool = True
    num_threads: int = Field(0, ge=0)
    random_state: int = 0


class BPRConfig(StrictModel):
    """Hyper-parameters of :class:`BPRRecommender` (defaults are ``implicit``'s, plus fold-in's).

    Args:
        factors (int): Embedding dimension, without the bias column. (default: 100)
        learning_rate (float): SGD step. (default: 0.01)
        regularization (float): L2 penalty. (default: 0.01)
        iterations (int): Epochs. (default: 100)
        verify_negative_samples (bool): Resample negatives the user has seen. (default: True)
        num_threads (int): SGD threads (Hogwild); 0 means every core; use 1 for a bit-reproducible
            fit. (default: 0)
        random_state (int): Seed. (default: 0)
        fold_in_alpha (float): Confidence of the recent items in fold-in. (default: 20.0)
        fold_in_regularization (float): ``lambda`` of the fold-in. (default: 1.0)
    """

    factors: int = Field(100, ge=1)
    learning_rate: float = Field(0.01, gt=0.0)
    regularization: float = Field(0.01, ge=0.0)
    iterations: int = Field(100, ge=1)
    verify_negative_samples: bool = True
    num_threads: int = Field(0, ge=0)
    random_state: int = 0
    fold_in_alpha: float = Field(20.0, ge=0.0)
    fold_in_regularization: float = Field(1.0, gt=0.0)


class MFConfig(StrictModel):
    """Which matrix factorisation and its hyper-parameters (the ``model:`` section of a trainer config).

    Each kind keeps its own section, so ``kind`` switches between them without editing the others.

    Args:
        kind (str): ``"als"`` or ``"bpr"``. (default: ``"als"``)
        als (ALSConfig): ALS hyper-parameters.
        bpr (BPRConfig): BPR hyper-parameters.
    """

    kind: Literal["als", "bpr"] = "als"
    als: ALSConfig = Field(default_factory=ALSConfig)
    bpr: BPRConfig = Field(default_factory=BPRConfig)

    @property
    def params(self) -> ALSConfig | BPRConfig:
        """The active kind's hyper-parameters."""
        return self.als if self.kind == "als" else self.bpr

    def build(self, **overrides: Any) -> _FactorModel:
        """An unfitted model of the active kind; ``overrides`` replace hyper-parameters."""
        return make_mf_model(self.kind, **{**self.params.model_dump(), **overrides})



class _FactorModel(Recommender):
    """Shared plumbing of the two ``implicit`` wrappers: config, factor tables, save/load, callbacks.

    Args:
        config (StrictModel | dict, optional): Hyper-parameters (the subclass's ``config_class``);
            keyword overrides win. (default: None: the defaults)
    """

    config_class: ClassVar[type[StrictModel]]

    def __init__(self, config: BaseModel | dict[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__()
        data = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
        self.cfg = self.config_class.model_validate({**data, **overrides})
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

    def factor_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``(user_factors [n_users, d], item_factors [n_items, d])`` float32, as ``implicit`` holds them
        (BPR: the last column is the constant 1 / the item bias).

        Raises:
            RuntimeError: the model is not fitted.
        """
        if self._implicit is None or self._implicit.user_factors is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._implicit.user_factors, self._implicit.item_factors

    def user_vectors(self, user_idx: np.ndarray) -> torch.Tensor:
        users, _ = self.factor_tables()
        return torch.from_numpy(np.ascontiguousarray(users[np.asarray(user_idx, dtype=np.int64)]))

    def item_vectors(self) -> torch.Tensor:
        _, items = self.factor_tables()
        return torch.from_numpy(items)

    def config(self) -> dict[str, Any]:
        return self.cfg.model_dump()

    def _state(self) -> dict[str, torch.Tensor]:
        users, items = self.factor_tables()
        return {"user_factors": torch.from_numpy(users), "item_factors": torch.from_numpy(items)}

    @classmethod
    def from_factors(
        cls, user_factors: np.ndarray | torch.Tensor, item_factors: np.ndarray | torch.Tensor,
        config: BaseModel | dict[str, Any] | None = None, **overrides: Any,
    ) -> Self:
        """A model with given factor tables instead of a fit (benchmarks, tests, imported weights).

        The id maps and ``seen`` are not set: assign ``users``, ``items`` and ``seen`` before
        ``recommend`` with ``exclude_seen`` or ``save``.
        """
        model = cls(config, **overrides)
        with threadpool_limits(1, "blas"):
            model._implicit = model._new_implicit()
        # copies: safetensors tensors may be read-only views of the file
        model._implicit.user_factors = np.array(np.asarray(user_factors), dtype=np.float32)
        model._implicit.item_factors = np.array(np.asarray(item_factors), dtype=np.float32)
        return model

    @classmethod
    def _from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Self:
        return cls.from_factors(tensors["user_factors"].numpy(), tensors["item_factors"].numpy(), config)


class ALSRecommender(_FactorModel):
    """Weighted ALS for implicit feedback (``implicit.cpu.als.AlternatingLeastSquares``).

    Args:
        config (ALSConfig | dict, optional): Hyper-parameters (see :class:`ALSConfig`); keyword
            overrides win, e.g. ``ALSRecommender(factors=64, alpha=20.0)``. (default: None)
    """

    kind = "als"
    config_class = ALSConfig

    def _new_implicit(self) -> Any:
        # ALSConfig's fields are implicit's arguments; alpha=1 because _confidence precomputes the
        # confidence (see module docstring)
        return AlternatingLeastSquares(**{**self.cfg.model_dump(), "alpha": 1.0})

    def _confidence(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        conf = user_items.astype(np.float32, copy=True)
        conf.data = 1.0 + self.cfg.alpha * conf.data
        return conf

    def _fit_matrix(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        return self._confidence(user_items)

    def fold_in(self, recent_items: Sequence[int], followees: Sequence[int] = ()) -> torch.Tensor:
        """One exact ALS user step against the trained item factors (``implicit``'s
        ``recalculate_user``, Cholesky), with the user's recent items as positives of value 1.
        Followees are ignored."""
        self.factor_tables()
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
        config (BPRConfig | dict, optional): Hyper-parameters (see :class:`BPRConfig`); keyword
            overrides win. (default: None)
    """

    kind = "bpr"
    config_class = BPRConfig

    def __init__(self, config: BaseModel | dict[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self._fold_cache: tuple[np.ndarray, np.ndarray] | None = None  # (Q, Q^T Q) in float64

    def _new_implicit(self) -> Any:
        self._fold_cache = None
        # BPRConfig's fields are implicit's arguments, except our fold-in's two
        return BayesianPersonalizedRanking(**self.cfg.model_dump(exclude={"fold_in_alpha", "fold_in_regularization"}))

    def _fit_matrix(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        binary = user_items.astype(np.float32, copy=True)
        binary.data[:] = 1.0
        return binary

    def fold_in(self, recent_items: Sequence[int], followees: Sequence[int] = ()) -> torch.Tensor:
        """Regularised least squares onto the item factors (see the class docstring)."""
        _, items = self.factor_tables()
        if self._fold_cache is None:  # per model, not per call: q is n_items x factors
            q = items[:, :-1].astype(np.float64)
            self._fold_cache = (q, q.T @ q)
        q, gram = self._fold_cache
        recent = np.unique(np.asarray(recent_items, dtype=np.int64))
        w = np.zeros(q.shape[1])
        if len(recent):
            q_r = q[recent]
            alpha, reg = self.cfg.fold_in_alpha, self.cfg.fold_in_regularization
            lhs = gram + alpha * (q_r.T @ q_r) + reg * np.eye(q.shape[1])
            w = np.linalg.solve(lhs, (1.0 + alpha) * q_r.sum(axis=0))
        return torch.from_numpy(np.append(w, 1.0).astype(np.float32))


def make_mf_model(kind: str, **params: Any) -> _FactorModel:
    """``"als"`` or ``"bpr"`` with keyword hyper-parameters (what the training config holds)."""
    classes: dict[str, type[_FactorModel]] = {"als": ALSRecommender, "bpr": BPRRecommender}
    if kind not in classes:
        raise ValueError(f"unknown matrix-factorisation model {kind!r} (expected 'als' or 'bpr')")
    return classes[kind](**params)
