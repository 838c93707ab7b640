// kernels/cpu/internal/retrieval_avx512.cc — the retrieval kernels of retrieval_impl.h
// instantiated for avx512.
//
// Every other header comes first, so that only the templates of retrieval_impl.h are compiled
// for the wider target of the `#pragma GCC target` region below.
// GCC 12 reports a false -Wmaybe-uninitialized inside avx512fintrin.h (its _mm512_undefined_*
// helpers) once those intrinsics are inlined (here also as the definite -Wuninitialized, for
// the reductions of FoldLogSoftmax); silence only those, only in this file.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/internal/retrieval_table.h"
#include "kernels/cpu/internal/simd.h"
#include "kernels/fp16.h"

#if KVTIER_HAVE_X86_SIMD
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,f16c")  // = KVTIER_AVX512_TARGET
#include "kernels/cpu/internal/retrieval_impl.h"
#pragma GCC pop_options

namespace kvtier::kernels::internal {
const RetrievalTable& Avx512RetrievalTable() { return retrieval_impl::MakeTable<Avx512Isa>(); }
}  // namespace kvtier::kernels::internal
#else
namespace kvtier::kernels::internal {
const RetrievalTable& Avx512RetrievalTable() { return ScalarRetrievalTable(); }
}  // namespace kvtier::kernels::internal
#endif
