// kernels/cpu/internal/ops_level.h — which SIMD level the elementwise ops and attention use.
//
// Thread safety: all functions are safe to call from any thread. The level is read with one
// relaxed atomic load per op call; SetOpsLevelForTesting() must not race with running ops.
#pragma once

namespace kvtier::kernels::internal {

enum class OpsLevel : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The highest level this CPU supports (AVX2 means AVX2+FMA+F16C; AVX-512 means AVX-512F on top
// of those), lowered to $KVTIER_CPU_LEVEL (scalar|avx2|avx512) when that is set. The variable
// can only lower the level: asking for avx512 on an AVX2 machine gives avx2.
OpsLevel DetectOpsLevel();

// The level the ops run at now: DetectOpsLevel() unless a test forced another one.
OpsLevel CurrentOpsLevel();

// Tests only: run the ops at `level`, clamped to what the CPU supports. Returns the level set.
OpsLevel SetOpsLevelForTesting(OpsLevel level);

const char* OpsLevelName(OpsLevel level);

}  // namespace kvtier::kernels::internal
