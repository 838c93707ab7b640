// kernels/cpu/internal/retrieval_avx2.cc — the retrieval kernels of retrieval_impl.h
// instantiated for avx2.
//
// Every other header comes first, so that only the templates of retrieval_impl.h are compiled
// for the wider target of the `#pragma GCC target` region below.
#include <cmath>
#include <cstdint>

#include "kernels/cpu/internal/retrieval_table.h"
#include "kernels/cpu/internal/simd.h"
#include "kernels/fp16.h"

#if KVTIER_HAVE_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")  // = KVTIER_AVX2_TARGET
#include "kernels/cpu/internal/retrieval_impl.h"
#pragma GCC pop_options

namespace kvtier::kernels::internal {
const RetrievalTable& Avx2RetrievalTable() { return retrieval_impl::MakeTable<Avx2Isa>(); }
}  // namespace kvtier::kernels::internal
#else
namespace kvtier::kernels::internal {
const RetrievalTable& Avx2RetrievalTable() { return ScalarRetrievalTable(); }
}  // namespace kvtier::kernels::internal
#endif
