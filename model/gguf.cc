// model/gguf.cc — GGUF v2/v3 reader. Every length, count and extent read from the file is checked
// against the bytes that remain before anything is allocated or dereferenced.
#include "model/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

namespace kvtier::model {
namespace {

constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kMaxTensorDims = 4;
constexpr uint64_t kDefaultAlignment = 32;
// Arrays of arrays are legal; a fuzzed file could nest them deeply enough to exhaust the stack.
constexpr int kMaxArrayDepth = 8;
// Smallest possible encodings, used to reject impossible counts before reserving memory.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;              // key length, value type, a uint8 value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // name length, n_dims, type, offset

// ggml type ids as GGUF files store them; block_elems == 0 marks an unassigned or removed id.
constexpr std::array<GgmlTypeTraits, 40> kGgmlTypes = {{
    {"f32", 1, 4},         // 0
    {"f16", 1, 2},         // 1
    {"q4_0", 32, 18},      // 2
    {"q4_1", 32, 20},      // 3
    {"q4_2", 0, 0},        // 4 (removed)
    {"q4_3", 0, 0},        // 5 (removed)
    {"q5_0", 32, 22},      // 6
    {"q5_1", 32, 24},      // 7
    {"q8_0", 32, 34},      // 8
    {"q8_1", 32, 36},      // 9
    {"q2_k", 256, 84},     // 10
    {"q3_k", 256, 110},    // 11
    {"q4_k", 256, 144},    // 12
    {"q5_k", 256, 176},    // 13
    {"q6_k", 256, 210},    // 14
    {"q8_k", 256, 292},    // 15
    {"iq2_xxs", 256, 66},  // 16
    {"iq2_xs", 256, 74},   // 17
    {"iq3_xxs", 256, 98},  // 18
    {"iq1_s", 256, 50},    // 19
    {"iq4_nl", 32, 18},    // 20
    {"iq3_s", 256, 110},   // 21
    {"iq2_s", 256, 82},    // 22
    {"iq4_xs", 256, 136},  // 23
    {"i8", 1, 1},          // 24
    {"i16", 1, 2},         // 25
    {"i32", 1, 4},         // 26
    {"i64", 1, 8},         // 27
    {"f64", 1, 8},         // 28
    {"iq1_m", 256, 56},    // 29
    {"bf16", 1, 2},        // 30
    {"q4_0_4_4", 0, 0},    // 31 (removed)
    {"q4_0_4_8", 0, 0},    // 32 (removed)
    {"q4_0_8_8", 0, 0},    // 33 (removed)
    {"tq1_0", 256, 54},    // 34
    {"tq2_0", 256, 66},    // 35
    {"iq4_nl_4_4", 0, 0},  // 36 (removed)
    {"iq4_nl_4_8", 0, 0},  // 37 (removed)
    {"iq4_nl_8_8", 0, 0},  // 38 (removed)
    {"mxfp4", 32, 17},     // 39
}};

constexpr uint32_t kGgmlF32 = 0, kGgmlF16 = 1, kGgmlQ4_0 = 2, kGgmlQ4_1 = 3, kGgmlQ8_0 = 8,
                   kGgmlQ4_K = 12, kGgmlQ6_K = 14, kGgmlBF16 = 30;

// Bytes one element of a fixed-size metadata type takes in the file; 0 for string and array.
uint64_t FixedValueBytes(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return 0;
}

bool IsValidType(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::kFloat64); }

bool IsIntegerType(GgufType t) {
  switch (t) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kUint16:
    case GgufType::kInt16:
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kUint64:
    case GgufType::kInt64:
      return true;
    default:
      return false;
  }
}

bool IsFloatType(GgufType t) { return t == GgufType::kFloat32 || t == GgufType::kFloat64; }

// A key or tensor name for an error message: printable ASCII kept, the rest escaped, long names
// cut, so that the message stays one readable line whatever the file holds.
std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 96;
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  if (s.size() > kMaxShown) out += "...";
  out += "'";
  return out;
}

std::string Str(uint64_t v) { return std::to_string(v); }

Status Corrupt(const std::string& msg) { return CorruptionError("gguf: " + msg); }

// A bounds-checked little-endian reader over the file image.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size) : base_(base), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  bool Has(uint64_t n) const { return n <= size_ - pos_; }

  template <typename T>
  bool Read(T* out) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (!Has(sizeof(T))) return false;
    std::memcpy(out, base_ + pos_, sizeof(T));  // host is little-endian (x86-64, arm64)
    pos_ += sizeof(T);
    return true;
  }

  // Reads a T; the caller has checked Has(sizeof(T)).
  template <typename T>
  T Get() {
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // Reads n bytes into *out; the caller has checked Has(n).
  void Take(uint64_t n, std::string* out) {
    out->assign(reinterpret_cast<const char*>(base_ + pos_), n);
    pos_ += n;
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// "key 'x'" or "tensor #3": what an error is about.
Status Truncated(const std::string& what, uint64_t pos, uint64_t need, uint64_t left) {
  return Corrupt("truncated file: " + what + " at offset " + Str(pos) + " needs " + Str(need) +
                 " bytes, " + Str(left) + " left");
}

// Reads a GGUF string (uint64 length + bytes).
Status ReadString(Cursor& c, const std::string& what, std::string* out) {
  const uint64_t at = c.pos();
  uint64_t len = 0;
  if (!c.Read(&len)) return Truncated(what + " string length", at, 8, c.remaining());
  if (!c.Has(len)) {
    return Corrupt(what + ": string length " + Str(len) + " at offset " + Str(at) +
                   " exceeds the " + Str(c.remaining()) + " bytes left in the file");
  }
  c.Take(len, out);
  return Status::Ok();
}

Status ReadValue(Cursor& c, GgufType type, int depth, const std::string& what, GgufValue* out);

Status ReadArray(Cursor& c, int depth, const std::string& what, GgufValue* out) {
  const uint64_t at = c.pos();
  uint32_t elem_type = 0;
  uint64_t count = 0;
  if (!c.Read(&elem_type)) return Truncated(what + " array type", at, 4, c.remaining());
  if (!IsValidType(elem_type)) {
    return Corrupt(what + ": unknown array element type " + Str(elem_type) + " at offset " +
                   Str(at));
  }
  const auto et = static_cast<GgufType>(elem_type);
  if (et == GgufType::kArray && depth + 1 >= kMaxArrayDepth) {
    return Corrupt(what + ": arrays nested deeper than " + Str(kMaxArrayDepth) + " at offset " +
                   Str(at));
  }
  if (!c.Read(&count)) return Truncated(what + " array length", at + 4, 8, c.remaining());
  uint64_t min_elem = FixedValueBytes(et);
  if (et == GgufType::kString) min_elem = 8;
  if (et == GgufType::kArray) min_elem = 4 + 8;
  if (count > c.remaining() / min_elem) {
    return Corrupt(what + ": array of " + Str(count) + " " + GgufTypeName(et) + " at offset " +
                   Str(at) + " cannot fit in the " + Str(c.remaining()) +
                   " bytes left in the file");
  }
  out->type = GgufType::kArray;
  out->array_elem_type = et;
  GgufArray arr;
  arr.resize(count);  // bounded by the file size above
  for (uint64_t i = 0; i < count; ++i) {
    if (Status s = ReadValue(c, et, depth + 1, what, &arr[i]); !s.ok()) return s;
  }
  out->v = std::move(arr);
  return Status::Ok();
}

Status ReadValue(Cursor& c, GgufType type, int depth, const std::string& what, GgufValue* out) {
  out->type = type;
  if (type == GgufType::kString) {
    std::string str;
    if (Status s = ReadString(c, what, &str); !s.ok()) return s;
    out->v = std::move(str);
    return Status::Ok();
  }
  if (type == GgufType::kArray) return ReadArray(c, depth, what, out);
  const uint64_t n = FixedValueBytes(type);
  if (n == 0) return Corrupt(what + ": unknown value type");  // callers validate the type
  if (!c.Has(n)) {
    return Truncated(what + " " + GgufTypeName(type) + " value", c.pos(), n, c.remaining());
  }
  switch (type) {
    case GgufType::kUint8:
      out->v = uint64_t{c.Get<uint8_t>()};
      break;
    case GgufType::kInt8:
      out->v = int64_t{c.Get<int8_t>()};
      break;
    case GgufType::kUint16:
      out->v = uint64_t{c.Get<uint16_t>()};
      break;
    case GgufType::kInt16:
      out->v = int64_t{c.Get<int16_t>()};
      break;
    case GgufType::kUint32:
      out->v = uint64_t{c.Get<uint32_t>()};
      break;
    case GgufType::kInt32:
      out->v = int64_t{c.Get<int32_t>()};
      break;
    case GgufType::kUint64:
      out->v = c.Get<uint64_t>();
      break;
    case GgufType::kInt64:
      out->v = c.Get<int64_t>();
      break;
    case GgufType::kFloat32:
      out->v = static_cast<double>(c.Get<float>());
      break;
    case GgufType::kFloat64:
      out->v = c.Get<double>();
      break;
    case GgufType::kBool:
      out->v = c.Get<uint8_t>() != 0;
      break;
    case GgufType::kString:
    case GgufType::kArray:
      break;  // handled above
  }
  return Status::Ok();
}

std::string ErrnoText() { return std::strerror(errno); }

}  // namespace

// ----- GgufValue ----------------------------------------------------------------------------

std::optional<int64_t> GgufValue::AsInt() const {
  if (!IsIntegerType(type)) return std::nullopt;
  if (const auto* u = std::get_if<uint64_t>(&v)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  return std::nullopt;
}

std::optional<double> GgufValue::AsFloat() const {
  if (IsFloatType(type)) {
    if (const auto* d = std::get_if<double>(&v)) return *d;
    return std::nullopt;
  }
  if (!IsIntegerType(type)) return std::nullopt;
  if (const auto* u = std::get_if<uint64_t>(&v)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  return std::nullopt;
}

std::optional<bool> GgufValue::AsBool() const {
  if (type != GgufType::kBool) return std::nullopt;
  if (const auto* b = std::get_if<bool>(&v)) return *b;
  return std::nullopt;
}

const std::string* GgufValue::AsString() const {
  return type == GgufType::kString ? std::get_if<std::string>(&v) : nullptr;
}

const GgufArray* GgufValue::AsArray() const {
  return type == GgufType::kArray ? std::get_if<GgufArray>(&v) : nullptr;
}

int64_t GgufTensorInfo::NumElements() const {
  int64_t n = 1;
  for (int64_t d : dims) {
    if (__builtin_mul_overflow(n, d, &n)) return -1;  // only for hand-built infos
  }
  return n;
}

// ----- type tables --------------------------------------------------------------------------

const GgmlTypeTraits* GetGgmlTypeTraits(uint32_t ggml_type) {
  if (ggml_type >= kGgmlTypes.size() || kGgmlTypes[ggml_type].block_elems == 0) return nullptr;
  return &kGgmlTypes[ggml_type];
}

std::string GgmlTypeName(uint32_t ggml_type) {
  if (ggml_type < kGgmlTypes.size()) return std::string(kGgmlTypes[ggml_type].name);
  return "type " + Str(ggml_type);
}

std::optional<kernels::DType> DTypeFromGgml(uint32_t ggml_type) {
  using kernels::DType;
  switch (ggml_type) {
    case kGgmlF32:
      return DType::kF32;
    case kGgmlF16:
      return DType::kF16;
    case kGgmlBF16:
      return DType::kBF16;
    case kGgmlQ8_0:
      return DType::kQ8_0;
    case kGgmlQ4_0:
      return DType::kQ4_0;
    case kGgmlQ4_1:
      return DType::kQ4_1;
    case kGgmlQ6_K:
      return DType::kQ6_K;
    case kGgmlQ4_K:
      return DType::kQ4_K;
    default:
      return std::nullopt;
  }
}

uint32_t GgmlFromDType(kernels::DType dtype) {
  using kernels::DType;
  switch (dtype) {
    case DType::kF32:
      return kGgmlF32;
    case DType::kF16:
      return kGgmlF16;
    case DType::kBF16:
      return kGgmlBF16;
    case DType::kQ8_0:
      return kGgmlQ8_0;
    case DType::kQ4_0:
      return kGgmlQ4_0;
    case DType::kQ4_1:
      return kGgmlQ4_1;
    case DType::kQ6_K:
      return kGgmlQ6_K;
    case DType::kQ4_K:
      return kGgmlQ4_K;
  }
  KVTIER_CHECK(false && "unknown DType");
  return 0;
}

std::string GgufTypeName(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
      return "uint8";
    case GgufType::kInt8:
      return "int8";
    case GgufType::kUint16:
      return "uint16";
    case GgufType::kInt16:
      return "int16";
    case GgufType::kUint32:
      return "uint32";
    case GgufType::kInt32:
      return "int32";
    case GgufType::kFloat32:
      return "float32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kUint64:
      return "uint64";
    case GgufType::kInt64:
      return "int64";
    case GgufType::kFloat64:
      return "float64";
  }
  return "type " + Str(static_cast<uint32_t>(type));
}

// ----- GgufFile -----------------------------------------------------------------------------

GgufFile::~GgufFile() {
  if (mapped_ && base_ != nullptr) {
    munmap(const_cast<uint8_t*>(base_), size_);
  }
}

Result<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = "gguf: cannot open " + path + ": " + ErrnoText();
    return err == ENOENT ? NotFoundError(msg) : IOError(msg);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const std::string msg = "gguf: cannot stat " + path + ": " + ErrnoText();
    ::close(fd);
    return IOError(msg);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError("gguf: " + path + " is not a regular file");
  }
  if (st.st_size == 0) {
    ::close(fd);
    return CorruptionError("gguf: " + path + " is empty");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) {
    errno = map_errno;
    return IOError("gguf: cannot map " + path + ": " + ErrnoText());
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->base_ = static_cast<const uint8_t*>(map);
  file->size_ = size;
  file->mapped_ = true;
  Status s = file->Parse();
  if (!s.ok()) return Status(s.code(), s.message() + " (" + path + ")");
  return file;
}

Result<std::unique_ptr<GgufFile>> GgufFile::FromMemory(std::span<const uint8_t> bytes) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = "<memory>";
  file->base_ = bytes.data();
  file->size_ = bytes.size();
  if (Status s = file->Parse(); !s.ok()) return s;
  return file;
}

Status GgufFile::Parse() {
  Cursor c(base_, size_);

  // Header: magic, version, tensor count, metadata count.
  if (size_ < sizeof(kMagic)) {
    return Corrupt("file of " + Str(size_) + " bytes is too short for the GGUF magic");
  }
  if (std::memcmp(base_, kMagic, sizeof(kMagic)) != 0) {
    return Corrupt("bad magic at offset 0 (not a GGUF file): " +
                   Quote(std::string_view(reinterpret_cast<const char*>(base_), 4)));
  }
  uint8_t magic_skip[4];
  (void)c.Read(&magic_skip);
  if (!c.Read(&version_)) return Truncated("header version", 4, 4, c.remaining());
  if (version_ == 1) {
    return UnimplementedError("gguf: version 1 is not supported (only v2 and v3)");
  }
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped >= 1 && swapped <= 3) {
      return UnimplementedError("gguf: big-endian file (version " + Str(swapped) +
                                " stored big-endian) is not supported");
    }
    return UnimplementedError("gguf: unsupported version " + Str(version_) + " (expected 2 or 3)");
  }
  uint64_t tensor_count = 0;
  uint64_t kv_count = 0;
  if (!c.Read(&tensor_count)) return Truncated("header tensor count", 8, 8, c.remaining());
  if (!c.Read(&kv_count)) return Truncated("header metadata count", 16, 8, c.remaining());
  if (kv_count > c.remaining() / kMinKvBytes) {
    return Corrupt("metadata count " + Str(kv_count) + " at offset 16 cannot fit in a file of " +
                   Str(size_) + " bytes");
  }
  if (tensor_count > c.remaining() / kMinTensorInfoBytes) {
    return Corrupt("tensor count " + Str(tensor_count) + " at offset 8 cannot fit in a file of " +
                   Str(size_) + " bytes");
  }

  // Metadata.
  for (uint64_t i = 0; i < kv_count; ++i) {
    const uint64_t at = c.pos();
    std::string key;
    if (Status s = ReadString(c, "metadata key #" + Str(i), &key); !s.ok()) return s;
    const std::string what = "key " + Quote(key);
    if (metadata_.count(key) != 0) {
      return Corrupt("duplicate " + what + " at offset " + Str(at));
    }
    const uint64_t type_at = c.pos();
    uint32_t type = 0;
    if (!c.Read(&type)) return Truncated(what + " value type", type_at, 4, c.remaining());
    if (!IsValidType(type)) {
      return Corrupt(what + ": unknown value type " + Str(type) + " at offset " + Str(type_at));
    }
    GgufValue value;
    if (Status s = ReadValue(c, static_cast<GgufType>(type), 0, what, &value); !s.ok()) return s;
    metadata_.emplace(std::move(key), std::move(value));
  }

  // general.alignment.
  alignment_ = kDefaultAlignment;
  if (const GgufValue* a = Find("general.alignment")) {
    const std::optional<int64_t> v = a->AsInt();
    if (!v.has_value()) {
      return Corrupt("general.alignment must be an integer (it is " + GgufTypeName(a->type) + ")");
    }
    if (*v <= 0 || *v > (int64_t{1} << 31) || (*v & (*v - 1)) != 0) {
      return Corrupt("general.alignment must be a nonzero power of two (got " + std::to_string(*v) +
                     ")");
    }
    alignment_ = static_cast<uint64_t>(*v);
  }

  // Tensor infos.
  tensors_.reserve(tensor_count);  // bounded by the file size above
  for (uint64_t i = 0; i < tensor_count; ++i) {
    const uint64_t at = c.pos();
    GgufTensorInfo t;
    if (Status s = ReadString(c, "tensor #" + Str(i) + " name", &t.name); !s.ok()) return s;
    const std::string what = "tensor " + Quote(t.name);
    if (tensor_index_.count(t.name) != 0) {
      return Corrupt("duplicate " + what + " at offset " + Str(at));
    }
    uint32_t n_dims = 0;
    if (!c.Read(&n_dims)) return Truncated(what + " n_dims", c.pos(), 4, c.remaining());
    if (n_dims == 0 || n_dims > kMaxTensorDims) {
      return Corrupt(what + ": n_dims " + Str(n_dims) + " is not in 1.." + Str(kMaxTensorDims));
    }
    t.dims.resize(n_dims);
    int64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      if (!c.Read(&dim)) return Truncated(what + " dims", c.pos(), 8, c.remaining());
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Corrupt(what + ": dimension " + Str(d) + " is " + Str(dim) +
                       " (must be in 1..2^63-1)");
      }
      t.dims[d] = static_cast<int64_t>(dim);
      if (__builtin_mul_overflow(n_elems, t.dims[d], &n_elems)) {
        return Corrupt(what + ": element count overflows (dims product exceeds 2^63-1)");
      }
    }
    if (!c.Read(&t.ggml_type)) return Truncated(what + " type", c.pos(), 4, c.remaining());
    const GgmlTypeTraits* traits = GetGgmlTypeTraits(t.ggml_type);
    if (traits == nullptr) {
      return Corrupt(what + ": unknown ggml type id " + Str(t.ggml_type));
    }
    if (t.dims[0] % traits->block_elems != 0) {
      return Corrupt(what + ": row length " + std::to_string(t.dims[0]) +
                     " is not a multiple of the " + std::string(traits->name) + " block size " +
                     Str(traits->block_elems));
    }
    if (__builtin_mul_overflow(static_cast<uint64_t>(n_elems) / traits->block_elems,
                               uint64_t{traits->block_bytes}, &t.size_bytes)) {
      return Corrupt(what + ": byte size overflows");
    }
    const std::optional<kernels::DType> dtype = DTypeFromGgml(t.ggml_type);
    t.supported = dtype.has_value();
    if (dtype) t.dtype = *dtype;
    if (!c.Read(&t.offset)) return Truncated(what + " offset", c.pos(), 8, c.remaining());
    if (t.offset % alignment_ != 0) {
      return Corrupt(what + ": offset " + Str(t.offset) + " is not a multiple of the alignment " +
                     Str(alignment_));
    }
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the aligned end of the header; every tensor must lie inside it.
  const uint64_t header_end = c.pos();  // <= size_, and alignment_ <= 2^31: no overflow
  const uint64_t data_start = (header_end + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t data_bytes = data_start <= size_ ? size_ - data_start : 0;
  for (GgufTensorInfo& t : tensors_) {
    if (t.offset > data_bytes || t.size_bytes > data_bytes - t.offset) {
      return Corrupt("tensor " + Quote(t.name) + ": data at offset " + Str(t.offset) + " (+" +
                     Str(t.size_bytes) + " bytes) runs past the end of the data section (" +
                     Str(data_bytes) + " bytes at offset " + Str(data_start) + ", file size " +
                     Str(size_) + ")");
    }
    t.data = base_ + data_start + t.offset;
  }
  return Status::Ok();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  const auto it = metadata_.find(std::string(key));
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

Status KeyNotFound(std::string_view key) {
  return NotFoundError("gguf: key " + Quote(key) + " not found");
}

Status WrongType(std::string_view key, const GgufValue& v, std::string_view wanted) {
  std::string have = GgufTypeName(v.type);
  if (v.type == GgufType::kArray) have = "array of " + GgufTypeName(v.array_elem_type);
  return InvalidArgumentError("gguf: key " + Quote(key) + " is " + have + ", not " +
                              std::string(wanted));
}

}  // namespace

Result<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(key);
  const std::optional<int64_t> i = v->AsInt();
  if (!i) return WrongType(key, *v, "an integer that fits int64");
  return *i;
}

Result<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(key);
  const std::optional<double> d = v->AsFloat();
  if (!d) return WrongType(key, *v, "a number");
  return *d;
}

Result<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(key);
  const std::string* s = v->AsString();
  if (s == nullptr) return WrongType(key, *v, "a string");
  return *s;
}

Result<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(key);
  const GgufArray* a = v->AsArray();
  if (a == nullptr || v->array_elem_type != GgufType::kString) {
    return WrongType(key, *v, "an array of string");
  }
  std::vector<std::string> out;
  out.reserve(a->size());
  for (const GgufValue& e : *a) {
    const std::string* s = e.AsString();
    if (s == nullptr) return WrongType(key, *v, "an array of string");
    out.push_back(*s);
  }
  return out;
}

Result<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(key);
  const GgufArray* a = v->AsArray();
  if (a == nullptr || !IsIntegerType(v->array_elem_type)) {
    return WrongType(key, *v, "an array of integers");
  }
  std::vector<int64_t> out;
  out.reserve(a->size());
  for (const GgufValue& e : *a) {
    const std::optional<int64_t> i = e.AsInt();
    if (!i) return WrongType(key, *v, "an array of integers that fit int64");
    out.push_back(*i);
  }
  return out;
}

Result<std::vector<double>> GgufFile::GetFloatArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return KeyNotFound(key);
  const GgufArray* a = v->AsArray();
  if (a == nullptr || !(IsFloatType(v->array_elem_type) || IsIntegerType(v->array_elem_type))) {
    return WrongType(key, *v, "an array of numbers");
  }
  std::vector<double> out;
  out.reserve(a->size());
  for (const GgufValue& e : *a) {
    const std::optional<double> d = e.AsFloat();
    if (!d) return WrongType(key, *v, "an array of numbers");
    out.push_back(*d);
  }
  return out;
}

}  // namespace kvtier::model
