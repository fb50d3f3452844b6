// What every KV-cache inference engine shares, whatever its device: each
// slot's length, the checks of Prefill and Decode, and the plan of a step
// (the token, slot and position of each row, and the rows whose logits are
// wanted). An engine supplies the arrays the plan goes into and Step, which
// runs it. Private to model/ (model/cpu/inference_cpu.cc and
// model/cuda/cuda_inference_engine.cc).
#ifndef DROPK_MODEL_KV_CACHE_ENGINE_H_
#define DROPK_MODEL_KV_CACHE_ENGINE_H_

#include <cstdint>
#include <span>
#include <vector>

#include "model/inference.h"

namespace dropk {

class KvCacheEngine : public InferenceEngine {
 public:
  const GptConfig& config() const final { return config_; }
  int max_slots() const final { return max_slots_; }
  void Reset(int slot) final;
  int Length(int slot) const final;
  // The InferenceEngine contracts; a broken precondition (a slot out of
  // range, a full window, a token id >= V) is a DROPK_CHECK failure, since
  // the scheduler checks requests before they get here.
  const float* Prefill(int slot, std::span<const int32_t> tokens) final;
  const float* PrefillMany(std::span<const int> slots,
                           std::span<const std::span<const int32_t>> prompts) final;
  const float* Decode(std::span<const int> slots, std::span<const int32_t> tokens) final;

 protected:
  KvCacheEngine(const GptConfig& config, int max_slots);

  // The most rows one step can have: a whole window of prefill, or one row
  // per slot.
  int max_rows() const { return max_rows_; }

  // The plan of a step: four arrays of max_rows() entries each, owned by the
  // engine (host memory it can upload as it likes).
  struct RowPlan {
    int32_t* tokens;     // the token of row r
    int32_t* slots;      // its slot
    int32_t* positions;  // its position in that slot's sequence
    int32_t* head_rows;  // the rows whose logits are wanted, in output order
  };
  virtual RowPlan Plan() = 0;

  // Runs rows [0, R) of the plan through the model, writing their keys and
  // values into their slots' caches at their positions, and returns the
  // logits (H,V) of rows head_rows[0, H): host memory owned by the engine,
  // valid until the next step.
  virtual const float* Step(int R, int H) = 0;

  const GptConfig config_;

 private:
  const int max_slots_;
  const int max_rows_;
  std::vector<int> lengths_;  // (max_slots_)
};

}  // namespace dropk

#endif  // DROPK_MODEL_KV_CACHE_ENGINE_H_
