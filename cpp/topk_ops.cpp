// Schema of the feedrec ops, declared once; the top-k kernels live in topk_cpu.cpp (CPU) and
// topk_cuda.cu (CUDA, compiled only where nvcc and a CUDA torch are present), csr_spmm's in
// spmm_cpu.cpp (CPU only: recsys.graph uses torch's sparse mm on other devices).
//
// score_topk: for each user row u, the k items with the highest u . item_matrix[i], skipping the
//   items listed for that user in the CSR pair (exclude_indptr[n+1], exclude_indices[nnz]).
//   Rows are sorted by score descending, ties broken by lower item index; when fewer than k items
//   remain the row is padded with index -1 and score -inf.
// score_topk_compact: same contract, but candidates (k * oversample per user) are picked from an
//   int8 copy of the items (codes[i] * item_scales[i] ~= item_matrix[i]), stored packed for the
//   VNNI dot product (item_packed uint8 [ceil(n/16), ceil(d/4), 16, 4], see recsys.topk.quantize_items),
//   scored against the user quantised to int8, then re-ranked with exact fp32 scores: the returned
//   order and scores are exact, only recall is approximate (it depends on oversample).
// csr_spmm: LightGCN's fused propagation step over a CSR matrix,
//   out[t] = beta * base[r] + alpha * sum_p values[p] * x[indices[p]] over row r = rows[t] (or t),
//   skipping the columns whose mask is 0; see spmm_cpu.cpp.
// compact_kernel (in topk_cpu.cpp): which int8 kernel score_topk_compact uses on this CPU.
#include <torch/library.h>

TORCH_LIBRARY(feedrec, m) {
  m.def(
      "score_topk(Tensor user_vectors, Tensor item_matrix, int k, Tensor exclude_indptr, "
      "Tensor exclude_indices) -> (Tensor indices, Tensor scores)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "score_topk_compact(Tensor user_vectors, Tensor item_packed, Tensor item_scales, "
      "Tensor item_matrix, int k, int oversample, Tensor exclude_indptr, Tensor exclude_indices) "
      "-> (Tensor indices, Tensor scores)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "csr_spmm(Tensor indptr, Tensor indices, Tensor values, Tensor x, Tensor? base, float alpha, float beta, "
      "Tensor? rows, Tensor? mask) -> Tensor",
      {at::Tag::pt2_compliant_tag});
}
