"""Losses against naive implementations, and a toy on which they must decrease."""

import pytest
import torch
import torch.nn.functional as F

from recsys.losses import bpr_loss, l2_regularisation, sampled_softmax_loss


def _emb(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def test_bpr_matches_naive_value_and_gradient():
    u, p, n = _emb(6, 4, seed=0), _emb(6, 4, seed=1), _emb(6, 4, seed=2)
    ours = bpr_loss(u, p, n)
    naive = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    torch.testing.assert_close(ours, naive)
    g1 = torch.autograd.grad(ours, (u, p, n))
    g2 = torch.autograd.grad(naive, (u, p, n))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_bpr_many_negatives_is_mean_over_negatives():
    u, p, n = _emb(5, 3, seed=0), _emb(5, 3, seed=1), _emb(5, 4, 3, seed=2)
    per = torch.stack([bpr_loss(u, p, n[:, j], reduction="none") for j in range(4)], 1).mean(1)
    torch.testing.assert_close(bpr_loss(u, p, n, reduction="none"), per)


@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_sampled_softmax_matches_cross_entropy(temperature):
    u, p, c = _emb(7, 4, seed=0), _emb(7, 4, seed=1), _emb(9, 4, seed=2)
    exclude = torch.zeros(7, 9, dtype=torch.bool)
    exclude[0, 3] = exclude[4, 0] = True
    ours = sampled_softmax_loss(u, p, c, temperature, exclude)
    logits = torch.cat([(u * p).sum(1, keepdim=True), (u @ c.T).masked_fill(exclude, -1e30)], 1) / temperature
    naive = F.cross_entropy(logits, torch.zeros(7, dtype=torch.long))
    torch.testing.assert_close(ours, naive)
    for a, b in zip(torch.autograd.grad(ours, (u, p, c)), torch.autograd.grad(naive, (u, p, c))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("chunk_rows", [1, 3, 256])
def test_fused_softmax_matches_the_dense_reference(chunk_rows):
    # Candidate ids with duplicates; rows whose positive is among the candidates (once or
    # twice) and rows without a hit.
    u, p, c = _emb(7, 4, seed=3), _emb(7, 4, seed=4), _emb(9, 4, seed=5)
    candidate_ids = torch.tensor([5, 2, 9, 2, 7, 1, 0, 3, 8])
    positive_ids = torch.tensor([2, 4, 9, 3, 2, 11, 0])
    exclude = candidate_ids[None, :] == positive_ids[:, None]
    assert exclude.sum() == 7
    dense = sampled_softmax_loss(u, p, c, 0.3, exclude, reduction="none")
    fused = sampled_softmax_loss(u, p, c, 0.3, reduction="none", candidate_ids=candidate_ids,
                                 positive_ids=positive_ids, chunk_rows=chunk_rows)
    torch.testing.assert_close(fused, dense)
    weights = torch.arange(1.0, 8.0, dtype=torch.float64)  # a non-uniform upstream gradient
    g_dense = torch.autograd.grad((dense * weights).sum(), (u, p, c))
    g_fused = torch.autograd.grad((fused * weights).sum(), (u, p, c))
    for a, b in zip(g_fused, g_dense):
        torch.testing.assert_close(a, b)


def test_fused_softmax_all_candidates_excluded_leaves_the_positive_alone():
    u, p, c = _emb(2, 3, seed=6), _emb(2, 3, seed=7), _emb(3, 3, seed=8)
    same = torch.tensor([4, 4, 4])
    per = sampled_softmax_loss(u, p, c, 0.5, reduction="none", candidate_ids=same, positive_ids=torch.tensor([4, 1]))
    assert per[0] == 0  # -log softmax over the positive alone
    with pytest.raises(ValueError, match="together"):
        sampled_softmax_loss(u, p, c, candidate_ids=same)


def test_accidental_hits_lists_every_match():
    from recsys.losses import accidental_hits

    rows, cols = accidental_hits(torch.tensor([3, 1, 3, 2]), torch.tensor([3, 0, 2, 1]))
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (0, 2), (2, 3), (3, 1)]
    assert rows.tolist() == sorted(rows.tolist())


def test_excluded_candidate_has_no_influence():
    u, p, c = _emb(3, 4, seed=0), _emb(3, 4, seed=1), _emb(5, 4, seed=2)
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[:, 2] = True
    a = sampled_softmax_loss(u, p, c, 0.5, exclude, reduction="none")
    b = sampled_softmax_loss(u, p, c[[0, 1, 3, 4]], 0.5, reduction="none")
    torch.testing.assert_close(a, b)


def test_reductions_and_l2():
    u, p, c = _emb(4, 3, seed=0), _emb(4, 3, seed=1), _emb(6, 3, seed=2)
    per = sampled_softmax_loss(u, p, c, reduction="none")
    torch.testing.assert_close(sampled_softmax_loss(u, p, c, reduction="sum"), per.sum())
    torch.testing.assert_close(l2_regularisation(u, p, reduction="sum"), 0.5 * (u.pow(2).sum() + p.pow(2).sum()))
    with pytest.raises(ValueError):
        sampled_softmax_loss(u, p, c, reduction="avg")
    with pytest.raises(ValueError):
        sampled_softmax_loss(u, p, c, temperature=0)


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_loss_decreases_on_a_toy(loss):
    # two clusters of users and items; every user likes the items of its own cluster
    torch.manual_seed(0)
    users = torch.nn.Parameter(torch.randn(8, 4) * 0.1)
    items = torch.nn.Parameter(torch.randn(8, 4) * 0.1)
    pairs_u = torch.arange(8).repeat_interleave(4)
    pairs_i = (pairs_u // 4) * 4 + torch.arange(4).repeat(8)
    neg_i = (pairs_i + 4) % 8
    opt = torch.optim.Adam([users, items], lr=0.05)
    history = []
    for _ in range(50):
        if loss == "bpr":
            value = bpr_loss(users[pairs_u], items[pairs_i], items[neg_i])
        else:
            exclude = torch.arange(8)[None, :] == pairs_i[:, None]
            value = sampled_softmax_loss(F.normalize(users[pairs_u], dim=1), F.normalize(items[pairs_i], dim=1),
                                         F.normalize(items, dim=1), 0.2, exclude)
        opt.zero_grad()
        value.backward()
        opt.step()
        history.append(float(value.detach()))
    assert history[-1] < 0.5 * history[0]
