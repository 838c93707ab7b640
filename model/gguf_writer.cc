// model/gguf_writer.cc — GGUF v3 builder for tests and tools.
#include "model/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <utility>

namespace kvtier::model {
namespace {

constexpr uint32_t kVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;

class Out {
 public:
  explicit Out(std::vector<uint8_t>* buf) : buf_(buf) {}

  template <typename T>
  void Put(T v) {
    const size_t at = buf_->size();
    buf_->resize(at + sizeof(T));
    std::memcpy(buf_->data() + at, &v, sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    buf_->insert(buf_->end(), s.begin(), s.end());
  }
  void PutBytes(const std::vector<uint8_t>& b) { buf_->insert(buf_->end(), b.begin(), b.end()); }
  void PadTo(uint64_t alignment) {
    const uint64_t a = alignment == 0 ? 1 : alignment;
    while (buf_->size() % a != 0) buf_->push_back(0);
  }

 private:
  std::vector<uint8_t>* buf_;
};

// The numeric payload of a value, whichever alternative the caller stored it in.
template <typename T>
T NumberAs(const GgufValue& v) {
  if (const auto* u = std::get_if<uint64_t>(&v.v)) return static_cast<T>(*u);
  if (const auto* i = std::get_if<int64_t>(&v.v)) return static_cast<T>(*i);
  if (const auto* d = std::get_if<double>(&v.v)) return static_cast<T>(*d);
  if (const auto* b = std::get_if<bool>(&v.v)) return static_cast<T>(*b ? 1 : 0);
  return T{};
}

// Writes the payload of `v` (without its type tag) as `type`.
void PutValue(Out& out, GgufType type, const GgufValue& v) {
  switch (type) {
    case GgufType::kUint8:
      out.Put(NumberAs<uint8_t>(v));
      return;
    case GgufType::kInt8:
      out.Put(NumberAs<int8_t>(v));
      return;
    case GgufType::kUint16:
      out.Put(NumberAs<uint16_t>(v));
      return;
    case GgufType::kInt16:
      out.Put(NumberAs<int16_t>(v));
      return;
    case GgufType::kUint32:
      out.Put(NumberAs<uint32_t>(v));
      return;
    case GgufType::kInt32:
      out.Put(NumberAs<int32_t>(v));
      return;
    case GgufType::kUint64:
      out.Put(NumberAs<uint64_t>(v));
      return;
    case GgufType::kInt64:
      out.Put(NumberAs<int64_t>(v));
      return;
    case GgufType::kFloat32:
      out.Put(NumberAs<float>(v));
      return;
    case GgufType::kFloat64:
      out.Put(NumberAs<double>(v));
      return;
    case GgufType::kBool:
      out.Put<uint8_t>(NumberAs<uint8_t>(v) != 0 ? 1 : 0);
      return;
    case GgufType::kString: {
      const auto* s = std::get_if<std::string>(&v.v);
      out.PutString(s != nullptr ? *s : std::string());
      return;
    }
    case GgufType::kArray: {
      static const GgufArray kEmpty;
      const auto* a = std::get_if<GgufArray>(&v.v);
      if (a == nullptr) a = &kEmpty;
      out.Put(static_cast<uint32_t>(v.array_elem_type));
      out.Put<uint64_t>(a->size());
      for (const GgufValue& e : *a) PutValue(out, v.array_elem_type, e);
      return;
    }
  }
  // An out-of-range type id written on purpose (malformed-file tests): no payload.
}

GgufValue Scalar(GgufType type, decltype(GgufValue::v) v) {
  GgufValue out;
  out.type = type;
  out.v = std::move(v);
  return out;
}

template <typename T, typename Wide>
GgufValue ArrayOf(GgufType elem_type, const std::vector<T>& values) {
  GgufValue out;
  out.type = GgufType::kArray;
  out.array_elem_type = elem_type;
  GgufArray arr;
  arr.reserve(values.size());
  for (const T& x : values) arr.push_back(Scalar(elem_type, Wide(x)));
  out.v = std::move(arr);
  return out;
}

}  // namespace

void GgufWriter::SetValue(const std::string& key, const GgufValue& v) {
  for (auto& [k, existing] : kv_) {
    if (k == key) {
      existing = v;
      return;
    }
  }
  kv_.emplace_back(key, v);
}

void GgufWriter::SetUint32(const std::string& key, uint32_t v) {
  SetValue(key, Scalar(GgufType::kUint32, uint64_t{v}));
}
void GgufWriter::SetInt32(const std::string& key, int32_t v) {
  SetValue(key, Scalar(GgufType::kInt32, int64_t{v}));
}
void GgufWriter::SetUint64(const std::string& key, uint64_t v) {
  SetValue(key, Scalar(GgufType::kUint64, v));
}
void GgufWriter::SetFloat32(const std::string& key, float v) {
  SetValue(key, Scalar(GgufType::kFloat32, static_cast<double>(v)));
}
void GgufWriter::SetBool(const std::string& key, bool v) {
  SetValue(key, Scalar(GgufType::kBool, v));
}
void GgufWriter::SetString(const std::string& key, const std::string& v) {
  SetValue(key, Scalar(GgufType::kString, v));
}
void GgufWriter::SetStringArray(const std::string& key, const std::vector<std::string>& v) {
  SetValue(key, ArrayOf<std::string, std::string>(GgufType::kString, v));
}
void GgufWriter::SetInt32Array(const std::string& key, const std::vector<int32_t>& v) {
  SetValue(key, ArrayOf<int32_t, int64_t>(GgufType::kInt32, v));
}
void GgufWriter::SetFloat32Array(const std::string& key, const std::vector<float>& v) {
  SetValue(key, ArrayOf<float, double>(GgufType::kFloat32, v));
}

void GgufWriter::AddTensor(const std::string& name, const std::vector<int64_t>& dims,
                           kernels::DType dtype, const std::vector<float>& values) {
  KVTIER_CHECK(!dims.empty() && dims[0] > 0);
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  KVTIER_CHECK(static_cast<int64_t>(values.size()) == n);
  const int64_t row = dims[0];
  const size_t row_bytes = kernels::RowBytes(dtype, row);
  std::vector<uint8_t> bytes(row_bytes * static_cast<size_t>(n / row));
  for (int64_t r = 0; r < n / row; ++r) {
    kernels::QuantizeRow(dtype, values.data() + r * row, bytes.data() + r * row_bytes, row);
  }
  AddRawTensor(name, dims, GgmlFromDType(dtype), std::move(bytes));
}

void GgufWriter::AddRawTensor(const std::string& name, const std::vector<int64_t>& dims,
                              uint32_t ggml_type, std::vector<uint8_t> bytes) {
  tensors_.push_back(Tensor{name, dims, ggml_type, std::move(bytes)});
}

std::vector<uint8_t> GgufWriter::Serialize() const {
  std::vector<uint8_t> buf;
  Out out(&buf);
  bool has_alignment_key = false;
  for (const auto& kv : kv_) has_alignment_key |= kv.first == "general.alignment";
  const bool add_alignment_key = !has_alignment_key && alignment_ != kDefaultAlignment;

  out.Put<uint8_t>('G');
  out.Put<uint8_t>('G');
  out.Put<uint8_t>('U');
  out.Put<uint8_t>('F');
  out.Put(kVersion);
  out.Put<uint64_t>(tensors_.size());
  out.Put<uint64_t>(kv_.size() + (add_alignment_key ? 1 : 0));
  if (add_alignment_key) {
    out.PutString("general.alignment");
    out.Put(static_cast<uint32_t>(GgufType::kUint32));
    out.Put(alignment_);
  }
  for (const auto& [key, value] : kv_) {
    out.PutString(key);
    out.Put(static_cast<uint32_t>(value.type));
    PutValue(out, value.type, value);
  }

  // Tensor infos; each tensor's data starts at a multiple of the alignment.
  const uint64_t align = alignment_ == 0 ? 1 : alignment_;
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    out.PutString(t.name);
    out.Put(static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) out.Put(static_cast<uint64_t>(d));
    out.Put(t.ggml_type);
    out.Put(offset);
    offset += (t.bytes.size() + align - 1) / align * align;
  }
  out.PadTo(align);
  for (const Tensor& t : tensors_) {
    out.PutBytes(t.bytes);
    out.PadTo(align);
  }
  return buf;
}

Status GgufWriter::WriteFile(const std::string& path) const {
  const std::vector<uint8_t> bytes = Serialize();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return IOError("gguf: cannot create " + path);
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const bool closed = std::fclose(f) == 0;
  if (written != bytes.size() || !closed) return IOError("gguf: short write to " + path);
  return Status::Ok();
}

}  // namespace kvtier::model
