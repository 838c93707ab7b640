// kernels/cpu/internal/ops_scalar.cc — the op kernels of ops_impl.h instantiated for scalar.
//
// Every other header comes first, so that only the templates of ops_impl.h are compiled
// here (no target pragma: this level runs on any x86-64 or other CPU).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/internal/ops_impl.h"
#include "kernels/cpu/internal/ops_table.h"
#include "kernels/cpu/internal/simd.h"
#include "kernels/fp16.h"

namespace kvtier::kernels::internal {
const OpsTable& ScalarOpsTable() { return impl::MakeTable<ScalarIsa>(); }
}  // namespace kvtier::kernels::internal
