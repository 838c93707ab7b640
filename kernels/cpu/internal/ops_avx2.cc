// kernels/cpu/internal/ops_avx2.cc — the op kernels of ops_impl.h instantiated for avx2.
//
// Every other header comes first, so that only the templates of ops_impl.h are compiled
// for the wider target of the `#pragma GCC target` region below.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/cpu/internal/ops_table.h"
#include "kernels/cpu/internal/simd.h"
#include "kernels/fp16.h"

#if KVTIER_HAVE_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")  // = KVTIER_AVX2_TARGET
#include "kernels/cpu/internal/ops_impl.h"
#pragma GCC pop_options

namespace kvtier::kernels::internal {
const OpsTable& Avx2OpsTable() { return impl::MakeTable<Avx2Isa>(); }
}  // namespace kvtier::kernels::internal
#else
namespace kvtier::kernels::internal {
const OpsTable& Avx2OpsTable() { return ScalarOpsTable(); }
}  // namespace kvtier::kernels::internal
#endif
