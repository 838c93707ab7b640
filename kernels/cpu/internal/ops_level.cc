#include "kernels/cpu/internal/ops_level.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace kvtier::kernels::internal {
namespace {

OpsLevel HardwareLevel() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  if (avx2 && __builtin_cpu_supports("avx512f")) return OpsLevel::kAvx512;
  if (avx2) return OpsLevel::kAvx2;
#endif
  return OpsLevel::kScalar;
}

std::atomic<int>& LevelSlot() {
  static std::atomic<int> level{static_cast<int>(DetectOpsLevel())};
  return level;
}

}  // namespace

OpsLevel DetectOpsLevel() {
  OpsLevel level = HardwareLevel();
  const char* env = std::getenv("KVTIER_CPU_LEVEL");
  if (env != nullptr && *env != '\0') {
    OpsLevel wanted = level;
    if (std::strcmp(env, "scalar") == 0) wanted = OpsLevel::kScalar;
    if (std::strcmp(env, "avx2") == 0) wanted = OpsLevel::kAvx2;
    if (std::strcmp(env, "avx512") == 0) wanted = OpsLevel::kAvx512;
    level = std::min(level, wanted);
  }
  return level;
}

OpsLevel CurrentOpsLevel() {
  return static_cast<OpsLevel>(LevelSlot().load(std::memory_order_relaxed));
}

OpsLevel SetOpsLevelForTesting(OpsLevel level) {
  const OpsLevel set = std::min(level, HardwareLevel());
  LevelSlot().store(static_cast<int>(set), std::memory_order_relaxed);
  return set;
}

const char* OpsLevelName(OpsLevel level) {
  switch (level) {
    case OpsLevel::kAvx512:
      return "avx512";
    case OpsLevel::kAvx2:
      return "avx2";
    case OpsLevel::kScalar:
      break;
  }
  return "scalar";
}

}  // namespace kvtier::kernels::internal
