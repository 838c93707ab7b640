// Tests of the GGUF reader and writer: round trips of every metadata type and supported tensor
// type, and malformed files made by the writer and then corrupted.
#include "model/gguf.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "model/gguf_writer.h"
#include "tests/support/test_support.h"

namespace kvtier::model {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Bytes = std::vector<uint8_t>;

constexpr uint32_t kF32 = 0;
constexpr uint32_t kQ5K = 13;

Result<std::unique_ptr<GgufFile>> Parse(const Bytes& b) {
  return GgufFile::FromMemory(std::span<const uint8_t>(b.data(), b.size()));
}

// Parses `b`, expects failure, and returns the message (checked to be one "gguf: " line).
std::string ParseError(const Bytes& b) {
  auto r = Parse(b);
  EXPECT_FALSE(r.ok()) << "parsed a malformed file";
  if (r.ok()) return "";
  const std::string& m = r.status().message();
  EXPECT_THAT(m, StartsWith("gguf: "));
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  return m;
}

template <typename T>
void Poke(Bytes& b, size_t pos, T v) {
  ASSERT_LE(pos + sizeof(T), b.size());
  std::memcpy(b.data() + pos, &v, sizeof(T));
}

// Position just past a length-prefixed string `s` (a key or tensor name) in the file.
size_t After(const Bytes& b, const std::string& s) {
  Bytes pattern(8 + s.size());
  const uint64_t len = s.size();
  std::memcpy(pattern.data(), &len, 8);
  std::memcpy(pattern.data() + 8, s.data(), s.size());
  auto it = std::search(b.begin(), b.end(), pattern.begin(), pattern.end());
  EXPECT_NE(it, b.end()) << "no string " << s;
  return static_cast<size_t>(it - b.begin()) + pattern.size();
}

Bytes F32Bytes(size_t n) {
  Bytes out(n * 4);
  for (size_t i = 0; i < n; ++i) {
    const float f = static_cast<float>(i) * 0.5f;
    std::memcpy(out.data() + i * 4, &f, 4);
  }
  return out;
}

// A small valid file: a few keys and two f32 tensors; the last tensor ends on an alignment
// boundary, so the file has no trailing padding and every strict prefix is malformed.
GgufWriter SmallWriter() {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetUint32("test.u32", 7);
  w.SetInt32Array("test.arr", {1, 2, 3});
  w.SetBool("dup.a", true);
  w.SetBool("dup.b", false);
  w.AddRawTensor("tensor.a", {8}, kF32, F32Bytes(8));
  w.AddRawTensor("tensor.b", {8, 2}, kF32, F32Bytes(16));
  return w;
}

Bytes SmallFile() { return SmallWriter().Serialize(); }

GgufValue Num(GgufType t, uint64_t u) {
  GgufValue v;
  v.type = t;
  v.v = u;
  return v;
}
GgufValue SNum(GgufType t, int64_t i) {
  GgufValue v;
  v.type = t;
  v.v = i;
  return v;
}
GgufValue Flt(GgufType t, double d) {
  GgufValue v;
  v.type = t;
  v.v = d;
  return v;
}
GgufValue Arr(GgufType elem, GgufArray a) {
  GgufValue v;
  v.type = GgufType::kArray;
  v.array_elem_type = elem;
  v.v = std::move(a);
  return v;
}
GgufValue Nested(int levels) {  // `levels` arrays deep, innermost holds one uint8
  GgufValue v = Arr(GgufType::kUint8, {Num(GgufType::kUint8, 5)});
  for (int i = 1; i < levels; ++i) v = Arr(GgufType::kArray, {v});
  return v;
}

// ----- round trips ---------------------------------------------------------------------------

TEST(GgufTest, SmallFileParses) {
  const Bytes b = SmallFile();
  auto r = Parse(b);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const GgufFile& f = **r;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.file_size(), b.size());
  EXPECT_EQ(f.metadata().size(), 5u);
  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensorInfo* a = f.FindTensor("tensor.a");
  const GgufTensorInfo* tb = f.FindTensor("tensor.b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(f.FindTensor("tensor.c"), nullptr);
  EXPECT_EQ(a->offset, 0u);
  EXPECT_EQ(a->size_bytes, 32u);
  EXPECT_EQ(tb->offset, 32u);
  EXPECT_EQ(tb->size_bytes, 64u);
  EXPECT_EQ(tb->dims, (std::vector<int64_t>{8, 2}));
  EXPECT_EQ(tb->NumElements(), 16);
  EXPECT_TRUE(tb->supported);
  EXPECT_EQ(tb->dtype, kernels::DType::kF32);
  EXPECT_EQ(tb->data + tb->size_bytes, b.data() + b.size());  // no trailing padding
  EXPECT_EQ((a->data - b.data()) % 32, 0);
  float x;
  std::memcpy(&x, tb->data + 4 * 15, 4);
  EXPECT_EQ(x, 7.5f);
}

TEST(GgufTest, RoundTripEveryMetadataType) {
  GgufWriter w;
  w.SetValue("u8", Num(GgufType::kUint8, 200));
  w.SetValue("i8", SNum(GgufType::kInt8, -100));
  w.SetValue("u16", Num(GgufType::kUint16, 60000));
  w.SetValue("i16", SNum(GgufType::kInt16, -30000));
  w.SetUint32("u32", 4000000000u);
  w.SetInt32("i32", -2000000000);
  w.SetUint64("u64", (uint64_t{1} << 63) + 5);
  w.SetValue("u64small", Num(GgufType::kUint64, 42));
  w.SetValue("i64", SNum(GgufType::kInt64, -(int64_t{1} << 62)));
  w.SetFloat32("f32", 1.5f);
  w.SetValue("f64", Flt(GgufType::kFloat64, 3.141592653589793));
  w.SetBool("bool", true);
  w.SetString("str", std::string("h\xc3\xa9llo\0x", 8));
  w.SetString("empty", "");
  w.SetStringArray("strs", {"a", "", "ccc"});
  w.SetInt32Array("ints", {-1, 0, 1 << 30});
  w.SetFloat32Array("floats", {0.25f, -2.0f});
  w.SetValue("empty_arr", Arr(GgufType::kUint16, {}));
  w.SetValue("bools", Arr(GgufType::kBool, {}));
  GgufValue t, f;
  t.type = f.type = GgufType::kBool;
  t.v = true;
  f.v = false;
  w.SetValue("bools", Arr(GgufType::kBool, {t, f, t}));
  w.SetValue("nested", Arr(GgufType::kArray,
                           {Arr(GgufType::kInt16, {SNum(GgufType::kInt16, -7)}),
                            Arr(GgufType::kString, {}), Arr(GgufType::kArray, {Nested(2)})}));
  w.SetValue("deep", Nested(8));
  w.SetString("str", std::string("h\xc3\xa9llo\0x", 8));  // replaces, not duplicates

  const Bytes b = w.Serialize();
  auto r = Parse(b);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const GgufFile& g = **r;
  EXPECT_EQ(g.metadata().size(), 21u);

  EXPECT_EQ(g.Find("u8")->type, GgufType::kUint8);
  EXPECT_EQ(*g.GetInt("u8"), 200);
  EXPECT_EQ(g.Find("i8")->type, GgufType::kInt8);
  EXPECT_EQ(*g.GetInt("i8"), -100);
  EXPECT_EQ(*g.GetInt("u16"), 60000);
  EXPECT_EQ(g.Find("i16")->type, GgufType::kInt16);
  EXPECT_EQ(*g.GetInt("i16"), -30000);
  EXPECT_EQ(*g.GetInt("u32"), 4000000000);
  EXPECT_EQ(*g.GetInt("i32"), -2000000000);
  EXPECT_EQ(g.Find("u64")->type, GgufType::kUint64);
  EXPECT_EQ(std::get<uint64_t>(g.Find("u64")->v), (uint64_t{1} << 63) + 5);
  EXPECT_FALSE(g.Find("u64")->AsInt().has_value());
  EXPECT_EQ(g.GetInt("u64").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*g.GetInt("u64small"), 42);
  EXPECT_EQ(*g.GetInt("i64"), -(int64_t{1} << 62));
  EXPECT_EQ(g.Find("f32")->type, GgufType::kFloat32);
  EXPECT_EQ(*g.GetFloat("f32"), 1.5);
  EXPECT_EQ(*g.GetFloat("f64"), 3.141592653589793);
  EXPECT_EQ(*g.GetFloat("i32"), -2000000000.0);  // integers read as numbers
  EXPECT_EQ(g.GetInt("f32").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g.Find("bool")->AsBool(), std::optional<bool>(true));
  EXPECT_FALSE(g.Find("bool")->AsInt().has_value());
  EXPECT_FALSE(g.Find("u8")->AsBool().has_value());
  EXPECT_EQ(*g.GetString("str"), std::string("h\xc3\xa9llo\0x", 8));
  EXPECT_EQ(*g.GetString("empty"), "");
  EXPECT_EQ(g.Find("str")->AsArray(), nullptr);
  EXPECT_EQ(g.Find("strs")->AsString(), nullptr);

  EXPECT_EQ(*g.GetStringArray("strs"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(*g.GetIntArray("ints"), (std::vector<int64_t>{-1, 0, 1 << 30}));
  EXPECT_EQ(*g.GetFloatArray("floats"), (std::vector<double>{0.25, -2.0}));
  EXPECT_EQ(*g.GetFloatArray("ints"), (std::vector<double>{-1, 0, 1 << 30}));
  EXPECT_TRUE(g.GetIntArray("empty_arr")->empty());
  EXPECT_EQ(g.Find("empty_arr")->array_elem_type, GgufType::kUint16);
  const GgufArray* bl = g.Find("bools")->AsArray();
  ASSERT_NE(bl, nullptr);
  ASSERT_EQ(bl->size(), 3u);
  EXPECT_EQ((*bl)[1].AsBool(), std::optional<bool>(false));

  const GgufValue* nested = g.Find("nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->array_elem_type, GgufType::kArray);
  const GgufArray& outer = *nested->AsArray();
  ASSERT_EQ(outer.size(), 3u);
  EXPECT_EQ(outer[0].array_elem_type, GgufType::kInt16);
  EXPECT_EQ((*outer[0].AsArray())[0].AsInt(), std::optional<int64_t>(-7));
  EXPECT_EQ(outer[1].array_elem_type, GgufType::kString);
  EXPECT_TRUE(outer[1].AsArray()->empty());
  const GgufValue& two = (*outer[2].AsArray())[0];
  EXPECT_EQ((*(*two.AsArray())[0].AsArray())[0].AsInt(), std::optional<int64_t>(5));

  const GgufValue* deep = g.Find("deep");
  for (int i = 0; i < 7; ++i) {
    ASSERT_EQ(deep->array_elem_type, GgufType::kArray) << i;
    deep = &(*deep->AsArray())[0];
  }
  EXPECT_EQ((*deep->AsArray())[0].AsInt(), std::optional<int64_t>(5));

  // Getter errors.
  EXPECT_EQ(g.GetInt("missing").status().code(), StatusCode::kNotFound);
  EXPECT_THAT(g.GetInt("missing").status().message(), HasSubstr("'missing' not found"));
  EXPECT_EQ(g.GetString("u8").status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(g.GetString("u8").status().message(), HasSubstr("'u8' is uint8"));
  EXPECT_EQ(g.GetStringArray("ints").status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(g.GetStringArray("ints").status().message(), HasSubstr("array of int32"));
  EXPECT_EQ(g.GetIntArray("strs").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g.GetFloatArray("str").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(g.GetIntArray("nested").status().code(), StatusCode::kInvalidArgument);
}

struct TypeCase {
  kernels::DType dtype;
  uint32_t ggml_type;
  double max_abs_err;  // for values in [-1, 1]
};

TEST(GgufTest, RoundTripTensorsOfEverySupportedType) {
  using kernels::DType;
  const std::vector<TypeCase> cases = {
      {DType::kF32, 0, 0.0},    {DType::kF16, 1, 1e-3},   {DType::kBF16, 30, 8e-3},
      {DType::kQ8_0, 8, 0.01},  {DType::kQ4_0, 2, 0.15},  {DType::kQ4_1, 3, 0.1},
      {DType::kQ6_K, 14, 0.05}, {DType::kQ4_K, 12, 0.15},
  };
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const std::vector<int64_t> dims = {256, 3, 2};
  const int64_t n = 256 * 3 * 2;
  std::vector<std::vector<float>> values(cases.size());
  GgufWriter w;
  w.set_alignment(64);
  w.SetString("general.architecture", "test");
  for (size_t i = 0; i < cases.size(); ++i) {
    values[i].resize(n);
    for (float& x : values[i]) x = dist(rng);
    w.AddTensor("t" + std::to_string(i), dims, cases[i].dtype, values[i]);
  }
  const Bytes b = w.Serialize();
  auto r = Parse(b);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const GgufFile& g = **r;
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(*g.GetInt("general.alignment"), 64);
  ASSERT_EQ(g.tensors().size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(GgmlTypeName(cases[i].ggml_type));
    const GgufTensorInfo& t = g.tensors()[i];
    EXPECT_EQ(t.name, "t" + std::to_string(i));
    EXPECT_EQ(t.dims, dims);
    EXPECT_EQ(t.ggml_type, cases[i].ggml_type);
    EXPECT_TRUE(t.supported);
    EXPECT_EQ(t.dtype, cases[i].dtype);
    EXPECT_EQ(GgmlFromDType(cases[i].dtype), cases[i].ggml_type);
    EXPECT_EQ(DTypeFromGgml(cases[i].ggml_type), std::optional<DType>(cases[i].dtype));
    const size_t row_bytes = kernels::RowBytes(cases[i].dtype, 256);
    ASSERT_EQ(t.size_bytes, row_bytes * 6);
    EXPECT_EQ(t.offset % 64, 0u);
    EXPECT_EQ((t.data - b.data()) % 64, 0);
    // The bytes are exactly what the quantizer wrote.
    Bytes expect(row_bytes);
    std::vector<float> back(256);
    double max_err = 0;
    for (int row = 0; row < 6; ++row) {
      kernels::QuantizeRow(cases[i].dtype, values[i].data() + row * 256, expect.data(), 256);
      ASSERT_EQ(std::memcmp(expect.data(), t.data + row * row_bytes, row_bytes), 0) << row;
      kernels::DequantizeRow(cases[i].dtype, t.data + row * row_bytes, back.data(), 256);
      for (int j = 0; j < 256; ++j) {
        max_err = std::max(max_err, std::fabs(double{back[j]} - values[i][row * 256 + j]));
      }
    }
    EXPECT_LE(max_err, cases[i].max_abs_err);
  }
}

TEST(GgufTest, OpenMapsAFile) {
  const std::string dir = kvtier::testing::MakeTempDir("gguf_test");
  const std::string path = dir + "/small.gguf";
  ASSERT_TRUE(SmallWriter().WriteFile(path).ok());
  auto r = GgufFile::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->path(), path);
  EXPECT_EQ((*r)->file_size(), SmallFile().size());
  EXPECT_EQ(*(*r)->GetString("general.architecture"), "llama");
  const GgufTensorInfo* t = (*r)->FindTensor("tensor.b");
  ASSERT_NE(t, nullptr);
  float x;
  std::memcpy(&x, t->data + 4, 4);
  EXPECT_EQ(x, 0.5f);

  auto missing = GgufFile::Open(dir + "/nope.gguf");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), StartsWith("gguf: cannot open"));
  auto directory = GgufFile::Open(dir);
  ASSERT_FALSE(directory.ok());
  EXPECT_THAT(directory.status().message(), HasSubstr("not a regular file"));

  Bytes bad = SmallFile();
  bad.resize(bad.size() - 1);
  const std::string bad_path = dir + "/bad.gguf";
  std::FILE* fp = std::fopen(bad_path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  ASSERT_EQ(std::fwrite(bad.data(), 1, bad.size(), fp), bad.size());
  std::fclose(fp);
  auto truncated = GgufFile::Open(bad_path);
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(truncated.status().message(), HasSubstr("tensor 'tensor.b'"));
  EXPECT_THAT(truncated.status().message(), HasSubstr(bad_path));
  std::filesystem::remove_all(dir);
}

TEST(GgufTest, TypeTable) {
  EXPECT_EQ(GgmlTypeName(0), "f32");
  EXPECT_EQ(GgmlTypeName(13), "q5_k");
  EXPECT_EQ(GgmlTypeName(30), "bf16");
  EXPECT_EQ(GgmlTypeName(99), "type 99");
  EXPECT_EQ(GetGgmlTypeTraits(4), nullptr);  // removed q4_2
  EXPECT_EQ(GetGgmlTypeTraits(77), nullptr);
  EXPECT_EQ(GetGgmlTypeTraits(14)->block_bytes, 210u);
  EXPECT_EQ(GetGgmlTypeTraits(12)->block_bytes, 144u);
  EXPECT_EQ(GetGgmlTypeTraits(3)->block_bytes, 20u);
  EXPECT_EQ(GetGgmlTypeTraits(15)->block_elems, 256u);
  EXPECT_FALSE(DTypeFromGgml(13).has_value());
  EXPECT_FALSE(DTypeFromGgml(28).has_value());
  EXPECT_EQ(GgufTypeName(GgufType::kFloat64), "float64");
  // The supported types agree with kernels/ on block geometry.
  for (uint32_t id : {0u, 1u, 2u, 3u, 8u, 12u, 14u, 30u}) {
    const auto dtype = DTypeFromGgml(id);
    ASSERT_TRUE(dtype.has_value()) << id;
    const kernels::DTypeInfo& info = kernels::GetDTypeInfo(*dtype);
    EXPECT_EQ(static_cast<uint32_t>(info.block_elems), GetGgmlTypeTraits(id)->block_elems);
    EXPECT_EQ(static_cast<uint32_t>(info.block_bytes), GetGgmlTypeTraits(id)->block_bytes);
  }
}

TEST(GgufTest, UnsupportedButKnownTypeOpens) {
  GgufWriter w;
  w.AddRawTensor("blk.0.ffn_down.weight", {256, 2}, kQ5K, Bytes(2 * 176, 0));
  const Bytes b = w.Serialize();
  auto r = Parse(b);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const GgufTensorInfo& t = (*r)->tensors()[0];
  EXPECT_FALSE(t.supported);
  EXPECT_EQ(t.ggml_type, kQ5K);
  EXPECT_EQ(GgmlTypeName(t.ggml_type), "q5_k");
  EXPECT_EQ(t.size_bytes, 2u * 176);
}

// ----- malformed files ------------------------------------------------------------------------

TEST(GgufTest, EmptyAndTiny) {
  EXPECT_THAT(ParseError({}), HasSubstr("too short"));
  EXPECT_THAT(ParseError({'G', 'G'}), HasSubstr("too short"));
  EXPECT_THAT(ParseError({'G', 'G', 'U', 'F', 3}), HasSubstr("truncated file: header version"));
}

TEST(GgufTest, BadMagic) {
  Bytes b = SmallFile();
  b[0] = 'X';
  EXPECT_THAT(ParseError(b), HasSubstr("bad magic"));
}

TEST(GgufTest, Versions) {
  Bytes b = SmallFile();
  Poke<uint32_t>(b, 4, 1);
  EXPECT_THAT(ParseError(b), HasSubstr("version 1 is not supported"));
  Poke<uint32_t>(b, 4, 0xffffffffu);
  EXPECT_THAT(ParseError(b), HasSubstr("unsupported version 4294967295"));
  Poke<uint32_t>(b, 4, 4);
  EXPECT_THAT(ParseError(b), HasSubstr("unsupported version 4"));
  Poke<uint32_t>(b, 4, 0);
  EXPECT_THAT(ParseError(b), HasSubstr("unsupported version 0"));
  Poke<uint32_t>(b, 4, 0x03000000u);  // 3, big-endian
  EXPECT_THAT(ParseError(b), HasSubstr("big-endian"));
  Poke<uint32_t>(b, 4, 2);  // v2 has the same layout as v3
  EXPECT_TRUE(Parse(b).ok());
}

TEST(GgufTest, TruncatedAtEveryOffsetFailsCleanly) {
  const Bytes b = SmallFile();
  ASSERT_TRUE(Parse(b).ok());
  for (size_t n = 0; n < b.size(); ++n) {
    SCOPED_TRACE(n);
    const Bytes cut(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));  // exact heap size
    const std::string m = ParseError(cut);
    if (n >= 24) {
      EXPECT_TRUE(m.find("truncated") != std::string::npos ||
                  m.find("past the end") != std::string::npos ||
                  m.find("left in the file") != std::string::npos ||
                  m.find("cannot fit") != std::string::npos)
          << m;
    }
  }
}

TEST(GgufTest, RandomCorruptionNeverCrashes) {
  const Bytes good = SmallFile();
  std::mt19937 rng(42);
  int parsed = 0;
  for (int iter = 0; iter < 5000; ++iter) {
    Bytes b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    auto r = Parse(b);
    if (r.ok()) {
      ++parsed;
      for (const auto& t : (*r)->tensors()) {
        ASSERT_GE(t.data, b.data());
        ASSERT_LE(t.data + t.size_bytes, b.data() + b.size());
      }
    } else {
      ASSERT_THAT(r.status().message(), StartsWith("gguf: "));
    }
  }
  EXPECT_GT(parsed, 0);  // flips inside tensor data still parse
}

TEST(GgufTest, HugeCounts) {
  Bytes b = SmallFile();
  Poke<uint64_t>(b, 8, uint64_t{1} << 60);
  EXPECT_THAT(ParseError(b), HasSubstr("tensor count 1152921504606846976"));
  b = SmallFile();
  Poke<uint64_t>(b, 16, uint64_t{1} << 60);
  EXPECT_THAT(ParseError(b), HasSubstr("metadata count 1152921504606846976"));
  b = SmallFile();
  Poke<uint64_t>(b, 16, 1000);  // plausible-looking but more than the file holds
  EXPECT_THAT(ParseError(b), HasSubstr("metadata count 1000"));
}

TEST(GgufTest, HugeStringLength) {
  Bytes b = SmallFile();
  Poke<uint64_t>(b, After(b, "general.architecture") + 4, uint64_t{1} << 60);
  const std::string m = ParseError(b);
  EXPECT_THAT(m, HasSubstr("key 'general.architecture'"));
  EXPECT_THAT(m, HasSubstr("string length 1152921504606846976"));
  // A key length.
  b = SmallFile();
  Poke<uint64_t>(b, 24, ~uint64_t{0});
  EXPECT_THAT(ParseError(b), HasSubstr("metadata key #0: string length 18446744073709551615"));
  // A tensor name length.
  b = SmallFile();
  Poke<uint64_t>(b, After(b, "tensor.b") - 8 - 8, uint64_t{1} << 62);
  EXPECT_THAT(ParseError(b), HasSubstr("tensor #1 name: string length"));
}

TEST(GgufTest, HugeArrayCount) {
  Bytes b = SmallFile();
  const size_t at = After(b, "test.arr") + 4;  // element type, then count
  Poke<uint64_t>(b, at + 4, uint64_t{1} << 60);
  const std::string m = ParseError(b);
  EXPECT_THAT(m, HasSubstr("key 'test.arr'"));
  EXPECT_THAT(m, HasSubstr("array of 1152921504606846976 int32"));
  // Arrays of strings and of arrays are bounded by their smallest element encoding too.
  GgufWriter w;
  w.SetValue("a", Arr(GgufType::kArray, {Nested(1)}));
  w.SetStringArray("s", {"x"});
  Bytes c = w.Serialize();
  Poke<uint64_t>(c, After(c, "a") + 8, uint64_t{1} << 59);
  EXPECT_THAT(ParseError(c), HasSubstr("array of 576460752303423488 array"));
  c = w.Serialize();
  Poke<uint64_t>(c, After(c, "s") + 8, uint64_t{1} << 59);
  EXPECT_THAT(ParseError(c), HasSubstr("array of 576460752303423488 string"));
}

TEST(GgufTest, UnknownValueTypes) {
  Bytes b = SmallFile();
  Poke<uint32_t>(b, After(b, "test.u32"), 13);
  std::string m = ParseError(b);
  EXPECT_THAT(m, HasSubstr("key 'test.u32': unknown value type 13"));
  b = SmallFile();
  Poke<uint32_t>(b, After(b, "test.arr") + 4, 0xdeadu);
  EXPECT_THAT(ParseError(b), HasSubstr("key 'test.arr': unknown array element type 57005"));
}

TEST(GgufTest, DeeplyNestedArrays) {
  GgufWriter w;
  w.SetValue("deep", Nested(9));
  EXPECT_THAT(ParseError(w.Serialize()), HasSubstr("key 'deep': arrays nested deeper than 8"));
  w.SetValue("deep", Nested(8));
  EXPECT_TRUE(Parse(w.Serialize()).ok());
}

TEST(GgufTest, DuplicateKey) {
  Bytes b = SmallFile();
  b[After(b, "dup.b") - 1] = 'a';
  EXPECT_THAT(ParseError(b), HasSubstr("duplicate key 'dup.a'"));
}

TEST(GgufTest, DuplicateTensor) {
  Bytes b = SmallFile();
  b[After(b, "tensor.b") - 1] = 'a';
  EXPECT_THAT(ParseError(b), HasSubstr("duplicate tensor 'tensor.a'"));
}

TEST(GgufTest, BadDims) {
  Bytes b = SmallFile();
  const size_t nd = After(b, "tensor.b");  // n_dims, dims[2], type, offset
  Poke<uint32_t>(b, nd, 0);
  EXPECT_THAT(ParseError(b), HasSubstr("tensor 'tensor.b': n_dims 0 is not in 1..4"));
  Poke<uint32_t>(b, nd, 5);
  EXPECT_THAT(ParseError(b), HasSubstr("tensor 'tensor.b': n_dims 5 is not in 1..4"));

  b = SmallFile();
  Poke<uint64_t>(b, nd + 4 + 8, 0);
  EXPECT_THAT(ParseError(b), HasSubstr("tensor 'tensor.b': dimension 1 is 0"));
  Poke<uint64_t>(b, nd + 4 + 8, ~uint64_t{0});
  EXPECT_THAT(ParseError(b), HasSubstr("tensor 'tensor.b': dimension 1 is 18446744073709551615"));
  Poke<uint64_t>(b, nd + 4 + 8, uint64_t{1} << 62);  // 8 * 2^62 overflows int64
  EXPECT_THAT(ParseError(b), HasSubstr("tensor 'tensor.b': element count overflows"));
  Poke<uint64_t>(b, nd + 4 + 8, uint64_t{1} << 58);  // 2^61 elements: size fits, file does not
  EXPECT_THAT(ParseError(b), HasSubstr("tensor 'tensor.b': data at offset 32"));

  // Byte size overflow (elements fit int64, bytes do not fit uint64).
  GgufWriter w;
  w.AddRawTensor("big", {int64_t{1} << 62}, kF32, Bytes(4));
  EXPECT_THAT(ParseError(w.Serialize()), HasSubstr("tensor 'big': byte size overflows"));
}

TEST(GgufTest, RowNotAMultipleOfTheBlock) {
  GgufWriter w;
  w.AddRawTensor("q", {33}, 8, Bytes(34));
  EXPECT_THAT(ParseError(w.Serialize()),
              HasSubstr("tensor 'q': row length 33 is not a multiple of the q8_0 block size 32"));
}

TEST(GgufTest, BadOffsets) {
  Bytes b = SmallFile();
  const size_t off = After(b, "tensor.b") + 4 + 16 + 4;
  Poke<uint64_t>(b, off, 1024);
  EXPECT_THAT(ParseError(b), HasSubstr("tensor 'tensor.b': data at offset 1024 (+64 bytes) runs "
                                       "past the end of the data section"));
  Poke<uint64_t>(b, off, 33);
  EXPECT_THAT(ParseError(b),
              HasSubstr("tensor 'tensor.b': offset 33 is not a multiple of the alignment 32"));
  Poke<uint64_t>(b, off, ~uint64_t{0} - 31);  // aligned, offset + size overflows uint64
  EXPECT_THAT(ParseError(b), HasSubstr("past the end"));
}

TEST(GgufTest, UnknownTensorType) {
  GgufWriter w;
  w.AddRawTensor("w", {8}, 77, Bytes(32));
  EXPECT_THAT(ParseError(w.Serialize()), HasSubstr("tensor 'w': unknown ggml type id 77"));
  GgufWriter removed;
  removed.AddRawTensor("w", {32}, 4, Bytes(32));
  EXPECT_THAT(ParseError(removed.Serialize()), HasSubstr("tensor 'w': unknown ggml type id 4"));
}

TEST(GgufTest, Alignment) {
  GgufWriter w = SmallWriter();
  w.set_alignment(48);
  EXPECT_THAT(ParseError(w.Serialize()),
              HasSubstr("general.alignment must be a nonzero power of two (got 48)"));
  w.set_alignment(0);
  EXPECT_THAT(ParseError(w.Serialize()),
              HasSubstr("general.alignment must be a nonzero power of two (got 0)"));
  GgufWriter s = SmallWriter();
  s.SetString("general.alignment", "32");
  EXPECT_THAT(ParseError(s.Serialize()), HasSubstr("general.alignment must be an integer"));
  GgufWriter big = SmallWriter();
  big.set_alignment(256);
  auto r = Parse(big.Serialize());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->alignment(), 256u);
  EXPECT_EQ((*r)->FindTensor("tensor.b")->offset, 256u);
}

TEST(GgufTest, NoTensorsNeedNoDataSection) {
  GgufWriter w;
  w.SetUint32("x", 1);
  Bytes b = w.Serialize();
  auto r = Parse(b);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*r)->tensors().empty());
  // Without the padding to the data section too: header, key "x", type, uint32 value.
  b.resize(24 + 9 + 4 + 4);
  EXPECT_TRUE(Parse(b).ok());
}

TEST(GgufTest, ErrorsQuoteOddNames) {
  GgufWriter w;
  w.AddRawTensor(std::string("bad\nname\x01", 9), {8}, 77, Bytes(32));
  const std::string m = ParseError(w.Serialize());
  EXPECT_THAT(m, HasSubstr("tensor 'bad\\x0aname\\x01'"));
}

// Regenerates the libFuzzer seed corpus (fuzz/corpus/gguf/) when KVTIER_GGUF_CORPUS_DIR names a
// directory:  KVTIER_GGUF_CORPUS_DIR=fuzz/corpus/gguf build/tests/model_gguf_test
//   --gtest_filter=GgufTest.WriteFuzzCorpus
TEST(GgufTest, WriteFuzzCorpus) {
  // Writes into KVTIER_GGUF_CORPUS_DIR when set (to regenerate the committed seeds), else into a
  // temporary directory; either way every seed must parse and stay small.
  const char* env_dir = std::getenv("KVTIER_GGUF_CORPUS_DIR");
  const std::string dir = (env_dir != nullptr && *env_dir != '\0')
                              ? std::string(env_dir)
                              : kvtier::testing::MakeTempDir("kvtier_gguf_corpus_");
  std::vector<std::pair<std::string, GgufWriter>> seeds;
  seeds.emplace_back("small.gguf", SmallWriter());

  GgufWriter meta;
  meta.SetValue("u8", Num(GgufType::kUint8, 200));
  meta.SetValue("i8", SNum(GgufType::kInt8, -3));
  meta.SetValue("u16", Num(GgufType::kUint16, 60000));
  meta.SetValue("i16", SNum(GgufType::kInt16, -300));
  meta.SetUint32("u32", 7);
  meta.SetInt32("i32", -7);
  meta.SetUint64("u64", ~uint64_t{0});
  meta.SetValue("i64", SNum(GgufType::kInt64, -1));
  meta.SetFloat32("f32", 0.5f);
  meta.SetValue("f64", Flt(GgufType::kFloat64, 2.5));
  meta.SetBool("bool", true);
  meta.SetString("str", "hello");
  meta.SetStringArray("strs", {"a", "bc", ""});
  meta.SetInt32Array("ints", {1, -2, 3});
  meta.SetFloat32Array("floats", {1.0f, 2.0f});
  meta.SetValue("nested", Arr(GgufType::kArray, {Nested(2), Nested(2)}));
  seeds.emplace_back("metadata.gguf", meta);

  GgufWriter tensors;
  tensors.SetString("general.architecture", "test");
  std::vector<float> values(256);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(static_cast<float>(i));
  const kernels::DType types[] = {
      kernels::DType::kF32,  kernels::DType::kF16,  kernels::DType::kBF16, kernels::DType::kQ8_0,
      kernels::DType::kQ4_0, kernels::DType::kQ4_1, kernels::DType::kQ6_K, kernels::DType::kQ4_K};
  for (kernels::DType t : types) {
    tensors.AddTensor(std::string(kernels::GetDTypeInfo(t).name), {256}, t, values);
  }
  seeds.emplace_back("tensors.gguf", tensors);

  GgufWriter aligned;
  aligned.set_alignment(64);
  aligned.AddRawTensor("q5k", {256}, kQ5K, Bytes(176, 1));
  aligned.AddRawTensor("norm", {4, 2, 1, 1}, kF32, F32Bytes(8));
  seeds.emplace_back("aligned_unsupported.gguf", aligned);

  GgufWriter llama;
  llama.SetString("general.architecture", "llama");
  llama.SetUint32("llama.block_count", 1);
  llama.SetUint32("llama.embedding_length", 32);
  llama.SetUint32("llama.attention.head_count", 2);
  llama.SetUint32("llama.attention.head_count_kv", 1);
  llama.SetFloat32("llama.rope.freq_base", 10000.0f);
  llama.SetString("tokenizer.ggml.model", "gpt2");
  llama.SetString("tokenizer.ggml.pre", "smollm");
  llama.SetStringArray("tokenizer.ggml.tokens", {"<|endoftext|>", "a", "b", "ab"});
  llama.SetInt32Array("tokenizer.ggml.token_type", {3, 1, 1, 1});
  llama.SetStringArray("tokenizer.ggml.merges", {"a b"});
  llama.AddTensor("token_embd.weight", {32, 4}, kernels::DType::kQ8_0,
                  std::vector<float>(values.begin(), values.begin() + 128));
  llama.AddTensor("output_norm.weight", {32}, kernels::DType::kF32, std::vector<float>(32, 1.0f));
  seeds.emplace_back("tiny_llama.gguf", llama);

  for (const auto& [name, writer] : seeds) {
    const Bytes b = writer.Serialize();
    ASSERT_TRUE(Parse(b).ok()) << name;
    ASSERT_LT(b.size(), 8192u) << name;
    ASSERT_TRUE(writer.WriteFile(dir + "/" + name).ok()) << name;
    auto reread = GgufFile::Open(dir + "/" + name);
    ASSERT_TRUE(reread.ok()) << name << ": " << reread.status().ToString();
  }
}

}  // namespace
}  // namespace kvtier::model
