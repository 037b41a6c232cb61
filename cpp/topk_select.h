// Bounded top-k selection shared by the CPU kernels of feedrec::score_topk*.
//
// Rank order (the contract of every feedrec top-k implementation): a higher score ranks first;
// on equal scores the lower item index ranks first. Scores of -inf mean "not available"
// (excluded items) and are never selected; the output is padded with index -1 / score -inf.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace feedrec {

struct Candidate {
  float score;
  int64_t index;
};

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

inline bool ranks_before(const Candidate& a, const Candidate& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// ranks_before as a type, so std algorithms inline it (a function pointer is an indirect call per
// comparison).
struct RanksBefore {
  bool operator()(const Candidate& a, const Candidate& b) const { return ranks_before(a, b); }
};

inline Candidate padding_candidate() { return Candidate{kNegInf, -1}; }

// Bounded top-k selection over caller-owned slots: candidates above the threshold are appended,
// and when the buffer is full nth_element keeps the best `capacity` and the threshold becomes the
// worst kept score. Amortised O(1) per accepted candidate; the binary heap it replaced paid a
// sift-down per candidate, which was 3/4 of a 64-user compact call at capacity 80 (k 20 x 4).
class TopKBuffer {
 public:
  // Room for the slots a buffer of `capacity` uses.
  static int64_t slots_for(int64_t capacity) { return capacity > 0 ? 4 * capacity + 64 : 1; }

  TopKBuffer(Candidate* slots, int64_t capacity)
      : slots_(slots), capacity_(capacity), size_limit_(slots_for(capacity)) {}

  void reset() {
    size_ = 0;
    threshold_ = capacity_ > 0 ? kNegInf : kPosInf;  // +inf: k == 0 accepts nothing
  }

  // A candidate enters iff its score beats the threshold. Callers feed items in increasing index
  // order, so a newcomer whose score only equals the threshold (the worst kept score) would rank
  // after every kept candidate with that score: the strict test implements the tie rule.
  float threshold() const { return threshold_; }

  // Precondition: score > threshold().
  inline __attribute__((always_inline)) void push(float score, int64_t index) {
    slots_[size_++] = Candidate{score, index};
    if (size_ == size_limit_) compact();
  }

  // Leaves the best min(pushed, capacity) candidates in slots [0, capacity) (unordered), padded.
  void finish() {
    if (size_ > capacity_) compact();
    for (int64_t i = size_; i < capacity_; ++i) slots_[i] = padding_candidate();
  }

 private:
  void compact() {
    std::nth_element(slots_, slots_ + capacity_ - 1, slots_ + size_, RanksBefore{});
    size_ = capacity_;
    threshold_ = slots_[capacity_ - 1].score;
  }

  Candidate* slots_;
  int64_t capacity_;
  int64_t size_limit_;
  int64_t size_ = 0;
  float threshold_ = kNegInf;
};

}  // namespace feedrec
