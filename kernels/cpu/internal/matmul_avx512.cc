// AVX-512 VNNI MatMul kernels (placeholder: AVX2 until the VNNI kernels land).
#include "kernels/cpu/internal/matmul_kernels.h"

namespace kvtier::kernels::internal {

KernelChoice Avx512Kernel(DType type) { return Avx2Kernel(type); }

}  // namespace kvtier::kernels::internal
