// CPU kernels of feedrec::score_topk and feedrec::score_topk_compact (schema in topk_ops.cpp).
//
// Users are cut into chunks and the items into contiguous parts; one task = (user chunk, item
// part), handed out dynamically to the at::parallel_for threads. A task walks its part in blocks:
// it scores the block into a thread-local buffer, writes -inf over the users' excluded items, and
// feeds the block to one bounded top-k buffer per user. The parts' buffers are merged per user at the end.
// So the [n_users, n_items] score matrix is never materialised, a call opens two parallel regions
// (score + select, then merge) per wave of user chunks, and a warm call allocates only its outputs.
//
// Three scoring kernels:
// * few users (memory-bound): a fused dot loop, 16 items at a time, user-major buffer;
// * many users (compute-bound): a register-blocked GEMM on users transposed to [d, users]: each
//   item coordinate is one broadcast FMA over 16 or 32 users, no horizontal sums; the buffer is
//   item-major, so the threshold test of the scan is one vector compare per item and 16 users.
//   (Calling MKL per block was measured and dropped: from inside at::parallel_for tasks, or as one
//   MKL call plus one parallel region per block, it ran several times slower on a busy 2-core
//   machine, where every extra barrier waits for a descheduled thread.)
// * the compact op: int8 codes packed for AVX-512 VNNI (or a portable kernel), see "Compact int8
//   scan" below; its candidates are re-ranked with exact fp32 scores.
// (The extension is compiled with -fopenmp: at::parallel_for is an inline omp pragma, and without
// the flag every region above ran on one thread.)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "topk_select.h"

// Each hot loop is compiled for AVX-512, AVX2+FMA and baseline x86-64, and the loader picks the
// best one the running CPU has (GNU ifunc). Unlike -march=native this keeps a cached build valid
// when the cache directory moves to another machine.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FEEDREC_NATIVE)
#define FEEDREC_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FEEDREC_SIMD_CLONES
#endif
// Helpers of the cloned loops must be inlined into each clone to be compiled for its target.
#define FEEDREC_INLINE inline __attribute__((always_inline))

namespace feedrec {
namespace {

// From this many users on, the GEMM kernel beats one fused dot loop per user.
constexpr int64_t kGemmMinUsers = 6;
constexpr int64_t kFusedItemsPerBlock = 512;
// GEMM path: [256 items x 64 users] of scores is 64 KiB, in L2 between scoring and scanning; the
// transposed users (64 x d floats) stay in L1.
constexpr int64_t kGemmUsersPerChunk = 64;
constexpr int64_t kGemmItemsPerBlock = 256;
constexpr int64_t kTasksPerThread = 2;
// Below this many items per part, splitting the items across threads costs more than it saves.
constexpr int64_t kMinItemsPerPart = 4096;

// ---------------------------------------------------------------------------------------------
// Scoring kernels
// ---------------------------------------------------------------------------------------------

// GCC vector extensions: one vec16 is a zmm in the AVX-512 clone, two ymm / four xmm in the
// others. Spelling the vectors out (rather than hoping for auto-vectorisation, which picked the
// wrong loop here) pins the code shape; the summation order is fixed, so a given build returns
// the same score for the same inputs.
typedef float vec16 __attribute__((vector_size(64)));
typedef float vec8 __attribute__((vector_size(32)));
typedef float vec4 __attribute__((vector_size(16)));
typedef int32_t vec16i32 __attribute__((vector_size(64)));

FEEDREC_INLINE vec16 load16(const float* p) {
  vec16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

FEEDREC_INLINE vec16 load16(const int8_t* p) {
  // A plain widening loop, which the vectoriser turns into one sign extension (vpmovsxbd); GCC's
  // lowering of __builtin_convertvector from int8 went through 16 scalar shifts instead.
  int32_t wide[16];
  for (int l = 0; l < 16; ++l) wide[l] = p[l];
  vec16i32 w;
  __builtin_memcpy(&w, wide, sizeof(w));
  return __builtin_convertvector(w, vec16);
}

FEEDREC_INLINE void store16(float* p, vec16 v) { __builtin_memcpy(p, &v, sizeof(v)); }

typedef int32_t vec8i32 __attribute__((vector_size(32)));
typedef int32_t vec4i32 __attribute__((vector_size(16)));

// True if any a[l] > b[l]: one vector compare and an OR tree (the scalar loop was not vectorised).
FEEDREC_INLINE bool any_greater16(vec16 a, vec16 b) {
  const vec16i32 m = a > b;
  const vec8i32 h = __builtin_shufflevector(m, m, 0, 1, 2, 3, 4, 5, 6, 7) |
                    __builtin_shufflevector(m, m, 8, 9, 10, 11, 12, 13, 14, 15);
  const vec4i32 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) | __builtin_shufflevector(h, h, 4, 5, 6, 7);
  return (q[0] | q[1] | q[2] | q[3]) != 0;
}

FEEDREC_INLINE float hsum16(vec16 v) {
  const vec8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const vec4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

template <typename ItemT>
FEEDREC_INLINE float dot_lanes(const float* __restrict u, const ItemT* __restrict x, int64_t d) {
  vec16 acc = {};
  int64_t j = 0;
  for (; j + 16 <= d; j += 16) acc += load16(u + j) * load16(x + j);
  float sum = hsum16(acc);
  for (; j < d; ++j) sum += u[j] * static_cast<float>(x[j]);
  return sum;
}

// Horizontal sums of 16 accumulators at once: out[r] = sum of a[r]'s lanes. Four levels of "add
// the two halves of each group", the same pairing as hsum16 (so the same rounding), but 15 vector
// adds for 16 items instead of 16 separate reductions.
FEEDREC_INLINE vec16 transpose_sum16(const vec16* a) {
  vec16 b[8], c[4], e[2];
  for (int i = 0; i < 8; ++i) {  // b[i] = 8 partials of item 2i, then 8 of item 2i+1
    b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  }
  for (int i = 0; i < 4; ++i) {  // c[i] = 4 partials each of items 4i .. 4i+3
    c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(b[2 * i], b[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  }
  for (int i = 0; i < 2; ++i) {  // e[i] = 2 partials each of items 8i .. 8i+7: (b0 + b2), (b1 + b3)
    e[i] = __builtin_shufflevector(c[2 * i], c[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
           __builtin_shufflevector(c[2 * i], c[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
  }
  return __builtin_shufflevector(e[0], e[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(e[0], e[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// Fused path: out[u * n_items + i] = users[u] . item_i; items outer so each item row is read from
// memory once per block. With d a multiple of 16, 16 items at a time: 16 independent FMA chains
// and one transposed reduction (the per-item horizontal sum was half of the time).
FEEDREC_SIMD_CLONES
void score_fused_fp32(const float* users, int64_t n_users, const float* items, int64_t n_items, int64_t d,
                      float* out) {
  int64_t i = 0;
  if (d % 16 == 0) {
    for (; i + 16 <= n_items; i += 16) {
      const float* x = items + i * d;
      for (int64_t u = 0; u < n_users; ++u) {
        const float* w = users + u * d;
        vec16 acc[16] = {};
        for (int64_t j = 0; j < d; j += 16) {
          const vec16 wj = load16(w + j);
          for (int r = 0; r < 16; ++r) acc[r] += wj * load16(x + r * d + j);
        }
        store16(out + u * n_items + i, transpose_sum16(acc));
      }
    }
  }
  for (; i < n_items; ++i) {
    for (int64_t u = 0; u < n_users; ++u) out[u * n_items + i] = dot_lanes(users + u * d, items + i * d, d);
  }
}

// GEMM path micro-kernel: Items item rows x (16 * Vecs) users (users_t is [d][width]);
// Items * Vecs = 8 independent accumulators hide the FMA latency.
template <int Items, int Vecs>
FEEDREC_INLINE void gemm_tile(const float* __restrict users_t, int64_t width, const float* __restrict items,
                              int64_t d, float* __restrict out) {
  vec16 acc[Items][Vecs] = {};
  for (int64_t j = 0; j < d; ++j) {
    vec16 t[Vecs];
    for (int v = 0; v < Vecs; ++v) t[v] = load16(users_t + j * width + 16 * v);
    for (int r = 0; r < Items; ++r) {
      const float x = items[r * d + j];
      for (int v = 0; v < Vecs; ++v) acc[r][v] += x * t[v];
    }
  }
  for (int r = 0; r < Items; ++r) {
    for (int v = 0; v < Vecs; ++v) store16(out + r * width + 16 * v, acc[r][v]);
  }
}

// out[i * width + u] = users[u] . item_i for a block of fp32 items, width = users padded to 16.
// Groups of 8 items: 2 x (4 items x 32 users) or 8 items x 16 users, 8 accumulators either way.
FEEDREC_SIMD_CLONES
void score_gemm_fp32(const float* users_t, int64_t width, const float* items, int64_t n_items, int64_t d,
                     float* out) {
  int64_t i = 0;
  for (; i + 8 <= n_items; i += 8) {
    int64_t u = 0;
    for (; u + 32 <= width; u += 32) {
      gemm_tile<4, 2>(users_t + u, width, items + i * d, d, out + i * width + u);
      gemm_tile<4, 2>(users_t + u, width, items + (i + 4) * d, d, out + (i + 4) * width + u);
    }
    if (u < width) gemm_tile<8, 1>(users_t + u, width, items + i * d, d, out + i * width + u);
  }
  for (; i < n_items; ++i) {
    for (int64_t u = 0; u < width; u += 16) gemm_tile<1, 1>(users_t + u, width, items + i * d, d, out + i * width + u);
  }
}

// Exact fp32 scores of a list of rows (index -1 = padding, scored -inf).
FEEDREC_SIMD_CLONES
void score_rows_fp32(const float* u, const float* items, int64_t d, Candidate* rows, int64_t count) {
  for (int64_t c = 0; c < count; ++c) {
    rows[c].score = rows[c].index < 0 ? kNegInf : dot_lanes(u, items + rows[c].index * d, d);
  }
}

// ---------------------------------------------------------------------------------------------
// Compact int8 scan: packed layout, user quantisation, VNNI and portable kernels
// ---------------------------------------------------------------------------------------------
//
// Layout (built by recsys.topk.quantize_items): packed[b][g][l][c] = codes[16 b + l][4 g + c] + 128
// as uint8: blocks of 16 items, each block one 64-byte row per group of 4 dimensions (zero codes
// pad the last block and the last group). That is the operand of AVX-512 VNNI's vpdpbusd
// (u8 x s8 -> s32, 4 products per lane): one instruction adds 4 dimensions of 16 items.
// Users are quantised per call to s8, q = round(u * (127 / max|u|)); then
//   sum_c q[c] * (code[c] + 128) - 128 * sum(q) = q . code   exactly, in int32,
// and the approximate score of item i is float(q . code_i) * scale_i (the user's own scale is a
// positive constant per user, so it cannot change the user's ranking and is left out). Integer
// sums are exact, so the VNNI and the portable kernel give bit-identical approximate scores, and
// so does the torch twin (recsys.topk.score_topk_compact_torch).

constexpr int64_t kLanes = 16;
constexpr int64_t kPackedUsersPerChunk = 16;
// 256 items x 64 users of fp32 approximate scores = 64 KiB per task, L2-resident.
constexpr int64_t kPackedItemsPerBlock = 256;

struct QuantizedUsers {
  std::vector<int32_t> words;    // [n_users][groups]: 4 s8 of q per word, dimension 4g + c in byte c
  std::vector<int32_t> offsets;  // [n_users]: 128 * sum(q)
  int64_t groups = 0;
};

QuantizedUsers quantize_users(const float* users, int64_t n_users, int64_t d) {
  QuantizedUsers q;
  q.groups = (d + 3) / 4;
  q.words.assign(n_users * q.groups, 0);
  q.offsets.assign(n_users, 0);
  for (int64_t u = 0; u < n_users; ++u) {
    const float* x = users + u * d;
    float max_abs = 0.f;
    for (int64_t j = 0; j < d; ++j) max_abs = std::max(max_abs, std::fabs(x[j]));
    // The same fp32 operations as the torch twin: one division, then one product per coordinate.
    const float inv = max_abs > 0.f ? 127.0f / max_abs : 0.f;
    int32_t sum = 0;
    auto* bytes = reinterpret_cast<int8_t*>(q.words.data() + u * q.groups);
    for (int64_t j = 0; j < d; ++j) {
      const float r = std::nearbyint(x[j] * inv);  // round half to even, like torch.round
      const int32_t v = static_cast<int32_t>(std::min(127.f, std::max(-127.f, r)));
      bytes[j] = static_cast<int8_t>(v);
      sum += v;
    }
    q.offsets[u] = 128 * sum;
  }
  return q;
}

// Scores the items [0, n_valid) of whole 16-item blocks (blocks = packed rows of these items,
// scales[i] their scales) for users [u0, u0 + nu): out[u * ld + i]; lanes past n_valid get -inf.
using PackedScoreFn = void (*)(const QuantizedUsers& q, int64_t u0, int64_t nu, const uint8_t* blocks,
                               const float* scales, int64_t n_valid, float* out, int64_t ld);

void score_packed_portable(const QuantizedUsers& q, int64_t u0, int64_t nu, const uint8_t* blocks,
                           const float* scales, int64_t n_valid, float* out, int64_t ld) {
  const int64_t G = q.groups;
  const int64_t n_blocks = (n_valid + kLanes - 1) / kLanes;
  for (int64_t u = 0; u < nu; ++u) {
    const auto* qb = reinterpret_cast<const int8_t*>(q.words.data() + (u0 + u) * G);
    const int32_t offset = q.offsets[u0 + u];
    for (int64_t b = 0; b < n_blocks; ++b) {
      const uint8_t* blk = blocks + b * G * 4 * kLanes;
      int32_t acc[kLanes] = {};
      for (int64_t g = 0; g < G; ++g) {
        for (int64_t l = 0; l < kLanes; ++l) {
          for (int64_t c = 0; c < 4; ++c) {
            acc[l] += static_cast<int32_t>(blk[(g * kLanes + l) * 4 + c]) * qb[g * 4 + c];
          }
        }
      }
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t i = b * kLanes + l;
        out[u * ld + i] = i < n_valid ? static_cast<float>(acc[l] - offset) * scales[i] : kNegInf;
      }
    }
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FEEDREC_HAVE_VNNI_KERNEL 1
#define FEEDREC_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

// NU users x NB blocks of accumulators (NU * NB independent vpdpbusd chains hide its latency).
template <int NU, int NB>
FEEDREC_VNNI FEEDREC_INLINE void vnni_tile(const QuantizedUsers& q, int64_t u, const uint8_t* blk, int64_t G,
                                           const float* scales, int64_t first, int64_t n_valid, float* out,
                                           int64_t ld) {
  __m512i acc[NU][NB];
  for (int a = 0; a < NU; ++a)
    for (int b = 0; b < NB; ++b) acc[a][b] = _mm512_setzero_si512();
  const int64_t block_bytes = G * 4 * kLanes;
  for (int64_t g = 0; g < G; ++g) {
    __m512i x[NB];
    for (int b = 0; b < NB; ++b) x[b] = _mm512_loadu_si512(blk + b * block_bytes + g * 64);
    for (int a = 0; a < NU; ++a) {
      const __m512i w = _mm512_set1_epi32(q.words[(u + a) * G + g]);
      for (int b = 0; b < NB; ++b) acc[a][b] = _mm512_dpbusd_epi32(acc[a][b], x[b], w);
    }
  }
  for (int b = 0; b < NB; ++b) {
    const int64_t i = first + b * kLanes;
    const int64_t valid = std::min<int64_t>(kLanes, n_valid - i);
    const __mmask16 m = valid >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1);
    const __m512 s = _mm512_maskz_loadu_ps(m, scales + i);
    for (int a = 0; a < NU; ++a) {
      const __m512i dot = _mm512_sub_epi32(acc[a][b], _mm512_set1_epi32(q.offsets[u + a]));
      const __m512 v = _mm512_mask_blend_ps(m, _mm512_set1_ps(kNegInf), _mm512_mul_ps(_mm512_cvtepi32_ps(dot), s));
      _mm512_storeu_ps(out + (u + a) * ld + i, v);
    }
  }
}

FEEDREC_VNNI void score_packed_vnni(const QuantizedUsers& q, int64_t u0, int64_t nu, const uint8_t* blocks,
                                    const float* scales, int64_t n_valid, float* out, int64_t ld) {
  const int64_t G = q.groups;
  const int64_t n_blocks = (n_valid + kLanes - 1) / kLanes;
  const int64_t block_bytes = G * 4 * kLanes;
  // out rows are relative to u0: shift the base so the tile can index users absolutely.
  float* out0 = out - u0 * ld;
  int64_t u = u0;
  const int64_t u_end = u0 + nu;
  for (; u + 4 <= u_end; u += 4) {  // many users: 4 users x 2 blocks per tile
    int64_t b = 0;
    for (; b + 2 <= n_blocks; b += 2) vnni_tile<4, 2>(q, u, blocks + b * block_bytes, G, scales, b * kLanes, n_valid, out0, ld);
    for (; b < n_blocks; ++b) vnni_tile<4, 1>(q, u, blocks + b * block_bytes, G, scales, b * kLanes, n_valid, out0, ld);
  }
  for (; u < u_end; ++u) {  // few users: 1 user x 8 blocks per tile
    int64_t b = 0;
    for (; b + 8 <= n_blocks; b += 8) vnni_tile<1, 8>(q, u, blocks + b * block_bytes, G, scales, b * kLanes, n_valid, out0, ld);
    for (; b < n_blocks; ++b) vnni_tile<1, 1>(q, u, blocks + b * block_bytes, G, scales, b * kLanes, n_valid, out0, ld);
  }
}
#endif

struct PackedKernel {
  PackedScoreFn score;
  const char* name;
};

// FEEDREC_TOPK_ISA=portable forces the portable kernel (tests run both on a VNNI machine); it is
// read per call so a test can flip it.
PackedKernel packed_kernel() {
  const char* forced = std::getenv("FEEDREC_TOPK_ISA");
  const bool portable = forced != nullptr && std::strcmp(forced, "portable") == 0;
#ifdef FEEDREC_HAVE_VNNI_KERNEL
  if (!portable && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return {&score_packed_vnni, "avx512-vnni"};
  }
#endif
  return {&score_packed_portable, "portable"};
}

// ---------------------------------------------------------------------------------------------
// Selection
// ---------------------------------------------------------------------------------------------

// Feeds scores[j] (item first_index + j) to the buffer if it beats the threshold; returns the
// threshold to use next (the buffer's, which a push may have raised).
FEEDREC_INLINE float offer(const float* scores, int64_t j, int64_t first_index, TopKBuffer& heap, float threshold) {
  if (!(scores[j] > threshold)) return threshold;
  heap.push(scores[j], first_index + j);
  return heap.threshold();
}

// Feeds scores[0, len) (item index first_index + j) to the buffer. Most windows hold no score above
// the threshold once the buffer has warmed up; two vector compares let the scan skip such a window
// without touching the buffer.
FEEDREC_SIMD_CLONES
void scan_user_major_portable(const float* scores, int64_t len, int64_t first_index, TopKBuffer& heap) {
  constexpr int kWindow = 32;
  float threshold = heap.threshold();
  int64_t j = 0;
  for (; j + kWindow <= len; j += kWindow) {
    const vec16 t = vec16{} + threshold;
    if (!any_greater16(load16(scores + j), t) && !any_greater16(load16(scores + j + 16), t)) continue;
    for (int l = 0; l < kWindow; ++l) threshold = offer(scores, j + l, first_index, heap, threshold);
  }
  for (; j < len; ++j) threshold = offer(scores, j, first_index, heap, threshold);
}

// Same for an item-major block (scores[i * width + u], width a multiple of 16, thresholds padded
// with +inf): one vector compare per 16 users and item, and only a group with a hit goes scalar.
FEEDREC_SIMD_CLONES
void scan_item_major_portable(const float* scores, int64_t len, int64_t width, int64_t first_index,
                              TopKBuffer* heaps, float* thresholds) {
  for (int64_t i = 0; i < len; ++i) {
    const float* row = scores + i * width;
    for (int64_t g = 0; g < width; g += 16) {
      if (!any_greater16(load16(row + g), load16(thresholds + g))) continue;
      for (int64_t u = g; u < g + 16; ++u) {
        if (row[u] > thresholds[u]) {
          heaps[u].push(row[u], first_index + i);
          thresholds[u] = heaps[u].threshold();
        }
      }
    }
  }
}

#ifdef FEEDREC_HAVE_VNNI_KERNEL
#define FEEDREC_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
// AVX-512 scans: the compare yields a bit mask, and only its set bits are visited (the portable
// scans walk all 32 (16) lanes of a window with a hit: with k * oversample candidates, hits are
// common enough that those branchy loops were most of a 64-user compact call). A bit set when the
// window was compared is re-checked against the threshold, which may have risen since.
FEEDREC_AVX512 void scan_user_major_avx512(const float* scores, int64_t len, int64_t first_index, TopKBuffer& heap) {
  float threshold = heap.threshold();
  int64_t j = 0;
  for (; j + 16 <= len; j += 16) {
    uint32_t m = _mm512_cmp_ps_mask(_mm512_loadu_ps(scores + j), _mm512_set1_ps(threshold), _CMP_GT_OQ);
    while (m != 0) {
      const int l = __builtin_ctz(m);
      m &= m - 1;
      threshold = offer(scores, j + l, first_index, heap, threshold);
    }
  }
  for (; j < len; ++j) threshold = offer(scores, j, first_index, heap, threshold);
}

FEEDREC_AVX512 void scan_item_major_avx512(const float* scores, int64_t len, int64_t width, int64_t first_index,
                                           TopKBuffer* heaps, float* thresholds) {
  for (int64_t i = 0; i < len; ++i) {
    const float* row = scores + i * width;
    for (int64_t g = 0; g < width; g += 16) {
      uint32_t m = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + g), _mm512_loadu_ps(thresholds + g), _CMP_GT_OQ);
      while (m != 0) {
        const int64_t u = g + __builtin_ctz(m);
        m &= m - 1;
        heaps[u].push(row[u], first_index + i);  // one item per user: no re-check needed
        thresholds[u] = heaps[u].threshold();
      }
    }
  }
}
#endif

bool have_avx512_scan() {
#ifdef FEEDREC_HAVE_VNNI_KERNEL
  static const bool have = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return have;
#else
  return false;
#endif
}

void scan_user_major(const float* scores, int64_t len, int64_t first_index, TopKBuffer& heap) {
#ifdef FEEDREC_HAVE_VNNI_KERNEL
  if (have_avx512_scan()) return scan_user_major_avx512(scores, len, first_index, heap);
#endif
  scan_user_major_portable(scores, len, first_index, heap);
}

void scan_item_major(const float* scores, int64_t len, int64_t width, int64_t first_index, TopKBuffer* heaps,
                     float* thresholds) {
#ifdef FEEDREC_HAVE_VNNI_KERNEL
  if (have_avx512_scan()) return scan_item_major_avx512(scores, len, width, first_index, heaps, thresholds);
#endif
  scan_item_major_portable(scores, len, width, first_index, heaps, thresholds);
}

// Each user's excluded items, sorted, so a block finds its share with one binary search.
struct Exclusions {
  const int64_t* indptr = nullptr;
  const int64_t* indices = nullptr;
  std::vector<int64_t> sorted_copy;  // only filled when the caller's lists were not sorted

  // Sets scores[(item - lo) * stride] to -inf for the user's excluded items in [lo, lo + len).
  void mask(int64_t user, int64_t lo, int64_t len, float* scores, int64_t stride) const {
    const int64_t* begin = indices + indptr[user];
    const int64_t* end = indices + indptr[user + 1];
    for (const int64_t* p = std::lower_bound(begin, end, lo); p != end && *p < lo + len; ++p) {
      scores[(*p - lo) * stride] = kNegInf;
    }
  }
};

Exclusions prepare_exclusions(const at::Tensor& indptr_t, const at::Tensor& indices_t, int64_t n_users,
                              int64_t n_items) {
  TORCH_CHECK(indptr_t.device().is_cpu() && indices_t.device().is_cpu(),
              "score_topk: exclude_indptr/exclude_indices must be CPU tensors");
  TORCH_CHECK(indptr_t.scalar_type() == at::kLong && indices_t.scalar_type() == at::kLong,
              "score_topk: exclude_indptr/exclude_indices must be int64");
  TORCH_CHECK(indptr_t.dim() == 1 && indptr_t.size(0) == n_users + 1,
              "score_topk: exclude_indptr must have shape [n_users + 1] = [", n_users + 1, "], got ",
              indptr_t.sizes());
  TORCH_CHECK(indices_t.dim() == 1, "score_topk: exclude_indices must be 1-D");
  Exclusions ex;
  ex.indptr = indptr_t.data_ptr<int64_t>();
  ex.indices = indices_t.data_ptr<int64_t>();
  const int64_t nnz = indices_t.size(0);
  TORCH_CHECK(ex.indptr[0] == 0 && ex.indptr[n_users] == nnz,
              "score_topk: exclude_indptr must start at 0 and end at len(exclude_indices) = ", nnz);
  // Monotone pointers ending at nnz keep every read below inside exclude_indices.
  for (int64_t u = 0; u < n_users; ++u) {
    TORCH_CHECK(ex.indptr[u] <= ex.indptr[u + 1], "score_topk: exclude_indptr must be non-decreasing");
  }
  bool sorted = true;
  for (int64_t u = 0; u < n_users; ++u) {
    for (int64_t p = ex.indptr[u]; p < ex.indptr[u + 1]; ++p) {
      const int64_t item = ex.indices[p];
      TORCH_CHECK(item >= 0 && item < n_items, "score_topk: excluded item ", item, " of user ", u,
                  " is out of range [0, ", n_items, ")");
      if (p > ex.indptr[u] && ex.indices[p - 1] > item) sorted = false;
    }
  }
  if (!sorted) {
    ex.sorted_copy.assign(ex.indices, ex.indices + nnz);
    for (int64_t u = 0; u < n_users; ++u) {
      std::sort(ex.sorted_copy.begin() + ex.indptr[u], ex.sorted_copy.begin() + ex.indptr[u + 1]);
    }
    ex.indices = ex.sorted_copy.data();
  }
  return ex;
}

// Scores items [item_begin, +n_items) for users [user_begin, +n_users), masks the exclusions and
// feeds heaps[0, n_users) (which must see items in increasing order: the tie rule relies on it).
using BlockProcessor = std::function<void(int64_t user_begin, int64_t n_users, int64_t item_begin,
                                          int64_t n_items, TopKBuffer* heaps)>;
// Receives a user's merged candidates, best first.
using CandidateSink = std::function<void(int64_t user, const Candidate* best, int64_t count)>;

// Per-thread buffers that only grow: a warm call allocates nothing here.
float* thread_scratch(int64_t size) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

float* thread_scratch_users(int64_t size) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// Runs the (user chunk, item part) tasks described at the top of the file and hands each user's
// `capacity` best candidates to `sink`. Item parts start at multiples of `align` (and so do the
// blocks, when items_per_block is one too): the packed kernels score whole 16-item groups.
void collect_candidates(int64_t n_users, int64_t n_items, int64_t capacity, int64_t users_per_chunk,
                        int64_t items_per_block, int64_t align, const BlockProcessor& process,
                        const CandidateSink& sink) {
  if (n_users == 0) return;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t n_chunks = (n_users + users_per_chunk - 1) / users_per_chunk;
  // Several tasks per thread, handed out dynamically: on a shared machine a descheduled thread
  // then delays only its current task instead of a static 1/threads share of the work.
  int64_t parts = 1;
  if (n_chunks < kTasksPerThread * threads) {
    parts = std::min((kTasksPerThread * threads + n_chunks - 1) / n_chunks,
                     std::max<int64_t>(1, n_items / kMinItemsPerPart));
  }
  // Chunks run in waves so the heap storage stays bounded for millions of users.
  const int64_t chunks_per_wave = std::max<int64_t>(1, (kTasksPerThread * threads + parts - 1) / parts);
  const int64_t slots_per_part = TopKBuffer::slots_for(capacity);
  const int64_t slots_per_user = parts * slots_per_part;
  thread_local std::vector<Candidate> heap_storage;
  const int64_t storage_size = chunks_per_wave * users_per_chunk * slots_per_user;
  if (static_cast<int64_t>(heap_storage.size()) < storage_size) heap_storage.resize(storage_size);
  Candidate* storage = heap_storage.data();
  const int64_t items_per_part = ((n_items + parts - 1) / parts + align - 1) / align * align;

  for (int64_t first_chunk = 0; first_chunk < n_chunks; first_chunk += chunks_per_wave) {
    const int64_t wave_chunks = std::min(chunks_per_wave, n_chunks - first_chunk);
    const int64_t n_tasks = wave_chunks * parts;
    std::atomic<int64_t> next_task{0};
    at::parallel_for(0, std::min(threads, n_tasks), 1, [&](int64_t, int64_t) {
      for (int64_t task; (task = next_task.fetch_add(1, std::memory_order_relaxed)) < n_tasks;) {
        const int64_t chunk = task / parts;
        const int64_t part = task % parts;
        const int64_t user_begin = (first_chunk + chunk) * users_per_chunk;
        const int64_t chunk_users = std::min(users_per_chunk, n_users - user_begin);
        const int64_t item_begin = std::min(n_items, part * items_per_part);
        const int64_t item_end = std::min(n_items, item_begin + items_per_part);
        thread_local std::vector<TopKBuffer> heaps;
        heaps.clear();
        for (int64_t u = 0; u < chunk_users; ++u) {
          heaps.emplace_back(storage + (chunk * users_per_chunk + u) * slots_per_user + part * slots_per_part,
                             capacity);
          heaps.back().reset();
        }
        for (int64_t lo = item_begin; lo < item_end; lo += items_per_block) {
          process(user_begin, chunk_users, lo, std::min(items_per_block, item_end - lo), heaps.data());
        }
        for (TopKBuffer& heap : heaps) heap.finish();
      }
    });
    const int64_t wave_first_user = first_chunk * users_per_chunk;
    const int64_t wave_users = std::min(wave_chunks * users_per_chunk, n_users - wave_first_user);
    at::parallel_for(0, wave_users, 8, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        // Each part left its best `capacity` at the front of its slots: gather those, keep the
        // best `capacity` overall (nth_element, linear), and sort only them.
        Candidate* slots = storage + u * slots_per_user;
        int64_t n = capacity;
        for (int64_t part = 1; part < parts; ++part) {
          std::copy(slots + part * slots_per_part, slots + part * slots_per_part + capacity, slots + n);
          n += capacity;
        }
        if (n > capacity) std::nth_element(slots, slots + capacity - 1, slots + n, RanksBefore{});
        std::sort(slots, slots + capacity, RanksBefore{});
        sink(wave_first_user + u, slots, capacity);
      }
    });
  }
}

// The two fp32 block processors.
void run_fused(const float* users, const float* items, int64_t n_users, int64_t n_items, int64_t d,
               int64_t capacity, const Exclusions& ex, const CandidateSink& sink) {
  const BlockProcessor process = [&](int64_t u0, int64_t nu, int64_t i0, int64_t ni, TopKBuffer* heaps) {
    float* scores = thread_scratch(nu * ni);
    score_fused_fp32(users + u0 * d, nu, items + i0 * d, ni, d, scores);
    for (int64_t u = 0; u < nu; ++u) {
      ex.mask(u0 + u, i0, ni, scores + u * ni, 1);
      scan_user_major(scores + u * ni, ni, i0, heaps[u]);
    }
  };
  collect_candidates(n_users, n_items, capacity, n_users, kFusedItemsPerBlock, 1, process, sink);
}

void run_gemm(const float* users, const float* items, int64_t n_users, int64_t n_items, int64_t d,
              int64_t capacity, const Exclusions& ex, const CandidateSink& sink) {
  const BlockProcessor process = [&](int64_t u0, int64_t nu, int64_t i0, int64_t ni, TopKBuffer* heaps) {
    const int64_t width = (nu + 15) / 16 * 16;
    // Transposed, zero-padded users; re-done per block because it costs ~1/ni of the GEMM.
    float* users_t = thread_scratch_users(d * width + width);
    float* thresholds = users_t + d * width;
    for (int64_t j = 0; j < d; ++j) {
      for (int64_t u = 0; u < width; ++u) users_t[j * width + u] = u < nu ? users[(u0 + u) * d + j] : 0.f;
    }
    for (int64_t u = 0; u < width; ++u) thresholds[u] = u < nu ? heaps[u].threshold() : kPosInf;
    float* scores = thread_scratch(ni * width);
    score_gemm_fp32(users_t, width, items + i0 * d, ni, d, scores);
    for (int64_t u = 0; u < nu; ++u) ex.mask(u0 + u, i0, ni, scores + u, width);
    scan_item_major(scores, ni, width, i0, heaps, thresholds);
  };
  collect_candidates(n_users, n_items, capacity, kGemmUsersPerChunk, kGemmItemsPerBlock, 1, process, sink);
}

// The packed int8 processor: approximate scores of a block for a chunk of users, user-major.
void run_packed(const QuantizedUsers& q, const uint8_t* packed, const float* scales, int64_t n_users,
                int64_t n_items, int64_t capacity, const Exclusions& ex, const CandidateSink& sink) {
  const PackedKernel kernel = packed_kernel();
  const BlockProcessor process = [&](int64_t u0, int64_t nu, int64_t i0, int64_t ni, TopKBuffer* heaps) {
    const int64_t lanes = (ni + kLanes - 1) / kLanes * kLanes;
    float* scores = thread_scratch(nu * lanes);
    kernel.score(q, u0, nu, packed + (i0 / kLanes) * q.groups * 4 * kLanes, scales + i0, ni, scores, lanes);
    for (int64_t u = 0; u < nu; ++u) {
      ex.mask(u0 + u, i0, ni, scores + u * lanes, 1);
      scan_user_major(scores + u * lanes, ni, i0, heaps[u]);
    }
  };
  collect_candidates(n_users, n_items, capacity, kPackedUsersPerChunk, kPackedItemsPerBlock, kLanes, process, sink);
}

// ---------------------------------------------------------------------------------------------
// Ops
// ---------------------------------------------------------------------------------------------

void check_dense(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "score_topk: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "score_topk: ", name, " must be ", dtype, ", got ", t.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> allocate_outputs(int64_t n_users, int64_t k) {
  return {at::full({n_users, k}, -1, at::TensorOptions().dtype(at::kLong)),
          at::full({n_users, k}, kNegInf, at::TensorOptions().dtype(at::kFloat))};
}

std::tuple<at::Tensor, at::Tensor> score_topk_cpu(const at::Tensor& user_vectors_in,
                                                  const at::Tensor& item_matrix_in, int64_t k,
                                                  const at::Tensor& exclude_indptr,
                                                  const at::Tensor& exclude_indices) {
  check_dense(user_vectors_in, at::kFloat, "user_vectors");
  check_dense(item_matrix_in, at::kFloat, "item_matrix");
  TORCH_CHECK(user_vectors_in.dim() == 2 && item_matrix_in.dim() == 2,
              "score_topk: user_vectors and item_matrix must be 2-D");
  TORCH_CHECK(user_vectors_in.size(1) == item_matrix_in.size(1), "score_topk: dimension mismatch: users ",
              user_vectors_in.sizes(), " vs items ", item_matrix_in.sizes());
  TORCH_CHECK(k >= 0, "score_topk: k must be >= 0, got ", k);
  const at::Tensor users = user_vectors_in.contiguous();
  const at::Tensor items = item_matrix_in.contiguous();
  const int64_t n_users = users.size(0), n_items = items.size(0), d = users.size(1);
  const Exclusions ex = prepare_exclusions(exclude_indptr, exclude_indices, n_users, n_items);
  auto [out_indices, out_scores] = allocate_outputs(n_users, k);
  int64_t* out_idx = out_indices.data_ptr<int64_t>();
  float* out_val = out_scores.data_ptr<float>();
  const int64_t capacity = std::min(k, n_items);
  if (capacity == 0) return {out_indices, out_scores};

  const CandidateSink sink = [&](int64_t user, const Candidate* best, int64_t count) {
    for (int64_t j = 0; j < count; ++j) {
      if (best[j].index < 0) break;  // padding sorts last
      out_idx[user * k + j] = best[j].index;
      out_val[user * k + j] = best[j].score;
    }
  };
  if (n_users < kGemmMinUsers) {
    run_fused(users.data_ptr<float>(), items.data_ptr<float>(), n_users, n_items, d, capacity, ex, sink);
  } else {
    run_gemm(users.data_ptr<float>(), items.data_ptr<float>(), n_users, n_items, d, capacity, ex, sink);
  }
  return {out_indices, out_scores};
}

std::tuple<at::Tensor, at::Tensor> score_topk_compact_cpu(
    const at::Tensor& user_vectors_in, const at::Tensor& item_packed_in, const at::Tensor& item_scales_in,
    const at::Tensor& item_matrix_in, int64_t k, int64_t oversample, const at::Tensor& exclude_indptr,
    const at::Tensor& exclude_indices) {
  check_dense(user_vectors_in, at::kFloat, "user_vectors");
  check_dense(item_packed_in, at::kByte, "item_packed");
  check_dense(item_scales_in, at::kFloat, "item_scales");
  check_dense(item_matrix_in, at::kFloat, "item_matrix");
  TORCH_CHECK(user_vectors_in.dim() == 2 && item_matrix_in.dim() == 2,
              "score_topk_compact: user_vectors and item_matrix must be 2-D");
  TORCH_CHECK(user_vectors_in.size(1) == item_matrix_in.size(1), "score_topk_compact: dimension mismatch: users ",
              user_vectors_in.sizes(), " vs items ", item_matrix_in.sizes());
  const int64_t n_items = item_matrix_in.size(0), d = item_matrix_in.size(1);
  const int64_t n_blocks = (n_items + kLanes - 1) / kLanes, groups = (d + 3) / 4;
  TORCH_CHECK(item_packed_in.dim() == 4 && item_packed_in.size(0) == n_blocks && item_packed_in.size(1) == groups &&
                  item_packed_in.size(2) == kLanes && item_packed_in.size(3) == 4,
              "score_topk_compact: item_packed must have shape [ceil(n_items / 16), ceil(dim / 4), 16, 4] = [",
              n_blocks, ", ", groups, ", 16, 4] (recsys.topk.quantize_items), got ", item_packed_in.sizes());
  TORCH_CHECK(item_scales_in.dim() == 1 && item_scales_in.size(0) == n_items,
              "score_topk_compact: item_scales must have shape [n_items] = [", n_items, "]");
  TORCH_CHECK(k >= 0, "score_topk_compact: k must be >= 0, got ", k);
  TORCH_CHECK(oversample >= 1, "score_topk_compact: oversample must be >= 1, got ", oversample);
  const at::Tensor users = user_vectors_in.contiguous();
  const at::Tensor packed = item_packed_in.contiguous();
  const at::Tensor scales = item_scales_in.contiguous();
  const at::Tensor items = item_matrix_in.contiguous();
  const int64_t n_users = users.size(0);
  const Exclusions ex = prepare_exclusions(exclude_indptr, exclude_indices, n_users, n_items);
  auto [out_indices, out_scores] = allocate_outputs(n_users, k);
  int64_t* out_idx = out_indices.data_ptr<int64_t>();
  float* out_val = out_scores.data_ptr<float>();
  const int64_t n_candidates = std::min(k * oversample, n_items);
  if (std::min(k, n_items) == 0 || n_users == 0) return {out_indices, out_scores};

  const float* user_data = users.data_ptr<float>();
  const float* item_data = items.data_ptr<float>();
  const QuantizedUsers q = quantize_users(user_data, n_users, d);
  // Re-rank: exact fp32 scores of the approximate candidates, then the exact rank order.
  const CandidateSink rerank = [&](int64_t user, const Candidate* best, int64_t count) {
    thread_local std::vector<Candidate> exact;
    exact.assign(best, best + count);
    score_rows_fp32(user_data + user * d, item_data, d, exact.data(), count);
    const int64_t keep = std::min(k, count);
    std::partial_sort(exact.begin(), exact.begin() + keep, exact.end(), RanksBefore{});
    for (int64_t j = 0; j < keep; ++j) {
      if (exact[j].index < 0) break;
      out_idx[user * k + j] = exact[j].index;
      out_val[user * k + j] = exact[j].score;
    }
  };
  run_packed(q, packed.data_ptr<uint8_t>(), scales.data_ptr<float>(), n_users, n_items, n_candidates, ex, rerank);
  return {out_indices, out_scores};
}

std::string compact_kernel() { return packed_kernel().name; }

}  // namespace

TORCH_LIBRARY_IMPL(feedrec, CPU, m) {
  m.impl("score_topk", &score_topk_cpu);
  m.impl("score_topk_compact", &score_topk_compact_cpu);
}

// No tensor arguments, so no dispatch key: registered as a catch-all kernel.
TORCH_LIBRARY_FRAGMENT(feedrec, m) { m.def("compact_kernel() -> str", &compact_kernel); }

}  // namespace feedrec
