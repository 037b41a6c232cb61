// Bounded top-k selection shared by the CPU kernels of feedrec::score_topk*.
//
// Rank order (the contract of every feedrec top-k implementation): a higher score ranks first;
// on equal scores the lower item index ranks first. Scores of -inf mean "not available"
// (excluded items) and are never selected; the output is padded with index -1 / score -inf.
#pragma once

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

inline Candidate padding_candidate() { return Candidate{kNegInf, -1}; }

// A fixed-capacity heap over caller-owned slots whose top is the worst kept candidate.
// It starts full of padding (-inf, -1) so the hot loop never branches on "not full yet":
// a candidate enters iff its score beats the threshold (the worst kept score).
class BoundedHeap {
 public:
  BoundedHeap(Candidate* slots, int64_t capacity) : slots_(slots), capacity_(capacity) {}

  void reset() {
    for (int64_t i = 0; i < capacity_; ++i) slots_[i] = padding_candidate();
  }

  // +inf for capacity 0 so that nothing is ever accepted (k == 0).
  float threshold() const { return capacity_ > 0 ? slots_[0].score : kPosInf; }

  // Replaces the worst kept candidate. Precondition: score > threshold(). Callers feed items in
  // increasing index order, so a newcomer whose score only equals the threshold would rank after
  // every kept candidate with that score: the strict test in the scan implements the tie rule.
  inline __attribute__((always_inline)) void replace_worst(float score, int64_t index) {
    const Candidate c{score, index};
    int64_t i = 0;
    for (;;) {
      const int64_t left = 2 * i + 1;
      if (left >= capacity_) break;
      const int64_t right = left + 1;
      // The worse child is the one the other child ranks before.
      const int64_t worse =
          (right < capacity_ && ranks_before(slots_[left], slots_[right])) ? right : left;
      if (!ranks_before(c, slots_[worse])) break;
      slots_[i] = slots_[worse];
      i = worse;
    }
    slots_[i] = c;
  }

 private:
  Candidate* slots_;
  int64_t capacity_;
};

}  // namespace feedrec
