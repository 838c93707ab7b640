// kernels/cpu/internal/retrieval_scalar.cc — the retrieval kernels of retrieval_impl.h
// instantiated for scalar (no target pragma: this level runs on any CPU).
#include <cmath>
#include <cstdint>

#include "kernels/cpu/internal/retrieval_impl.h"
#include "kernels/cpu/internal/retrieval_table.h"
#include "kernels/cpu/internal/simd.h"
#include "kernels/fp16.h"

namespace kvtier::kernels::internal {
const RetrievalTable& ScalarRetrievalTable() { return retrieval_impl::MakeTable<ScalarIsa>(); }
}  // namespace kvtier::kernels::internal
