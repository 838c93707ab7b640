// kernels/dtype.h — element and block formats of weights and activations.
//
// Thread safety: everything here is stateless and safe to call from any thread.
//
// The quantized block layouts are the ones GGUF files use (ggml's formats); they are defined
// in kernels/ because the matrix kernels work directly on the quantized data. model/ maps GGUF
// type ids onto DType.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace kvtier::kernels {

enum class DType : uint8_t { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_1, kQ6_K, kQ4_K };

struct DTypeInfo {
  std::string_view name;  // "f32", "q4_1", ...
  int block_elems;        // elements per block (1 for plain floats)
  int block_bytes;        // bytes per block
};

const DTypeInfo& GetDTypeInfo(DType type);

// Bytes of a row of `n_elems` elements; n_elems must be a multiple of block_elems.
size_t RowBytes(DType type, int64_t n_elems);

// Dequantizes `n` elements (a multiple of the block size) from `src` into `dst`.
void DequantizeRow(DType type, const void* src, float* dst, int64_t n);

// Quantizes `n` floats into `dst` (RowBytes(type, n) bytes) by round-to-nearest; used by tests
// and tools that write small models. Not a quality quantizer.
void QuantizeRow(DType type, const float* src, void* dst, int64_t n);

}  // namespace kvtier::kernels
