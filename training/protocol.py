"""The one selection protocol every trainer follows (``train_mf.py``, ``train_gnn.py``).

1. **Load** the split named by ``data.source``. A ``data_gen`` folder comes with a temporal
   validation window; a given train/test split (Gowalla, any LightGCN folder) has none, so one is
   carved out of the training set: ``data.valid_fraction`` of the training items of
   ``data.valid_users`` users (``None``: every user with at least 3 items), each user's *latest*
   ones by default (``data.valid_from``), seeded by ``data.valid_seed``
   (:func:`recsys.data.carve_validation`). The seed is the data's, not the model's: every trainer
   and every model seed select on the same carve-out.
2. **Select** (epochs, hyper-parameters) on :attr:`Protocol.selection`: the training positives
   and the validation set, with the test set *sealed* (replaced by an empty matrix), so no
   selection step can read a test positive.
3. **Refit** the chosen configuration on :meth:`Protocol.refit_data` (everything before the test
   window: all of the given training set, or train + the validation window) and evaluate it once
   on :attr:`Protocol.split`'s test set, with train and validation positives masked.

The defaults below *are* the protocol: ``configs/train/*_gowalla.yaml`` do not restate them, so MF
and the GNN cannot drift apart again (``tests/training/test_protocol.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import scipy.sparse as sp
from pydantic import Field

from feedrec_common.config import StrictModel
from recsys.data import Dataset, Split, carve_validation, load_split


class DataConfig(StrictModel):
    """Where the data comes from and how a missing validation set is carved out of train.

    Args:
        source (str): ``"gowalla"``, a ``data_gen`` folder or a LightGCN-format folder.
            (default: ``"data/small"``)
        valid_users (int, optional): Users to carve validation items from, when the split has no
            validation set; ``None``: every user with at least 3 training items. (default: 5000)
        valid_fraction (float): Share of each carved user's training items held out. (default: 0.2)
        valid_from (str): ``"latest"``: each user's latest items (by timestamps, else file order),
            as a temporal test split holds out what comes later; ``"random"``: random ones.
            (default: ``"latest"``)
        valid_seed (int): Seeds the choice of users (and items, for ``"random"``). (default: 0)
    """

    source: str = "data/small"
    valid_users: int | None = Field(5000, ge=1)
    valid_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    valid_from: Literal["random", "latest"] = "latest"
    valid_seed: int = 0


class EvalConfig(StrictModel):
    """Validation during training: cut-offs, how often, and on how many users.

    Args:
        ks (list[int]): Cut-offs; the largest one's Recall is the selection metric. (default: [20])
        every (int): Evaluate the validation set every this many epochs (ALS/BPR: iterations).
            (default: 1)
        sample_users (int, optional): Evaluate on a seeded sample of this many validation users
            (``None``: all of them). (default: None)
        test_sample_users (int, optional): The final test evaluation on a seeded sample of this many
            test users (``None``: all of them; a 1M-user graph's full ranking of 2.5M posts per user
            is hours). (default: None)
    """

    ks: list[int] = Field(default_factory=lambda: [20], min_length=1)
    every: int = Field(1, ge=1)
    sample_users: int | None = Field(None, ge=1)
    test_sample_users: int | None = Field(None, ge=1)

    @property
    def k(self) -> int:
        """The selection cut-off: ``max(ks)``."""
        return max(self.ks)

    @property
    def primary_metric(self) -> str:
        """The selection metric's name in :class:`recsys.evaluation.EvalResult` (``"recall@20"``)."""
        return f"recall@{self.k}"


class TrackingConfig(StrictModel):
    """Where a trainer's run is logged and registered (MLflow); each trainer subclasses it for its
    defaults.

    Args:
        experiment (str): MLflow experiment.
        run_name (str, optional): Run name (default: the trainer's).
        registered_model (str, optional): Registry name of the bundle; ``None``: not registered.
        alias (str, optional): Registry alias moved to the new version (e.g. ``champion``).
    """

    experiment: str = "default"
    run_name: str | None = None
    registered_model: str | None = None
    alias: str | None = None


@dataclass(frozen=True)
class Protocol:
    """A loaded split with its validation set, and what selection and the final model may see.

    Attributes:
        split (Split): Train / validation (given or carved) / test: the final evaluation's view.
        source_train (Dataset): The training set as loaded, before any carve-out.
        carved (bool): The validation set was carved out of ``source_train``.
    """

    split: Split
    source_train: Dataset
    carved: bool

    @property
    def selection(self) -> Split:
        """``split`` with the test set sealed: an empty matrix of the same shape.

        Everything that chooses (epochs, early stopping, hyper-parameters) gets this view, so it
        cannot read a test positive; evaluating it ``on="test"`` measures nobody.
        """
        return dataclasses.replace(self.split, test=sp.csr_matrix(self.split.test.shape, dtype=self.split.test.dtype))

    def refit_data(self) -> Dataset:
        """What the final model trains on: everything before the test window.

        The loaded training set when validation was carved out of it (same positives as
        ``split.train_with_valid()``, with the loader's timestamps and file order kept); else the
        training set plus the validation window, with its times (recency weights need them).
        """
        return self.source_train if self.carved else self.split.train_with_valid()

    def describe(self) -> str:
        """One line for logs: where the validation set comes from."""
        return str(self.split.info.get("valid")) if self.carved else f"the {self.split.kind} split's validation set"


def load_protocol(data: DataConfig, events: bool = True) -> Protocol:
    """Load ``data.source`` and give it a validation set (carved when the split has none).

    ``events=False``: without a ``data_gen`` folder's raw events, for trainers that read only the
    positives (:func:`recsys.data.load_split`).

    Raises:
        DataError: the dataset cannot be loaded, or cannot be carved as asked.
    """
    split = load_split(data.source, events=events)
    if split.valid is not None:
        return Protocol(split=split, source_train=split.train, carved=False)
    n_users = data.valid_users if data.valid_users is not None else split.train.n_users
    carved = carve_validation(split, n_users, data.valid_fraction, data.valid_seed, data.valid_from)
    return Protocol(split=carved, source_train=split.train, carved=True)
