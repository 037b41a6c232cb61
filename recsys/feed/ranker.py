"""The feed's click ranker: an MLP over point-in-time features, with position bias as its own term.

``logit(x, position) = mlp(standardise(x without position)) + bias[position]`` (positions past
``max_position`` share the last bias). The position bias absorbs the examination effect of the logged
slot during training; at inference the position is the constant 0, so the score is the click logit
*as if shown at the top* and ranking by it is not distorted by where the logging policy put a post.

Position handling (:attr:`RankerConfig.position_bias`), for the ablation:

* ``additive`` (default): the bias term above;
* ``ipw``: no position term; the unbiased pointwise loss of counterfactual learning to rank: a click at
  slot k becomes the soft target ``1 / propensity(k)`` (``propensity``: the click-rate ratio of slot k
  to slot 0 in the training log; logged slots are filled independently of the post, so that ratio is
  the examination probability), whose expectation is the click probability at slot 0;
* ``none``: no position term, no weights (position bias ignored).
"""

from __future__ import annotations

import math
import time
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from feedrec_common.config import StrictModel
from recsys.feed.features import N_FEATURES, POSITION


class RankerConfig(StrictModel):
    """Architecture and training of the ranker.

    Args:
        hidden (list[int]): Hidden layer widths. (default: [64, 32])
        position_bias (str): ``additive``, ``ipw`` or ``none`` (module docstring). (default: additive)
        max_position (int): Slots with their own bias; later slots share the last. (default: 20)
        lr (float): Adam learning rate. (default: 0.003)
        weight_decay (float): Adam weight decay. (default: 1e-5)
        batch_size (int): Examples per step. (default: 2048)
        epochs (int): At most this many passes. (default: 8)
        patience (int): Stop after this many epochs without a better validation log loss. (default: 1)
        seed (int): Initialisation and shuffling. (default: 0)
    """

    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    position_bias: Literal["additive", "ipw", "none"] = "additive"
    max_position: int = Field(20, gt=0)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    batch_size: int = Field(2048, gt=0)
    epochs: int = Field(8, gt=0)
    patience: int = Field(1, ge=0)
    seed: int = 0


class RankerMLP(nn.Module):
    """``features [n, N_FEATURES] -> logit [n]`` (the ``position`` column is read only by the bias).

    Args:
        config (RankerConfig): Architecture.
        mean, std (torch.Tensor): ``[N_FEATURES]`` standardisation of the inputs (training statistics).
    """

    def __init__(self, config: RankerConfig, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        keep = torch.ones(N_FEATURES, dtype=torch.bool)
        keep[POSITION] = False
        self.register_buffer("keep", keep.nonzero().ravel())
        self.register_buffer("mean", mean[self.keep].float().clone())
        self.register_buffer("std", std[self.keep].float().clamp_min(1e-6).clone())
        layers: list[nn.Module] = []
        width = int(self.keep.numel())
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.position_bias = nn.Parameter(torch.zeros(config.max_position))
        self.use_position = config.position_bias == "additive"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.index_select(1, self.keep) - self.mean) / self.std
        logit = self.mlp(x).squeeze(-1)
        if self.use_position:
            pos = features[:, POSITION].round().long().clamp(0, self.config.max_position - 1)
            logit = logit + self.position_bias[pos] - self.position_bias[0]
        return logit


def position_propensity(positions: np.ndarray, clicked: np.ndarray, max_position: int) -> np.ndarray:
    """Click rate of each slot relative to slot 0 (``[max_position]``, monotone non-increasing, <= 1)."""
    pos = np.minimum(positions, max_position - 1)
    shown = np.bincount(pos, minlength=max_position).astype(np.float64)
    clicks = np.bincount(pos[clicked], minlength=max_position).astype(np.float64)
    ctr = (clicks + 1.0) / (shown + 10.0)
    prop = np.minimum.accumulate(np.minimum(ctr / ctr[0], 1.0))
    return np.maximum(prop, 1e-3)


def fit_ranker(
    config: RankerConfig,
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray | None = None,
    valid_y: np.ndarray | None = None,
    log: bool = False,
) -> tuple[RankerMLP, dict[str, float]]:
    """Train with early stopping on validation log loss (at the logged positions).

    Without ``valid_x`` it trains exactly ``config.epochs`` epochs and keeps the last weights: the
    refit on every logged day, for the epochs a run with validation selected.

    Returns:
        (RankerMLP, dict): the best model (eval mode) and ``epochs``, ``best_epoch``,
        ``valid_logloss`` (NaN without validation), ``train_seconds``.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()
    x = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
    y = torch.from_numpy(train_y.astype(np.float32))
    mean, std = x.mean(0), x.std(0)
    model = RankerMLP(config, mean, std)
    if config.position_bias == "ipw":
        prop = position_propensity(train_x[:, POSITION].astype(np.int64), train_y.astype(bool), config.max_position)
        pos = np.minimum(train_x[:, POSITION].astype(np.int64), config.max_position - 1)
        # E[click / propensity] = P(click at slot 0): the soft targets undo the examination effect
        y = y / torch.from_numpy(prop[pos].astype(np.float32))
        # the MLP must not see the position when the targets already undo its effect
        x = x.clone()
        x[:, POSITION] = 0.0
    w = torch.ones(len(y))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    vx = None if valid_x is None else torch.from_numpy(np.ascontiguousarray(valid_x, dtype=np.float32))
    if vx is not None and config.position_bias == "ipw":
        vx = vx.clone()
        vx[:, POSITION] = 0.0
    best, best_state, best_epoch, bad, epoch = math.inf, None, -1, 0, 0
    for epoch in range(config.epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(len(y)))
        total = 0.0
        for lo in range(0, len(y), config.batch_size):
            idx = perm[lo : lo + config.batch_size]
            loss = (loss_fn(model(x[idx]), y[idx]) * w[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        if vx is None:  # a refit: no selection, the last epoch is the model
            best, best_epoch = math.nan, epoch
            if log:
                print(f"ranker refit epoch {epoch}: train loss {total / len(y):.4f}")
            continue
        valid = log_loss(valid_y, predict_logits(model, vx))
        if log:
            print(f"ranker epoch {epoch}: train loss {total / len(y):.4f}, valid log loss {valid:.4f}")
        if valid < best - 1e-5:
            best, best_epoch, bad = valid, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad > config.patience:
                break
    if vx is not None:
        assert best_state is not None
        model.load_state_dict(best_state)
    model.eval()
    info = {
        "epochs": epoch + 1, "best_epoch": best_epoch, "valid_logloss": best,
        "train_seconds": time.perf_counter() - t0,
    }  # fmt: skip
    return model, info


@torch.no_grad()
def predict_logits(model: RankerMLP, features: np.ndarray | torch.Tensor, batch: int = 65_536) -> np.ndarray:
    """Logits of a feature matrix, in batches (float64 numpy)."""
    model.eval()
    x = features if isinstance(features, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    return np.concatenate([model(x[lo : lo + batch]).double().numpy() for lo in range(0, len(x), batch)] or [np.zeros(0)])


def log_loss(y: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of labels ``y`` given logits (numerically stable)."""
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties get the average rank)."""
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    s = np.asarray(scores)[order]
    ranks = np.empty(len(s))
    # average ranks of ties
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
