// model/gguf.h — reader for GGUF v2/v3 model files.
//
// Thread safety: a GgufFile is immutable after Open() and safe for concurrent readers.
//
// Open() maps the file read-only and validates everything before returning: header, every
// metadata key/value (all value types and nested arrays), tensor infos, alignment, and that each
// tensor's [offset, offset+size) lies inside the data section. A malformed, truncated or
// unsupported file yields a Status whose message is one line naming the problem
// (e.g. "gguf: tensor 'blk.3.attn_q.weight': data [..) past end of file (size ..)").
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/status.h"
#include "kernels/dtype.h"

namespace kvtier::model {

// GGUF metadata value types (numbering as in the file format).
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

struct GgufValue;
using GgufArray = std::vector<GgufValue>;

// One metadata value. Integers of every width are held widened; `type` keeps the file's type.
struct GgufValue {
  GgufType type = GgufType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> v;
  GgufType array_elem_type = GgufType::kUint8;  // for kArray

  std::optional<int64_t> AsInt() const;   // any integer type (uint64 > INT64_MAX -> nullopt)
  std::optional<double> AsFloat() const;  // float32/64 and integers
  std::optional<bool> AsBool() const;
  const std::string* AsString() const;  // nullptr unless kString
  const GgufArray* AsArray() const;     // nullptr unless kArray
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;                    // ne[0] first (ne[0] = row length, contiguous)
  uint32_t ggml_type = 0;                       // the file's type id
  kernels::DType dtype = kernels::DType::kF32;  // valid when supported == true
  bool supported = false;  // one of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q6_K, Q4_K
  uint64_t offset = 0;     // relative to the data section
  uint64_t size_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapping
  int64_t NumElements() const;
};

class GgufFile {
 public:
  static Result<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an in-memory image (the fuzzer and tests use this); `bytes` must outlive the object.
  static Result<std::unique_ptr<GgufFile>> FromMemory(std::span<const uint8_t> bytes);
  ~GgufFile();

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* Find(std::string_view key) const;
  // Typed getters: NotFound if absent, InvalidArgument if of the wrong type.
  Result<int64_t> GetInt(std::string_view key) const;
  Result<double> GetFloat(std::string_view key) const;
  Result<std::string> GetString(std::string_view key) const;
  // String arrays (tokenizer.ggml.tokens, .merges).
  Result<std::vector<std::string>> GetStringArray(std::string_view key) const;
  Result<std::vector<int64_t>> GetIntArray(std::string_view key) const;
  Result<std::vector<double>> GetFloatArray(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* FindTensor(std::string_view name) const;

 private:
  GgufFile() = default;
  Status Parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Maps a ggml type id to a DType; nullopt for types kvtier does not support.
std::optional<kernels::DType> DTypeFromGgml(uint32_t ggml_type);
uint32_t GgmlFromDType(kernels::DType dtype);
// Name of a ggml type id ("q4_1", "q5_k", ... or "type 99").
std::string GgmlTypeName(uint32_t ggml_type);

// Block geometry of a ggml type id as GGUF files store it.
struct GgmlTypeTraits {
  std::string_view name;  // "q4_1"
  uint32_t block_elems;   // elements per block (1 for plain scalars)
  uint32_t block_bytes;   // bytes per block
};
// Traits of every type id some ggml release writes into files (supported or not); nullptr for
// ids that were never assigned or were removed from the format (4, 5, 31-33, 36-38, >= 40).
const GgmlTypeTraits* GetGgmlTypeTraits(uint32_t ggml_type);

// "uint8", "string", "array", ... or "type 13" for ids outside the format.
std::string GgufTypeName(GgufType type);

}  // namespace kvtier::model
