// cache/internal/f16_rows.h — f16 <-> f32 row conversions for the KV codecs, with an F16C path
// chosen at run time. Both paths round to nearest even and give identical results.
//
// Thread safety: pure functions; SetF16RowsSimd is for tests and must not race with users.
#pragma once

#include <cstdint>

namespace kvtier::cache::internal {

void F16RowToF32(const uint16_t* src, float* dst, int n);
void F32RowToF16(const float* src, uint16_t* dst, int n);

// Enables/disables the F16C path (it is only used when the CPU has F16C). Returns the previous
// setting.
bool SetF16RowsSimd(bool enabled);

}  // namespace kvtier::cache::internal
