// model/gguf_writer.h — writes small GGUF v3 files: tests use it to make tiny random-weight
// models and malformed files.
//
// Thread safety: a GgufWriter is a builder; use it from one thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/dtype.h"
#include "model/gguf.h"

namespace kvtier::model {

class GgufWriter {
 public:
  void SetUint32(const std::string& key, uint32_t v);
  void SetInt32(const std::string& key, int32_t v);
  void SetUint64(const std::string& key, uint64_t v);
  void SetFloat32(const std::string& key, float v);
  void SetBool(const std::string& key, bool v);
  void SetString(const std::string& key, const std::string& v);
  void SetStringArray(const std::string& key, const std::vector<std::string>& v);
  void SetInt32Array(const std::string& key, const std::vector<int32_t>& v);
  void SetFloat32Array(const std::string& key, const std::vector<float>& v);
  // Any value (including nested arrays), as GgufFile reads them.
  void SetValue(const std::string& key, const GgufValue& v);

  // Adds a tensor from float data, quantized to `dtype` (dims[0] = row length).
  void AddTensor(const std::string& name, const std::vector<int64_t>& dims, kernels::DType dtype,
                 const std::vector<float>& values);
  // Adds a tensor from already-encoded bytes of ggml type `ggml_type`.
  void AddRawTensor(const std::string& name, const std::vector<int64_t>& dims, uint32_t ggml_type,
                    std::vector<uint8_t> bytes);

  void set_alignment(uint32_t alignment) { alignment_ = alignment; }

  std::vector<uint8_t> Serialize() const;
  Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> dims;
    uint32_t ggml_type;
    std::vector<uint8_t> bytes;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace kvtier::model
