"""Tests of recsys.topk: the C++ ops against the plain-torch reference, the tie rule, the compact path.

The first test run compiles the extension (~20 s to 2 min, then cached under
~/.cache/feedrec/torch_extensions); this machine has g++ and ninja, so the compiled op must load.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys import topk


@pytest.fixture(scope="module")
def cpp():
    backend = topk.get_topk_backend("cpp")
    assert backend.name == "cpp"
    return backend


@pytest.fixture(scope="module")
def reference():
    return topk.TorchTopKBackend()


def random_case(n_users, n_items, dim, seed, max_excluded=40):
    """Gaussian vectors and an unsorted CSR exclusion list with duplicates."""
    rng = np.random.default_rng(seed)
    users = torch.from_numpy((rng.normal(size=(n_users, dim)) / np.sqrt(max(dim, 1))).astype(np.float32))
    items = torch.from_numpy(rng.normal(size=(n_items, dim)).astype(np.float32))
    rows = [rng.integers(0, n_items, size=rng.integers(0, max_excluded + 1)) for _ in range(n_users)]
    indptr = torch.from_numpy(np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64))
    indices = torch.from_numpy(np.concatenate(rows).astype(np.int64))
    return users, items, indptr, indices


def assert_same_topk(got, want):
    got_indices, got_scores = got
    want_indices, want_scores = want
    assert got_indices.dtype == torch.long and got_scores.dtype == torch.float32
    assert torch.equal(got_indices, want_indices)
    assert torch.allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)


def test_extension_is_cached_under_the_feedrec_cache(cpp):
    assert cpp.library.name == "feedrec_topk.so"
    assert cpp.library.exists()
    assert topk.cache_root() in cpp.library.parents


@pytest.mark.parametrize("n_users", [1, 3, 8, 64])
@pytest.mark.parametrize("dim", [64, 17])
@pytest.mark.parametrize("k", [1, 20])
def test_cpp_matches_torch_reference(cpp, reference, n_users, dim, k):
    users, items, indptr, indices = random_case(n_users, 3000, dim, seed=n_users * 100 + dim + k)
    got = cpp.score_topk(users, items, k, indptr, indices)
    want = reference.score_topk(users, items, k, indptr, indices)
    assert_same_topk(got, want)
    # Excluded items never come back.
    for user in range(n_users):
        excluded = set(indices[indptr[user] : indptr[user + 1]].tolist())
        assert not excluded & set(got[0][user].tolist())


@pytest.mark.parametrize("n_users", [1, 64])
def test_large_item_set_split_across_threads_matches_reference(cpp, reference, n_users):
    # 40k items are cut into several parts whose heaps are merged: the merge must keep the order.
    users, items, indptr, indices = random_case(n_users, 40_000, 64, seed=7, max_excluded=300)
    assert_same_topk(
        cpp.score_topk(users, items, 50, indptr, indices), reference.score_topk(users, items, 50, indptr, indices)
    )


@pytest.mark.parametrize("n_users", [1, 64])
def test_k_larger_than_remaining_items_pads_with_minus_one(cpp, reference, n_users):
    users, items, _, _ = random_case(n_users, 30, 8, seed=3)
    # Every user excludes items 0..24 (user 0 twice over), leaving 5 items for k = 12.
    rows = [np.r_[np.arange(25), np.arange(25)] if u == 0 else np.arange(24, -1, -1) for u in range(n_users)]
    indptr = torch.tensor(np.r_[0, np.cumsum([len(r) for r in rows])], dtype=torch.long)
    indices = torch.tensor(np.concatenate(rows), dtype=torch.long)
    got = cpp.score_topk(users, items, 12, indptr, indices)
    assert_same_topk(got, reference.score_topk(users, items, 12, indptr, indices))
    assert (got[0][:, :5] >= 25).all()
    assert (got[0][:, 5:] == -1).all() and torch.isneginf(got[1][:, 5:]).all()


def test_k_larger_than_item_count_and_zero_k(cpp, reference):
    users, items, indptr, indices = random_case(2, 7, 5, seed=4, max_excluded=0)
    got = cpp.score_topk(users, items, 10, indptr, indices)
    assert_same_topk(got, reference.score_topk(users, items, 10, indptr, indices))
    assert (got[0][:, 7:] == -1).all()
    empty = cpp.score_topk(users, items, 0, indptr, indices)
    assert empty[0].shape == (2, 0) and empty[1].shape == (2, 0)


@pytest.mark.parametrize("backend_name", ["cpp", "torch"])
def test_tie_rule_lower_item_index_first(cpp, reference, backend_name):
    backend = cpp if backend_name == "cpp" else reference
    # Scores of user [1]: 1, 2, 2, 1, 2, 0 -> the three 2s in index order, then the 1s.
    items = torch.tensor([[1.0], [2.0], [2.0], [1.0], [2.0], [0.0]])
    users = torch.tensor([[1.0]])
    no_exclusions = (torch.zeros(2, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    indices, scores = backend.score_topk(users, items, 4, *no_exclusions)
    assert indices.tolist() == [[1, 2, 4, 0]]
    assert scores.tolist() == [[2.0, 2.0, 2.0, 1.0]]
    # Boundary tie: only two of the three 2s fit, the lower indices win.
    assert backend.score_topk(users, items, 2, *no_exclusions)[0].tolist() == [[1, 2]]
    # With item 2 excluded, 4 moves up.
    exclude = (torch.tensor([0, 1]), torch.tensor([2]))
    assert backend.score_topk(users, items, 3, *exclude)[0].tolist() == [[1, 4, 0]]


@pytest.mark.parametrize("n_users", [1, 64])
def test_tie_rule_with_massive_ties_across_parts(cpp, reference, n_users):
    # Small integer vectors give exact, order-independent dot products and thousands of ties,
    # spread over every item part; the merged result must still be in index order.
    rng = np.random.default_rng(11)
    users = torch.from_numpy(rng.integers(-1, 2, size=(n_users, 16)).astype(np.float32))
    items = torch.from_numpy(rng.integers(-1, 2, size=(30_000, 16)).astype(np.float32))
    no_exclusions = (torch.zeros(n_users + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    got = cpp.score_topk(users, items, 100, *no_exclusions)
    assert_same_topk(got, reference.score_topk(users, items, 100, *no_exclusions))
    scores, indices = got[1], got[0]
    tied = scores[:, 1:] == scores[:, :-1]
    assert tied.any()
    assert (indices[:, 1:][tied] > indices[:, :-1][tied]).all()


def test_result_does_not_depend_on_thread_count(cpp):
    users, items, indptr, indices = random_case(5, 20_000, 32, seed=5, max_excluded=100)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = cpp.score_topk(users, items, 30, indptr, indices)
        torch.set_num_threads(max(2, previous))
        multi = cpp.score_topk(users, items, 30, indptr, indices)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(single[0], multi[0])
    assert torch.allclose(single[1], multi[1], rtol=1e-6, atol=1e-6)


def test_public_api_accepts_numpy_scipy_and_tuples(cpp):
    users, items, indptr, indices = random_case(4, 500, 16, seed=6)
    rows = np.repeat(np.arange(4), np.diff(indptr.numpy()))
    csr = sp.csr_matrix((np.ones(len(rows)), (rows, indices.numpy())), shape=(4, 500))  # duplicates summed
    got_csr = topk.score_topk(users.numpy(), items.numpy(), 10, exclude=csr, backend=cpp)
    got_tuple = topk.score_topk(users, items, 10, exclude=(indptr.numpy(), indices.numpy()), backend=cpp)
    assert_same_topk(got_csr, got_tuple)
    # A stored zero in the CSR matrix is not an exclusion; a stored one is.
    best = int(topk.score_topk(users[1], items, 1, backend=cpp)[0][0])
    for value, excluded in ((0.0, False), (1.0, True)):
        single = sp.csr_matrix((np.array([value]), np.array([best]), np.array([0, 0, 1, 1, 1])), shape=(4, 500))
        assert single.nnz == 1
        top = int(topk.score_topk(users, items, 1, exclude=single, backend=cpp)[0][1, 0])
        assert (top != best) == excluded
    # One user as a 1-D vector gives 1-D results.
    one_indices, one_scores = topk.score_topk(users[0].numpy(), items, 10, backend=cpp)
    assert one_indices.shape == (10,) and one_scores.shape == (10,)
    assert torch.equal(one_indices, topk.score_topk(users[:1], items, 10, backend=cpp)[0][0])


def test_public_api_rejects_bad_input(cpp):
    users, items, _, _ = random_case(2, 50, 8, seed=8)
    with pytest.raises(ValueError, match="dim"):
        topk.score_topk(users, items[:, :4], 5, backend=cpp)
    with pytest.raises(ValueError, match="rows"):
        topk.score_topk(users, items, 5, exclude=sp.csr_matrix((3, 50)), backend=cpp)
    with pytest.raises(RuntimeError, match="out of range"):
        topk.score_topk(users, items, 5, exclude=(np.array([0, 1, 1]), np.array([50])), backend=cpp)
    with pytest.raises(RuntimeError, match="exclude_indptr"):
        topk.score_topk(users, items, 5, exclude=(np.array([0, 2, 1]), np.array([1])), backend=cpp)


def clustered_embeddings(n_items, n_users, dim, seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(256, dim)).astype(np.float32)
    items = centers[rng.integers(0, 256, n_items)] + 0.5 * rng.normal(size=(n_items, dim)).astype(np.float32)
    users = centers[rng.integers(0, 256, n_users)] + 0.5 * rng.normal(size=(n_users, dim)).astype(np.float32)
    return torch.from_numpy(users), torch.from_numpy(items)


@pytest.mark.parametrize("n_users", [1, 64])
def test_compact_recall_on_clustered_embeddings(cpp, n_users):
    users, items = clustered_embeddings(100_000, n_users, 64, seed=9)
    compact = topk.quantize_items(items)
    exact_indices, _ = topk.score_topk(users, items, 20, backend=cpp)
    got_indices, got_scores = topk.score_topk_compact(users, compact, 20, oversample=4, backend=cpp)
    recall = np.mean([len(set(g.tolist()) & set(e.tolist())) / 20 for g, e in zip(got_indices, exact_indices)])
    assert recall >= 0.99
    # The returned scores are exact fp32 scores, in rank order.
    exact_scores = (users[:, None, :] * items[got_indices]).sum(-1)
    assert torch.allclose(got_scores, exact_scores, rtol=1e-4, atol=1e-4)
    assert (got_scores[:, 1:] <= got_scores[:, :-1]).all()


@pytest.mark.parametrize("n_users", [1, 64])
@pytest.mark.parametrize("backend_name", ["cpp", "torch"])
def test_compact_is_exact_when_candidates_cover_all_items(cpp, reference, n_users, backend_name):
    backend = cpp if backend_name == "cpp" else reference
    users, items, indptr, indices = random_case(n_users, 400, 17, seed=10)
    compact = topk.quantize_items(items)
    got = backend.score_topk_compact(users, compact, 15, 400, indptr, indices)
    assert_same_topk(got, reference.score_topk(users, items, 15, indptr, indices))


@pytest.fixture(params=["default", "portable"])
def compact_kernel(request, cpp, monkeypatch):
    """Runs a test with the CPU's best int8 kernel and again with the portable one forced."""
    if request.param == "portable":
        monkeypatch.setenv("FEEDREC_TOPK_ISA", "portable")
    else:
        monkeypatch.delenv("FEEDREC_TOPK_ISA", raising=False)
    return cpp.compact_kernel


def test_compact_kernel_names_the_isa(cpp, compact_kernel, request):
    if request.node.callspec.params["compact_kernel"] == "portable":
        assert compact_kernel == "portable"
    else:
        assert compact_kernel in ("avx512-vnni", "portable")


@pytest.mark.parametrize(
    ("n_users", "n_items", "dim", "k", "oversample"),
    # partial last blocks (n not a multiple of 16), dims not a multiple of 4, 4-user tiles + rest,
    # enough items to split across threads, k beyond the available items
    [(1, 1000, 64, 20, 4), (7, 1003, 61, 10, 3), (64, 20_011, 64, 20, 4), (3, 37, 5, 50, 2), (70, 100, 8, 5, 1)],
)
def test_compact_op_matches_torch_twin_bit_for_bit(cpp, reference, compact_kernel, n_users, n_items, dim, k, oversample):
    users, items, indptr, indices = random_case(n_users, n_items, dim, seed=n_items + dim)
    compact = topk.quantize_items(items)
    got = cpp.score_topk_compact(users, compact, k, oversample, indptr, indices)
    want = reference.score_topk_compact(users, compact, k, oversample, indptr, indices)
    assert torch.equal(got[0], want[0])
    assert torch.allclose(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_compact_candidates_come_from_the_int8_ranking(cpp, reference):
    # Item 1 wins exactly (1.000001 vs 1.0) but both items quantise to the same codes, so the int8
    # scores tie and the tie rule picks item 0: with one candidate both the op and the twin return
    # item 0 (with its exact score). The compact path is approximate by design, and this shows it.
    items = torch.tensor([[1.0, 0.0], [1.0, 0.001]])
    users = torch.tensor([[1.0, 0.001]])
    compact = topk.quantize_items(items)
    approx = topk.quantize_users(users) @ compact.codes.float().T * compact.scales
    assert approx[0, 0] == approx[0, 1]
    no_exclusions = (torch.tensor([0, 0]), torch.tensor([], dtype=torch.long))
    assert reference.score_topk(users, items, 1, *no_exclusions)[0].tolist() == [[1]]
    for backend in (cpp, reference):
        got, scores = backend.score_topk_compact(users, compact, 1, 1, *no_exclusions)
        assert got.tolist() == [[0]] and scores.tolist() == [[1.0]]
        assert backend.score_topk_compact(users, compact, 1, 2, *no_exclusions)[0].tolist() == [[1]]


def test_quantize_items_round_trip():
    _, items = clustered_embeddings(1000, 1, 33, seed=12)
    items[3] = 0.0
    compact = topk.quantize_items(items)
    assert compact.codes.dtype == torch.int8 and compact.scales.shape == (1000,)
    restored = compact.codes.float() * compact.scales[:, None]
    assert torch.allclose(restored, items, atol=float(compact.scales.max()) / 2 + 1e-6)
    assert (compact.codes[3] == 0).all()
    # packed[b, g, l, c] = codes[16 b + l, 4 g + c] + 128, zero codes (128) in the padding
    assert compact.packed.dtype == torch.uint8 and compact.packed.shape == (63, 9, 16, 4)
    unpacked = compact.packed.permute(0, 2, 1, 3).reshape(63 * 16, 36).to(torch.int16) - 128
    assert torch.equal(unpacked[:1000, :33], compact.codes.to(torch.int16))
    assert (unpacked[1000:] == 0).all() and (unpacked[:, 33:] == 0).all()
    assert compact.nbytes == compact.packed.numel() + 4 * 1000


def test_compact_op_rejects_a_row_major_code_matrix(cpp):
    users, items, indptr, indices = random_case(2, 50, 8, seed=15)
    compact = topk.quantize_items(items)
    with pytest.raises(RuntimeError, match="item_packed must be"):
        torch.ops.feedrec.score_topk_compact(
            users, compact.codes, compact.scales, compact.items, 5, 2, indptr, indices
        )
    with pytest.raises(RuntimeError, match=r"item_packed must have shape \[ceil"):
        torch.ops.feedrec.score_topk_compact(
            users, compact.packed[:-1], compact.scales, compact.items, 5, 2, indptr, indices
        )


def test_opcheck_score_topk(cpp):
    users, items, indptr, indices = random_case(3, 200, 16, seed=13)
    torch.library.opcheck(torch.ops.feedrec.score_topk.default, (users, items, 7, indptr, indices))


def test_opcheck_score_topk_compact(cpp):
    users, items, indptr, indices = random_case(3, 200, 16, seed=14)
    compact = topk.quantize_items(items)
    torch.library.opcheck(
        torch.ops.feedrec.score_topk_compact.default,
        (users, compact.packed, compact.scales, compact.items, 7, 3, indptr, indices),
    )


def test_env_var_overrides_preference(cpp, monkeypatch):
    monkeypatch.setenv(topk.BACKEND_ENV, "torch")
    assert topk.get_topk_backend("cpp").name == "torch"
    monkeypatch.setenv(topk.BACKEND_ENV, "gpu")
    with pytest.raises(ValueError, match=topk.BACKEND_ENV):
        topk.get_topk_backend()


def test_build_failure_falls_back_to_torch_with_one_log_line(monkeypatch, caplog):
    def broken_build(verbose=False):
        raise RuntimeError("Error building extension 'feedrec_topk'\nc++: fatal error: no input files")

    monkeypatch.setattr(topk.backends, "build_extension", broken_build)
    monkeypatch.setattr(topk.backends, "_backends", {})
    monkeypatch.delenv(topk.BACKEND_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="recsys.topk"):
        backend = topk.get_topk_backend("auto")
    assert backend.name == "torch"
    assert len(caplog.records) == 1 and "failed to build" in caplog.records[0].getMessage()
    with pytest.raises(RuntimeError, match="requested"):
        topk.get_topk_backend("cpp")


def test_cli_build_prints_the_library_path(cpp, capsys):
    assert topk.main(["build"]) == 0
    assert capsys.readouterr().out.strip() == str(cpp.library)


@pytest.mark.parametrize("n_users", [3, 300])
def test_reference_keeps_the_lowest_index_ties_like_a_full_stable_sort(reference, n_users):
    # Popularity-like scores: a few distinct values, so most rows have a tie at the k-th score that
    # does not fit. The tie refill (issue 12 item 8: evaluation now ranks with this reference) must
    # give exactly what a full stable sort gives, including with exclusions.
    rng = np.random.default_rng(23)
    users = torch.ones((n_users, 1))
    items = torch.from_numpy(rng.poisson(2.0, size=(5_000, 1)).astype(np.float32))
    rows = [np.unique(rng.integers(0, 5_000, size=30)) for _ in range(n_users)]
    indptr = torch.from_numpy(np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64))
    indices = torch.from_numpy(np.concatenate(rows).astype(np.int64))
    got_indices, got_scores = reference.score_topk(users, items, 20, indptr, indices)
    for u in range(n_users):
        scores = items[:, 0].clone()
        scores[torch.from_numpy(rows[u])] = float("-inf")
        want_scores, want_indices = torch.sort(scores, descending=True, stable=True)
        assert got_indices[u].tolist() == want_indices[:20].tolist()
        assert got_scores[u].tolist() == want_scores[:20].tolist()


def test_masked_topk_is_the_reference_on_a_score_block(cpp):
    users, items, indptr, indices = random_case(16, 500, 8, seed=31)
    block = users @ items.T
    got = topk.masked_topk(block.clone(), 25, indptr, indices)
    assert_same_topk(got, cpp.score_topk(users, items, 25, indptr, indices))
