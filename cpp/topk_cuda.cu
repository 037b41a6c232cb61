// CUDA kernels of feedrec::score_topk and feedrec::score_topk_compact (schema in topk_ops.cpp).
// Compiled only where torch has CUDA and nvcc is found (see recsys/topk/build.py); the CPU build never
// needs nvcc.
//
// Composed from ATen ops (cuBLAS GEMM per user chunk, index_put_ for exclusions, a stable sort for
// the tie rule) rather than a hand-written kernel: on a GPU the [chunk, m] score block is cheap,
// and the stable descending sort gives exactly the CPU rank order (higher score first, lower item
// index on ties) without a second pass. A fused select kernel is the next step if it ever shows up
// in a profile.
#include <ATen/ATen.h>
#include <ATen/DeviceGuard.h>
#include <torch/library.h>

#include <limits>

namespace feedrec {
namespace {

constexpr double kNegInfD = -std::numeric_limits<double>::infinity();
// Bounds the [chunk, m] score block to ~256 MiB of fp32.
constexpr int64_t kScoresPerChunk = int64_t{1} << 26;

void check_exclusions(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& users) {
  TORCH_CHECK(indptr.device() == users.device() && indices.device() == users.device(),
              "score_topk: exclude tensors must be on the same device as user_vectors");
  TORCH_CHECK(indptr.scalar_type() == at::kLong && indices.scalar_type() == at::kLong,
              "score_topk: exclude_indptr/exclude_indices must be int64");
  TORCH_CHECK(indptr.dim() == 1 && indptr.size(0) == users.size(0) + 1,
              "score_topk: exclude_indptr must have shape [n_users + 1]");
}

// Writes -inf over the excluded (user, item) pairs of users [u0, u0 + nu).
void mask_excluded(at::Tensor& scores, const at::Tensor& indptr, const at::Tensor& indices, int64_t u0,
                   int64_t nu) {
  const at::Tensor counts = indptr.slice(0, u0 + 1, u0 + nu + 1) - indptr.slice(0, u0, u0 + nu);
  const at::Tensor rows = at::repeat_interleave(at::arange(nu, indptr.options()), counts);
  if (rows.numel() == 0) return;
  const int64_t begin = indptr[u0].item<int64_t>();
  const int64_t end = indptr[u0 + nu].item<int64_t>();
  const at::Tensor cols = indices.slice(0, begin, end);
  scores.index_put_({rows, cols}, at::scalar_tensor(kNegInfD, scores.options()));
}

// Top-k of each row in rank order; -inf entries become padding (index -1).
void select_rows(const at::Tensor& scores, const at::Tensor& item_ids, int64_t k, at::Tensor out_indices,
                 at::Tensor out_scores) {
  const int64_t keep = std::min<int64_t>(k, scores.size(1));
  if (keep == 0) return;
  // Stable: among equal scores the earlier column (lower item index, item_ids is ascending
  // per row) stays first.
  auto sorted = at::sort(scores, /*stable=*/true, /*dim=*/1, /*descending=*/true);
  at::Tensor top_scores = std::get<0>(sorted).narrow(1, 0, keep);
  at::Tensor top_indices = item_ids.gather(1, std::get<1>(sorted).narrow(1, 0, keep));
  top_indices.masked_fill_(top_scores == kNegInfD, -1);
  out_indices.narrow(1, 0, keep).copy_(top_indices);
  out_scores.narrow(1, 0, keep).copy_(top_scores);
}

std::tuple<at::Tensor, at::Tensor> score_topk_cuda(const at::Tensor& user_vectors, const at::Tensor& item_matrix,
                                                   int64_t k, const at::Tensor& exclude_indptr,
                                                   const at::Tensor& exclude_indices) {
  TORCH_CHECK(user_vectors.dim() == 2 && item_matrix.dim() == 2, "score_topk: inputs must be 2-D");
  TORCH_CHECK(user_vectors.scalar_type() == at::kFloat && item_matrix.scalar_type() == at::kFloat,
              "score_topk: user_vectors and item_matrix must be float32");
  TORCH_CHECK(user_vectors.size(1) == item_matrix.size(1), "score_topk: dimension mismatch");
  TORCH_CHECK(k >= 0, "score_topk: k must be >= 0");
  check_exclusions(exclude_indptr, exclude_indices, user_vectors);
  at::OptionalDeviceGuard guard(at::device_of(user_vectors));
  const int64_t n_users = user_vectors.size(0), n_items = item_matrix.size(0);
  at::Tensor out_indices = at::full({n_users, k}, -1, user_vectors.options().dtype(at::kLong));
  at::Tensor out_scores = at::full({n_users, k}, kNegInfD, user_vectors.options());
  const int64_t chunk = std::max<int64_t>(1, kScoresPerChunk / std::max<int64_t>(1, n_items));
  const at::Tensor item_ids = at::arange(n_items, exclude_indptr.options());
  for (int64_t u0 = 0; u0 < n_users; u0 += chunk) {
    const int64_t nu = std::min(chunk, n_users - u0);
    at::Tensor scores = at::mm(user_vectors.narrow(0, u0, nu), item_matrix.t());
    mask_excluded(scores, exclude_indptr, exclude_indices, u0, nu);
    select_rows(scores, item_ids.expand({nu, n_items}), k, out_indices.narrow(0, u0, nu),
                out_scores.narrow(0, u0, nu));
  }
  return {out_indices, out_scores};
}

std::tuple<at::Tensor, at::Tensor> score_topk_compact_cuda(
    const at::Tensor& user_vectors, const at::Tensor& item_packed, const at::Tensor& item_scales,
    const at::Tensor& item_matrix, int64_t k, int64_t oversample, const at::Tensor& exclude_indptr,
    const at::Tensor& exclude_indices) {
  TORCH_CHECK(item_packed.scalar_type() == at::kByte && item_scales.scalar_type() == at::kFloat,
              "score_topk_compact: item_packed must be uint8 and item_scales float32");
  TORCH_CHECK(user_vectors.dim() == 2 && item_matrix.dim() == 2 && item_packed.dim() == 4,
              "score_topk_compact: user_vectors/item_matrix must be 2-D and item_packed 4-D");
  const int64_t n_items = item_matrix.size(0), d = item_matrix.size(1);
  TORCH_CHECK(item_packed.size(0) == (n_items + 15) / 16 && item_packed.size(1) == (d + 3) / 4 &&
                  item_packed.size(2) == 16 && item_packed.size(3) == 4,
              "score_topk_compact: item_packed must have shape [ceil(n_items / 16), ceil(dim / 4), 16, 4]");
  TORCH_CHECK(oversample >= 1, "score_topk_compact: oversample must be >= 1");
  TORCH_CHECK(k >= 0, "score_topk_compact: k must be >= 0");
  check_exclusions(exclude_indptr, exclude_indices, user_vectors);
  at::OptionalDeviceGuard guard(at::device_of(user_vectors));
  const int64_t n_users = user_vectors.size(0);
  at::Tensor out_indices = at::full({n_users, k}, -1, user_vectors.options().dtype(at::kLong));
  at::Tensor out_scores = at::full({n_users, k}, kNegInfD, user_vectors.options());
  const int64_t n_candidates = std::min(k * oversample, n_items);
  if (std::min(k, n_items) == 0) return {out_indices, out_scores};
  // The same approximate scores as the CPU kernel: codes unpacked from the VNNI layout, the user
  // quantised to int8, float(q . code) * scale. Integer dot products below 2^24 are exact in fp32
  // (TF32 is off for matmul by default), so the candidates match the CPU op's.
  const at::Tensor codes = (item_packed.permute({0, 2, 1, 3}).reshape({-1, item_packed.size(1) * 4})
                                .narrow(0, 0, n_items).narrow(1, 0, d).to(at::kFloat) - 128.0);
  const at::Tensor max_abs = user_vectors.abs().amax(1, /*keepdim=*/true);
  const at::Tensor inv = at::where(max_abs > 0, at::full_like(max_abs, 127.0) / max_abs, at::zeros_like(max_abs));
  const at::Tensor quantised = at::round(user_vectors * inv).clamp(-127, 127);
  const int64_t chunk = std::max<int64_t>(1, kScoresPerChunk / std::max<int64_t>(1, n_items));
  for (int64_t u0 = 0; u0 < n_users; u0 += chunk) {
    const int64_t nu = std::min(chunk, n_users - u0);
    const at::Tensor users = user_vectors.narrow(0, u0, nu);
    at::Tensor approx = at::mm(quantised.narrow(0, u0, nu), codes.t()) * item_scales.unsqueeze(0);
    mask_excluded(approx, exclude_indptr, exclude_indices, u0, nu);
    auto candidates = at::topk(approx, n_candidates, /*dim=*/1);
    const at::Tensor valid = std::get<0>(candidates) != kNegInfD;
    // Exact fp32 scores of the candidates, then rank order: sort by item id first so the stable
    // score sort in select_rows breaks ties by lower item index.
    auto by_id = at::sort(std::get<1>(candidates), /*stable=*/true, /*dim=*/1, /*descending=*/false);
    const at::Tensor cand_ids = std::get<0>(by_id);
    const at::Tensor valid_sorted = valid.gather(1, std::get<1>(by_id));
    at::Tensor exact = at::bmm(item_matrix.index_select(0, cand_ids.flatten()).view({nu, n_candidates, -1}),
                               users.unsqueeze(2))
                           .squeeze(2);
    exact.masked_fill_(~valid_sorted, kNegInfD);
    select_rows(exact, cand_ids, k, out_indices.narrow(0, u0, nu), out_scores.narrow(0, u0, nu));
  }
  return {out_indices, out_scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(feedrec, CUDA, m) {
  m.impl("score_topk", &score_topk_cuda);
  m.impl("score_topk_compact", &score_topk_compact_cuda);
}

}  // namespace feedrec
