// CPU kernel of feedrec::csr_spmm (schema in topk_ops.cpp): LightGCN's propagation step, fused.
//
//   out[t, :] = beta * base[r, :] + alpha * sum_{p in row r, mask[indices[p]]} values[p] * x[indices[p], :]
//   with r = rows[t] when rows is given, else r = t.
//
// Why a kernel of our own rather than torch's sparse mm (MKL): a Horner step of the propagation
// (recsys/graph.py) is "scale x into a buffer, then add A @ acc to it", two passes over the
// [n_nodes, dim] output and a third inside MKL (which zeroes or scales its output first). Here the
// scaled base and the row's sum are one write. The two optional arguments skip work a training
// step does not need: ``rows`` computes only the output rows the batch reads (the last layer of the
// forward pass), ``mask`` skips the input rows that are known to be zero (the first layer of the
// backward pass: the loss's gradient is non-zero only on the batch's nodes), without a gather.
//
// Each output row accumulates its sum in a 64-float block that stays in registers (one sweep over
// the row's neighbours per 64 columns), and the rows are split between threads by equal numbers of
// non-zeros, not of rows (degrees are skewed: a split by rows left one core idle most of the time).
// The row loop is compiled three times (AVX-512, AVX2+FMA, baseline) and picked at run time, so the
// extension stays portable without -march=native.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;

template <typename Idx>
struct SpmmArgs {
  const Idx* indptr;
  const Idx* indices;
  const float* values;
  const float* x;
  const float* base;  // nullable
  const int64_t* rows;  // nullable
  const uint8_t* mask;  // nullable
  float* out;
  int64_t dim;
  float alpha;
  float beta;
};

// One output row's columns [c0, c0 + kBlock) (Full: a constant width, so the compiler keeps acc in
// vector registers) or [c0, c0 + w) (the tail, when dim is not a multiple of kBlock).
template <typename Idx, bool Full>
static inline __attribute__((always_inline)) void row_block(const SpmmArgs<Idx>& a, int64_t r, float* o,
                                                             const float* b, int64_t c0, int64_t w) {
  float acc[kBlock];
  for (int64_t k = 0; k < kBlock; ++k) acc[k] = 0.f;
  const int64_t p1 = a.indptr[r + 1];
  for (int64_t p = a.indptr[r]; p < p1; ++p) {
    const int64_t j = a.indices[p];
    if (a.mask != nullptr && !a.mask[j]) continue;
    const float v = a.values[p];
    const float* xr = a.x + j * a.dim + c0;
    if constexpr (Full) {
      for (int64_t k = 0; k < kBlock; ++k) acc[k] += v * xr[k];
    } else {
      for (int64_t k = 0; k < w; ++k) acc[k] += v * xr[k];
    }
  }
  const int64_t n = Full ? kBlock : w;
  if (b != nullptr) {
    for (int64_t k = 0; k < n; ++k) o[c0 + k] = a.beta * b[c0 + k] + a.alpha * acc[k];
  } else {
    for (int64_t k = 0; k < n; ++k) o[c0 + k] = a.alpha * acc[k];
  }
}

template <typename Idx>
static inline __attribute__((always_inline)) void rows_body(const SpmmArgs<Idx>& a, int64_t t0, int64_t t1) {
  const int64_t full = a.dim / kBlock * kBlock;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t r = a.rows != nullptr ? a.rows[t] : t;
    float* o = a.out + t * a.dim;
    const float* b = a.base != nullptr ? a.base + r * a.dim : nullptr;
    for (int64_t c0 = 0; c0 < full; c0 += kBlock) row_block<Idx, true>(a, r, o, b, c0, kBlock);
    if (full < a.dim) row_block<Idx, false>(a, r, o, b, full, a.dim - full);
  }
}

template <typename Idx>
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) void rows_avx512(const SpmmArgs<Idx>& a, int64_t t0,
                                                                                int64_t t1) {
  rows_body(a, t0, t1);
}
template <typename Idx>
__attribute__((target("avx2,fma"))) void rows_avx2(const SpmmArgs<Idx>& a, int64_t t0, int64_t t1) {
  rows_body(a, t0, t1);
}
template <typename Idx>
void rows_default(const SpmmArgs<Idx>& a, int64_t t0, int64_t t1) {
  rows_body(a, t0, t1);
}

template <typename Idx>
using RowsFn = void (*)(const SpmmArgs<Idx>&, int64_t, int64_t);

template <typename Idx>
RowsFn<Idx> pick_rows_fn() {
  static const RowsFn<Idx> fn = [] {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      return static_cast<RowsFn<Idx>>(&rows_avx512<Idx>);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return static_cast<RowsFn<Idx>>(&rows_avx2<Idx>);
    return static_cast<RowsFn<Idx>>(&rows_default<Idx>);
  }();
  return fn;
}

template <typename Idx>
void run(const SpmmArgs<Idx>& a, int64_t n_out) {
  const RowsFn<Idx> fn = pick_rows_fn<Idx>();
  const int64_t threads = at::get_num_threads();
  if (threads <= 1 || n_out < 256) {
    fn(a, 0, n_out);
    return;
  }
  // Chunks of about equal work (non-zeros + one per row for the write), several per thread so a
  // descheduled thread's share is picked up by the others.
  std::vector<int64_t> bounds;
  const int64_t chunks = threads * 8;
  bounds.reserve(chunks + 1);
  bounds.push_back(0);
  if (a.rows == nullptr) {
    const int64_t total = static_cast<int64_t>(a.indptr[n_out]) + n_out;
    for (int64_t c = 1; c < chunks; ++c) {
      const int64_t target = total * c / chunks;
      // first row t with indptr[t] + t >= target
      int64_t lo = bounds.back(), hi = n_out;
      while (lo < hi) {
        const int64_t mid = (lo + hi) / 2;
        if (static_cast<int64_t>(a.indptr[mid]) + mid < target) lo = mid + 1; else hi = mid;
      }
      bounds.push_back(lo);
    }
  } else {
    for (int64_t c = 1; c < chunks; ++c) bounds.push_back(n_out * c / chunks);
  }
  bounds.push_back(n_out);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      if (bounds[c] < bounds[c + 1]) fn(a, bounds[c], bounds[c + 1]);
  });
}

at::Tensor csr_spmm_cpu(const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& values,
                        const at::Tensor& x, const c10::optional<at::Tensor>& base, double alpha, double beta,
                        const c10::optional<at::Tensor>& rows, const c10::optional<at::Tensor>& mask) {
  TORCH_CHECK(indptr.dim() == 1 && indices.dim() == 1 && values.dim() == 1, "csr_spmm: indptr, indices and values must be 1-D");
  TORCH_CHECK(indptr.scalar_type() == indices.scalar_type() &&
                  (indptr.scalar_type() == at::kInt || indptr.scalar_type() == at::kLong),
              "csr_spmm: indptr and indices must both be int32 or both int64");
  TORCH_CHECK(values.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat, "csr_spmm: values and x must be float32");
  TORCH_CHECK(x.dim() == 2, "csr_spmm: x must be 2-D");
  TORCH_CHECK(values.size(0) == indices.size(0), "csr_spmm: values and indices differ in length");
  const int64_t n_rows = indptr.size(0) - 1;
  TORCH_CHECK(n_rows >= 0, "csr_spmm: indptr is empty");
  const at::Tensor xc = x.contiguous();
  const at::Tensor ip = indptr.contiguous(), ix = indices.contiguous(), vals = values.contiguous();
  // Bounds, so a malformed matrix raises instead of reading past x (one pass over the indices:
  // ~1% of the product's time).
  const auto [ip_min, ip_max] = at::aminmax(ip);
  TORCH_CHECK(ip_min.item<int64_t>() >= 0 && ip_max.item<int64_t>() <= ix.size(0),
              "csr_spmm: indptr points outside indices");
  if (ix.numel() > 0) {
    const auto [ix_min, ix_max] = at::aminmax(ix);
    TORCH_CHECK(ix_min.item<int64_t>() >= 0 && ix_max.item<int64_t>() < x.size(0),
                "csr_spmm: a column index is outside x's rows");
  }
  at::Tensor bc;
  if (base.has_value()) {
    bc = base->contiguous();
    TORCH_CHECK(bc.scalar_type() == at::kFloat && bc.dim() == 2 && bc.size(0) == n_rows && bc.size(1) == x.size(1),
                "csr_spmm: base must be float32 [n_rows, dim]");
  }
  at::Tensor rc, mc;
  int64_t n_out = n_rows;
  if (rows.has_value()) {
    rc = rows->to(at::kLong).contiguous();
    TORCH_CHECK(rc.dim() == 1, "csr_spmm: rows must be 1-D");
    n_out = rc.size(0);
    if (n_out > 0) {
      TORCH_CHECK(rc.min().item<int64_t>() >= 0 && rc.max().item<int64_t>() < n_rows, "csr_spmm: rows out of range");
    }
  }
  if (mask.has_value()) {
    mc = mask->to(at::kByte).contiguous();
    TORCH_CHECK(mc.dim() == 1 && mc.size(0) == x.size(0), "csr_spmm: mask must be [x.size(0)]");
  }
  at::Tensor out = at::empty({n_out, x.size(1)}, x.options());
  if (n_out == 0 || x.size(1) == 0) return out;
  auto go = [&](auto tag) {
    using Idx = decltype(tag);
    SpmmArgs<Idx> a{ip.data_ptr<Idx>(), ix.data_ptr<Idx>(), vals.data_ptr<float>(), xc.data_ptr<float>(),
                    bc.defined() ? bc.data_ptr<float>() : nullptr, rc.defined() ? rc.data_ptr<int64_t>() : nullptr,
                    mc.defined() ? mc.data_ptr<uint8_t>() : nullptr, out.data_ptr<float>(), x.size(1),
                    static_cast<float>(alpha), static_cast<float>(beta)};
    run(a, n_out);
  };
  if (ip.scalar_type() == at::kInt) go(int32_t{}); else go(int64_t{});
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(feedrec, CPU, m) { m.impl("csr_spmm", &csr_spmm_cpu); }
