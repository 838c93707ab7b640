// libFuzzer target for the GGUF reader: any byte string must parse or fail with a "gguf: "
// error, never crash or read outside the input; everything a successful parse returns is touched.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "model/gguf.h"

namespace {

using kvtier::model::GgufArray;
using kvtier::model::GgufFile;
using kvtier::model::GgufValue;

// Folds a value into `acc` so the compiler cannot drop the reads.
uint64_t Touch(const GgufValue& v, uint64_t acc) {
  if (auto i = v.AsInt()) acc += static_cast<uint64_t>(*i);
  if (auto d = v.AsFloat()) acc += static_cast<uint64_t>(*d != 0.0);
  if (auto b = v.AsBool()) acc += *b;
  if (const std::string* s = v.AsString()) {
    for (char c : *s) acc = acc * 31 + static_cast<unsigned char>(c);
  }
  if (const GgufArray* a = v.AsArray()) {
    for (const GgufValue& e : *a) acc = Touch(e, acc);
  }
  return acc;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = GgufFile::FromMemory(std::span<const uint8_t>(data, size));
  if (!r.ok()) {
    const std::string& m = r.status().message();
    if (m.rfind("gguf: ", 0) != 0 || m.find('\n') != std::string::npos) std::abort();
    return 0;
  }
  const GgufFile& f = **r;
  uint64_t acc = f.version() + f.alignment();
  for (const auto& [key, value] : f.metadata()) {
    acc = Touch(value, acc + key.size());
    (void)f.GetInt(key);
    (void)f.GetFloat(key);
    (void)f.GetString(key);
    (void)f.GetStringArray(key);
    (void)f.GetIntArray(key);
    (void)f.GetFloatArray(key);
  }
  for (const auto& t : f.tensors()) {
    if (f.FindTensor(t.name) != &t) std::abort();
    if (t.data < data || t.size_bytes > size || t.data + t.size_bytes > data + size) std::abort();
    if (t.NumElements() <= 0) std::abort();
    // Read the first and last byte of every tensor: ASan flags any extent outside the input.
    acc += t.data[0] + t.data[t.size_bytes - 1];
  }
  volatile uint64_t sink = acc;
  (void)sink;
  return 0;
}
