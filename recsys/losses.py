"""Training losses for embedding recommenders (BPR, sampled softmax) and LightGCN's L2 term.

Every loss returns *per-example* values when ``reduction="none"`` so a distributed trainer can
normalise by the global batch size (``sum * world_size / global_batch``) and get, after DDP's
gradient averaging, exactly the gradient of the single-process mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def bpr_loss(
    user_emb: torch.Tensor,
    pos_emb: torch.Tensor,
    neg_emb: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Bayesian personalised ranking: ``-log sigmoid(u.p - u.n)``, averaged over negatives.

    Args:
        user_emb (torch.Tensor): ``[B, d]`` user representations.
        pos_emb (torch.Tensor): ``[B, d]`` representations of each user's positive item.
        neg_emb (torch.Tensor): ``[B, d]`` one negative per pair, or ``[B, n, d]`` ``n`` negatives.
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"`` (per pair). (default: ``"mean"``)
    """
    pos = (user_emb * pos_emb).sum(-1)
    if neg_emb.dim() == 2:
        neg = (user_emb * neg_emb).sum(-1)
        per_pair = F.softplus(neg - pos)  # softplus(x) = -log sigmoid(-x), numerically stable
    else:
        neg = torch.einsum("bd,bnd->bn", user_emb, neg_emb)
        per_pair = F.softplus(neg - pos[:, None]).mean(-1)
    return _reduce(per_pair, reduction)


def sampled_softmax_loss(
    user_emb: torch.Tensor,
    pos_emb: torch.Tensor,
    candidate_emb: torch.Tensor,
    temperature: float = 0.1,
    exclude: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Softmax cross-entropy of each positive against a shared set of candidate negatives.

    ``logits = [u.p, u.c_1, ..., u.c_m] / temperature``; the loss is ``-log softmax(logits)[0]``.
    Candidates are typically the other positives of the (global) batch plus uniformly sampled
    items; many negatives per pair is what makes it converge in far fewer epochs than BPR.

    Args:
        user_emb (torch.Tensor): ``[B, d]`` user representations.
        pos_emb (torch.Tensor): ``[B, d]`` each user's positive item.
        candidate_emb (torch.Tensor): ``[m, d]`` negatives shared by the whole batch.
        temperature (float): Logit scale ``1/temperature``; 0.1-0.2 with L2-normalised vectors.
            (default: 0.1)
        exclude (torch.Tensor, optional): ``[B, m]`` bool, ``True`` where a candidate must not act as
            a negative for that row (it *is* the row's positive, e.g. the row's own in-batch column
            or a duplicate of its item). (default: None)
        reduction (str): ``"mean"``, ``"sum"`` or ``"none"``. (default: ``"mean"``)
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # Scale the [B, d] users, not the [B, m] logits, and never concatenate the positive column:
    # on CPU every extra pass over the B x m logits costs as much as the matmul itself.
    scaled_user = user_emb / temperature
    pos = (scaled_user * pos_emb).sum(-1)
    neg = scaled_user @ candidate_emb.T
    if exclude is not None:
        neg = neg.masked_fill(exclude, float("-inf"))
    per_pair = torch.logaddexp(pos, torch.logsumexp(neg, dim=1)) - pos
    return _reduce(per_pair, reduction)


def l2_regularisation(*embeddings: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """LightGCN's regulariser: ``0.5 * sum ||e||^2`` per row over the given ``[B, d]`` ego embeddings.

    Applied to the batch's *layer-0* embeddings only (not the whole table), as in LightGCN.
    """
    per_row = sum(0.5 * e.pow(2).sum(-1) for e in embeddings)
    return _reduce(per_row, reduction)  # type: ignore[arg-type]
