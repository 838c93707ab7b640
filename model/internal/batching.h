// model/internal/batching.h — how a forward pass splits a run of tokens into batches and which
// batches produce logits (shared by the CPU and CUDA passes so both split identically).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "model/model.h"

namespace kvtier::model::internal {

// Sizes *logits for `mode` ([vocab] for kLast, [tokens][vocab] for kAll), then calls
// run_batch(batch_tokens, batch_n_past, batch_mode, batch_logits) for consecutive batches of at
// most max_batch tokens; only the batches whose logits are wanted get a non-null destination.
template <typename RunBatch>
Status ForEachBatch(std::span<const int32_t> tokens, int32_t n_past, size_t max_batch,
                    int vocab_size, LogitsMode mode, std::vector<float>* logits,
                    RunBatch&& run_batch) {
  if (logits != nullptr) {
    const size_t rows = mode == LogitsMode::kAll ? tokens.size() : (mode == LogitsMode::kLast);
    logits->resize(rows * static_cast<size_t>(vocab_size));
  }
  for (size_t off = 0; off < tokens.size(); off += max_batch) {
    const size_t n = std::min(max_batch, tokens.size() - off);
    const bool last_batch = off + n == tokens.size();
    LogitsMode batch_mode = LogitsMode::kNone;
    float* out = nullptr;
    if (logits != nullptr && mode == LogitsMode::kAll) {
      batch_mode = LogitsMode::kAll;
      out = logits->data() + off * vocab_size;
    } else if (logits != nullptr && mode == LogitsMode::kLast && last_batch) {
      batch_mode = LogitsMode::kLast;
      out = logits->data();
    }
    RETURN_IF_ERROR(
        run_batch(tokens.subspan(off, n), n_past + static_cast<int32_t>(off), batch_mode, out));
  }
  return Status::Ok();
}

}  // namespace kvtier::model::internal
