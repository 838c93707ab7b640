#include "cache/codec.h"

#include <zstd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "cache/internal/f16_rows.h"
#include "kernels/fp16.h"

namespace kvtier::cache {
namespace {

using internal::F16RowToF32;
using internal::F32RowToF16;

constexpr uint8_t kMagic[4] = {'K', 'V', 'X', '1'};
constexpr uint8_t kFlagZstd = 1;
constexpr float kF16Max = 65504.0f;

// Round to nearest even for |x| < 2^22 without a libm call (vectorises).
inline float RoundNearest(float x) {
  constexpr float kMagicRound = 12582912.0f;  // 1.5 * 2^23
  return (x + kMagicRound) - kMagicRound;
}

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t GetU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint32_t Fnv1a(const uint8_t* p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 16777619u;
  }
  return h;
}

// Little-endian f16 arrays inside the payload are accessed through memcpy (unaligned-safe).
uint16_t LoadHalf(const uint8_t* p) { return GetU16(p); }
void StoreHalf(uint8_t* p, uint16_t h) { PutU16(p, h); }

// A scale or min as stored (f16) and the exact f32 value decoding will use.
struct Rounded {
  uint16_t half;
  float value;
};
Rounded RoundToHalf(float x) {
  const uint16_t h = kernels::F32ToF16(x);
  return {h, kernels::F16ToF32(h)};
}

bool IsLittleEndianHost() {
  const uint16_t one = 1;
  uint8_t b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

// ---- f16 ------------------------------------------------------------------------------------

void EncodeF16(const ExtentView& src, uint8_t* out) {
  const ExtentShape& s = src.shape;
  const size_t row_bytes = static_cast<size_t>(s.head_dim) * 2;
  for (int l = 0; l < s.n_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < s.n_kv_heads; ++h) {
        for (int t = 0; t < s.tokens(); ++t, out += row_bytes) {
          std::memcpy(out, src.Row(l, h, t, kv == 1), row_bytes);
        }
      }
    }
  }
}

void DecodeF16(const uint8_t* in, const ExtentView& dst) {
  const ExtentShape& s = dst.shape;
  const size_t row_bytes = static_cast<size_t>(s.head_dim) * 2;
  for (int l = 0; l < s.n_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int h = 0; h < s.n_kv_heads; ++h) {
        for (int t = 0; t < s.tokens(); ++t, in += row_bytes) {
          std::memcpy(dst.Row(l, h, t, kv == 1), in, row_bytes);
        }
      }
    }
  }
}

// ---- q8 -------------------------------------------------------------------------------------
// Per layer, per K/V: scales [H][T] f16 then q [H][T][D] int8.

size_t Q8HalfBytes(const ExtentShape& s) {
  const size_t rows = static_cast<size_t>(s.n_kv_heads) * s.tokens();
  return rows * 2 + rows * s.head_dim;
}

Status EncodeQ8(const ExtentView& src, uint8_t* out) {
  const ExtentShape& s = src.shape;
  const int d_n = s.head_dim;
  std::vector<float> x(d_n);
  const size_t rows = static_cast<size_t>(s.n_kv_heads) * s.tokens();
  for (int l = 0; l < s.n_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      uint8_t* scales = out;
      int8_t* q = reinterpret_cast<int8_t*>(out + rows * 2);
      for (int h = 0; h < s.n_kv_heads; ++h) {
        for (int t = 0; t < s.tokens(); ++t) {
          F16RowToF32(src.Row(l, h, t, kv == 1), x.data(), d_n);
          float amax = 0.0f;
          for (int d = 0; d < d_n; ++d) amax = std::max(amax, std::fabs(x[d]));
          if (!(amax <= kF16Max)) return InvalidArgumentError("q8 encode: non-finite K/V");
          const Rounded scale = RoundToHalf(amax / 127.0f);
          const float inv = scale.value > 0.0f ? 1.0f / scale.value : 0.0f;
          const size_t row = static_cast<size_t>(h) * s.tokens() + t;
          StoreHalf(scales + row * 2, scale.half);
          int8_t* qr = q + row * d_n;
          for (int d = 0; d < d_n; ++d) {
            const float r = std::clamp(RoundNearest(x[d] * inv), -127.0f, 127.0f);
            qr[d] = static_cast<int8_t>(r);
          }
        }
      }
      out += Q8HalfBytes(s);
    }
  }
  return Status::Ok();
}

Status ValidateQ8(const uint8_t* in, const ExtentShape& s) {
  const size_t rows = static_cast<size_t>(s.n_kv_heads) * s.tokens();
  for (int half = 0; half < 2 * s.n_layers; ++half, in += Q8HalfBytes(s)) {
    for (size_t r = 0; r < rows; ++r) {
      const float v = kernels::F16ToF32(LoadHalf(in + r * 2));
      if (!(v >= 0.0f && v <= kF16Max)) return CorruptionError("q8 decode: bad scale");
    }
  }
  return Status::Ok();
}

void DecodeQ8(const uint8_t* in, const ExtentView& dst) {
  const ExtentShape& s = dst.shape;
  const int d_n = s.head_dim;
  std::vector<float> x(d_n);
  const size_t rows = static_cast<size_t>(s.n_kv_heads) * s.tokens();
  for (int l = 0; l < s.n_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const uint8_t* scales = in;
      const int8_t* q = reinterpret_cast<const int8_t*>(in + rows * 2);
      for (int h = 0; h < s.n_kv_heads; ++h) {
        for (int t = 0; t < s.tokens(); ++t) {
          const size_t row = static_cast<size_t>(h) * s.tokens() + t;
          const float scale = kernels::F16ToF32(LoadHalf(scales + row * 2));
          const int8_t* qr = q + row * d_n;
          // Clamped so that even a corrupt payload decodes to finite f16.
          for (int d = 0; d < d_n; ++d) {
            x[d] = std::clamp(static_cast<float>(qr[d]) * scale, -kF16Max, kF16Max);
          }
          F32RowToF16(x.data(), dst.Row(l, h, t, kv == 1), d_n);
        }
      }
      in += Q8HalfBytes(s);
    }
  }
}

// ---- q4 -------------------------------------------------------------------------------------
// Per layer: K scales [H][D], K mins [H][D], K [H][T][D/2]; V scales [H][T], V mins [H][T],
// V [H][T][D/2].

struct Q4Layout {
  size_t k_params, k_data, v_params, v_data;  // byte offsets within a layer
  size_t layer_bytes;
};
Q4Layout Q4LayoutOf(const ExtentShape& s) {
  const size_t h_n = s.n_kv_heads, t_n = s.tokens(), d_n = s.head_dim;
  Q4Layout q;
  q.k_params = 0;
  q.k_data = h_n * d_n * 4;
  q.v_params = q.k_data + h_n * t_n * d_n / 2;
  q.v_data = q.v_params + h_n * t_n * 4;
  q.layer_bytes = q.v_data + h_n * t_n * d_n / 2;
  return q;
}

inline void PackNibbles(const float* r, uint8_t* out, int d_n) {
  for (int j = 0; j < d_n / 2; ++j) {
    out[j] =
        static_cast<uint8_t>(static_cast<int>(r[2 * j]) | (static_cast<int>(r[2 * j + 1]) << 4));
  }
}

Status EncodeQ4(const ExtentView& src, uint8_t* out) {
  const ExtentShape& s = src.shape;
  const int d_n = s.head_dim, t_n = s.tokens(), h_n = s.n_kv_heads;
  const Q4Layout lay = Q4LayoutOf(s);
  std::vector<float> tile(static_cast<size_t>(t_n) * d_n);  // one head's keys, f32
  std::vector<float> mn(d_n), mx(d_n), inv(d_n), r(d_n);
  std::vector<float> mins(d_n);
  for (int l = 0; l < s.n_layers; ++l, out += lay.layer_bytes) {
    // Keys: per channel over the extent's tokens.
    uint8_t* k_scales = out + lay.k_params;
    uint8_t* k_mins = k_scales + static_cast<size_t>(h_n) * d_n * 2;
    for (int h = 0; h < h_n; ++h) {
      for (int t = 0; t < t_n; ++t) F16RowToF32(src.KRow(l, h, t), &tile[size_t(t) * d_n], d_n);
      std::copy_n(tile.begin(), d_n, mn.begin());
      std::copy_n(tile.begin(), d_n, mx.begin());
      for (int t = 1; t < t_n; ++t) {
        const float* row = &tile[size_t(t) * d_n];
        for (int d = 0; d < d_n; ++d) {
          mn[d] = row[d] < mn[d] ? row[d] : mn[d];
          mx[d] = row[d] > mx[d] ? row[d] : mx[d];
        }
      }
      for (int d = 0; d < d_n; ++d) {
        if (!(mn[d] >= -kF16Max && mx[d] <= kF16Max)) {
          return InvalidArgumentError("q4 encode: non-finite K");
        }
        const Rounded scale = RoundToHalf((mx[d] - mn[d]) / 15.0f);
        const Rounded min = RoundToHalf(mn[d]);
        const size_t at = (static_cast<size_t>(h) * d_n + d) * 2;
        StoreHalf(k_scales + at, scale.half);
        StoreHalf(k_mins + at, min.half);
        inv[d] = scale.value > 0.0f ? 1.0f / scale.value : 0.0f;
        mins[d] = min.value;
      }
      uint8_t* data = out + lay.k_data + static_cast<size_t>(h) * t_n * d_n / 2;
      for (int t = 0; t < t_n; ++t) {
        const float* row = &tile[size_t(t) * d_n];
        for (int d = 0; d < d_n; ++d) {
          r[d] = std::clamp(RoundNearest((row[d] - mins[d]) * inv[d]), 0.0f, 15.0f);
        }
        PackNibbles(r.data(), data + static_cast<size_t>(t) * d_n / 2, d_n);
      }
    }
    // Values: per token per head.
    uint8_t* v_scales = out + lay.v_params;
    uint8_t* v_mins = v_scales + static_cast<size_t>(h_n) * t_n * 2;
    for (int h = 0; h < h_n; ++h) {
      for (int t = 0; t < t_n; ++t) {
        F16RowToF32(src.VRow(l, h, t), tile.data(), d_n);
        float lo = tile[0], hi = tile[0];
        for (int d = 1; d < d_n; ++d) {
          lo = std::min(lo, tile[d]);
          hi = std::max(hi, tile[d]);
        }
        if (!(lo >= -kF16Max && hi <= kF16Max)) {
          return InvalidArgumentError("q4 encode: non-finite V");
        }
        const Rounded scale = RoundToHalf((hi - lo) / 15.0f);
        const Rounded min = RoundToHalf(lo);
        const size_t row = static_cast<size_t>(h) * t_n + t;
        StoreHalf(v_scales + row * 2, scale.half);
        StoreHalf(v_mins + row * 2, min.half);
        const float iv = scale.value > 0.0f ? 1.0f / scale.value : 0.0f;
        for (int d = 0; d < d_n; ++d) {
          r[d] = std::clamp(RoundNearest((tile[d] - min.value) * iv), 0.0f, 15.0f);
        }
        PackNibbles(r.data(), out + lay.v_data + row * d_n / 2, d_n);
      }
    }
  }
  return Status::Ok();
}

Status ValidateQ4(const uint8_t* in, const ExtentShape& s) {
  const Q4Layout lay = Q4LayoutOf(s);
  const size_t k_n = static_cast<size_t>(s.n_kv_heads) * s.head_dim;
  const size_t v_n = static_cast<size_t>(s.n_kv_heads) * s.tokens();
  auto check = [](const uint8_t* p, size_t n) {
    const uint8_t* mins = p + n * 2;
    for (size_t i = 0; i < n; ++i) {
      const float scale = kernels::F16ToF32(LoadHalf(p + i * 2));
      const float min = kernels::F16ToF32(LoadHalf(mins + i * 2));
      if (!(scale >= 0.0f && scale <= kF16Max) || !(std::fabs(min) <= kF16Max)) return false;
    }
    return true;
  };
  for (int l = 0; l < s.n_layers; ++l, in += lay.layer_bytes) {
    if (!check(in + lay.k_params, k_n) || !check(in + lay.v_params, v_n)) {
      return CorruptionError("q4 decode: bad scale or min");
    }
  }
  return Status::Ok();
}

inline void UnpackNibbles(const uint8_t* in, float* q, int d_n) {
  for (int j = 0; j < d_n / 2; ++j) {
    q[2 * j] = static_cast<float>(in[j] & 15);
    q[2 * j + 1] = static_cast<float>(in[j] >> 4);
  }
}

void DecodeQ4(const uint8_t* in, const ExtentView& dst) {
  const ExtentShape& s = dst.shape;
  const int d_n = s.head_dim, t_n = s.tokens(), h_n = s.n_kv_heads;
  const Q4Layout lay = Q4LayoutOf(s);
  std::vector<float> scale(d_n), mins(d_n), q(d_n), x(d_n);
  for (int l = 0; l < s.n_layers; ++l, in += lay.layer_bytes) {
    const uint8_t* k_scales = in + lay.k_params;
    const uint8_t* k_mins = k_scales + static_cast<size_t>(h_n) * d_n * 2;
    for (int h = 0; h < h_n; ++h) {
      for (int d = 0; d < d_n; ++d) {
        const size_t at = (static_cast<size_t>(h) * d_n + d) * 2;
        scale[d] = kernels::F16ToF32(LoadHalf(k_scales + at));
        mins[d] = kernels::F16ToF32(LoadHalf(k_mins + at));
      }
      const uint8_t* data = in + lay.k_data + static_cast<size_t>(h) * t_n * d_n / 2;
      for (int t = 0; t < t_n; ++t) {
        UnpackNibbles(data + static_cast<size_t>(t) * d_n / 2, q.data(), d_n);
        for (int d = 0; d < d_n; ++d) {
          x[d] = std::clamp(q[d] * scale[d] + mins[d], -kF16Max, kF16Max);
        }
        F32RowToF16(x.data(), dst.KRow(l, h, t), d_n);
      }
    }
    const uint8_t* v_scales = in + lay.v_params;
    const uint8_t* v_mins = v_scales + static_cast<size_t>(h_n) * t_n * 2;
    for (int h = 0; h < h_n; ++h) {
      for (int t = 0; t < t_n; ++t) {
        const size_t row = static_cast<size_t>(h) * t_n + t;
        const float sc = kernels::F16ToF32(LoadHalf(v_scales + row * 2));
        const float mn = kernels::F16ToF32(LoadHalf(v_mins + row * 2));
        UnpackNibbles(in + lay.v_data + row * d_n / 2, q.data(), d_n);
        for (int d = 0; d < d_n; ++d) x[d] = std::clamp(q[d] * sc + mn, -kF16Max, kF16Max);
        F32RowToF16(x.data(), dst.VRow(l, h, t), d_n);
      }
    }
  }
}

// ---- zstd contexts (one per thread, reused) ---------------------------------------------------

struct ZstdCCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct ZstdDCtxFree {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};
ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, ZstdCCtxFree> ctx(ZSTD_createCCtx());
  return ctx.get();
}
ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, ZstdDCtxFree> ctx(ZSTD_createDCtx());
  return ctx.get();
}

}  // namespace

std::string_view CodecName(Codec codec) {
  switch (codec) {
    case Codec::kF16:
      return "f16";
    case Codec::kQ8:
      return "q8";
    case Codec::kQ4:
      return "q4";
  }
  return "unknown";
}

std::string CodecSpec::Name() const {
  std::string n(CodecName(codec));
  if (zstd) n += "+zstd";
  return n;
}

Result<CodecSpec> ParseCodecSpec(std::string_view name) {
  CodecSpec spec;
  constexpr std::string_view kZstd = "+zstd";
  if (name.size() > kZstd.size() && name.substr(name.size() - kZstd.size()) == kZstd) {
    spec.zstd = true;
    name.remove_suffix(kZstd.size());
  }
  if (name == "f16") {
    spec.codec = Codec::kF16;
  } else if (name == "q8") {
    spec.codec = Codec::kQ8;
  } else if (name == "q4") {
    spec.codec = Codec::kQ4;
  } else {
    return InvalidArgumentError("unknown KV codec '" + std::string(name) +
                                "' (f16, q8 or q4, optionally +zstd)");
  }
  return spec;
}

size_t CodecPayloadBytes(Codec codec, const ExtentShape& s) {
  switch (codec) {
    case Codec::kF16:
      return s.RawBytes();
    case Codec::kQ8:
      return static_cast<size_t>(s.n_layers) * 2 * Q8HalfBytes(s);
    case Codec::kQ4:
      return static_cast<size_t>(s.n_layers) * Q4LayoutOf(s).layer_bytes;
  }
  return 0;
}

Result<ExtentHeader> ParseExtentHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() < kExtentHeaderBytes) {
    return CorruptionError("encoded extent: " + std::to_string(bytes.size()) +
                           " bytes, shorter than its header");
  }
  const uint8_t* p = bytes.data();
  if (std::memcmp(p, kMagic, 4) != 0) return CorruptionError("encoded extent: bad magic");
  if (GetU32(p + 28) != Fnv1a(p, 28)) return CorruptionError("encoded extent: header checksum");
  ExtentHeader h;
  h.version = GetU16(p + 4);
  if (h.version != kCodecFormatVersion) {
    return CorruptionError("encoded extent: format version " + std::to_string(h.version) +
                           ", expected " + std::to_string(kCodecFormatVersion));
  }
  const uint8_t codec = p[6];
  if (codec < 1 || codec > 3) {
    return CorruptionError("encoded extent: unknown codec id " + std::to_string(codec));
  }
  h.codec = static_cast<Codec>(codec);
  const uint8_t flags = p[7];
  if ((flags & ~kFlagZstd) != 0) return CorruptionError("encoded extent: unknown flags");
  h.zstd = (flags & kFlagZstd) != 0;
  h.shape.n_layers = GetU16(p + 8);
  h.shape.n_kv_heads = GetU16(p + 10);
  h.shape.head_dim = GetU16(p + 12);
  h.shape.page_tokens = GetU16(p + 14);
  h.shape.extent_pages = GetU16(p + 16);
  if (GetU16(p + 18) != 0) return CorruptionError("encoded extent: reserved field set");
  if (Status s = h.shape.Validate(); !s.ok()) {
    return CorruptionError("encoded extent: " + s.message());
  }
  h.payload_bytes = GetU32(p + 20);
  h.raw_payload_bytes = GetU32(p + 24);
  if (h.raw_payload_bytes != CodecPayloadBytes(h.codec, h.shape)) {
    return CorruptionError("encoded extent: payload size does not match codec and shape");
  }
  if (!h.zstd && h.payload_bytes != h.raw_payload_bytes) {
    return CorruptionError("encoded extent: stored size differs from payload size");
  }
  if (bytes.size() - kExtentHeaderBytes != h.payload_bytes) {
    return CorruptionError("encoded extent: " + std::to_string(bytes.size()) +
                           " bytes, header says " +
                           std::to_string(kExtentHeaderBytes + h.payload_bytes));
  }
  return h;
}

Status EncodeExtent(const ExtentView& src, const CodecSpec& spec, std::vector<uint8_t>* out) {
  RETURN_IF_ERROR(src.Validate());
  if (!IsLittleEndianHost()) return UnimplementedError("KV codecs need a little-endian host");
  const ExtentShape& s = src.shape;
  const size_t raw = CodecPayloadBytes(spec.codec, s);
  if (raw == 0) return InvalidArgumentError("unknown codec");
  // Without zstd the payload is written in place after the header; with it, into a scratch
  // buffer that is then compressed after the header.
  thread_local std::vector<uint8_t> scratch;
  uint8_t* payload;
  if (spec.zstd) {
    scratch.resize(raw);
    payload = scratch.data();
  } else {
    out->resize(kExtentHeaderBytes + raw);
    payload = out->data() + kExtentHeaderBytes;
  }
  switch (spec.codec) {
    case Codec::kF16:
      EncodeF16(src, payload);
      break;
    case Codec::kQ8:
      RETURN_IF_ERROR(EncodeQ8(src, payload));
      break;
    case Codec::kQ4:
      RETURN_IF_ERROR(EncodeQ4(src, payload));
      break;
  }
  size_t stored = raw;
  if (spec.zstd) {
    out->resize(kExtentHeaderBytes + ZSTD_compressBound(raw));
    ZSTD_CCtx* cctx = ThreadCCtx();
    if (cctx == nullptr) return InternalError("zstd: cannot create a context");
    stored = ZSTD_compressCCtx(cctx, out->data() + kExtentHeaderBytes,
                               out->size() - kExtentHeaderBytes, payload, raw, spec.zstd_level);
    if (ZSTD_isError(stored)) {
      return InternalError(std::string("zstd compress: ") + ZSTD_getErrorName(stored));
    }
    out->resize(kExtentHeaderBytes + stored);
  }
  uint8_t* p = out->data();
  std::memcpy(p, kMagic, 4);
  PutU16(p + 4, kCodecFormatVersion);
  p[6] = static_cast<uint8_t>(spec.codec);
  p[7] = spec.zstd ? kFlagZstd : 0;
  PutU16(p + 8, static_cast<uint16_t>(s.n_layers));
  PutU16(p + 10, static_cast<uint16_t>(s.n_kv_heads));
  PutU16(p + 12, static_cast<uint16_t>(s.head_dim));
  PutU16(p + 14, static_cast<uint16_t>(s.page_tokens));
  PutU16(p + 16, static_cast<uint16_t>(s.extent_pages));
  PutU16(p + 18, 0);
  PutU32(p + 20, static_cast<uint32_t>(stored));
  PutU32(p + 24, static_cast<uint32_t>(raw));
  PutU32(p + 28, Fnv1a(p, 28));
  return Status::Ok();
}

Result<std::vector<uint8_t>> EncodeExtent(const ExtentView& src, const CodecSpec& spec) {
  std::vector<uint8_t> out;
  RETURN_IF_ERROR(EncodeExtent(src, spec, &out));
  return out;
}

Status DecodeExtent(std::span<const uint8_t> bytes, const ExtentView& dst) {
  if (!IsLittleEndianHost()) return UnimplementedError("KV codecs need a little-endian host");
  ASSIGN_OR_RETURN(const ExtentHeader h, ParseExtentHeader(bytes));
  RETURN_IF_ERROR(dst.Validate());
  if (!(h.shape == dst.shape)) {
    return InvalidArgumentError("encoded extent shape differs from the destination's");
  }
  const uint8_t* payload = bytes.data() + kExtentHeaderBytes;
  thread_local std::vector<uint8_t> scratch;
  if (h.zstd) {
    const unsigned long long content = ZSTD_getFrameContentSize(payload, h.payload_bytes);
    if (content != h.raw_payload_bytes) {
      return CorruptionError("encoded extent: zstd frame size does not match the header");
    }
    scratch.resize(h.raw_payload_bytes);
    ZSTD_DCtx* dctx = ThreadDCtx();
    if (dctx == nullptr) return InternalError("zstd: cannot create a context");
    const size_t got =
        ZSTD_decompressDCtx(dctx, scratch.data(), scratch.size(), payload, h.payload_bytes);
    if (ZSTD_isError(got) || got != h.raw_payload_bytes) {
      return CorruptionError("encoded extent: zstd payload does not decompress");
    }
    payload = scratch.data();
  }
  // Validate every scale before writing anything, so a failed decode leaves dst untouched.
  switch (h.codec) {
    case Codec::kF16:
      DecodeF16(payload, dst);
      break;
    case Codec::kQ8:
      RETURN_IF_ERROR(ValidateQ8(payload, h.shape));
      DecodeQ8(payload, dst);
      break;
    case Codec::kQ4:
      RETURN_IF_ERROR(ValidateQ4(payload, h.shape));
      DecodeQ4(payload, dst);
      break;
  }
  return Status::Ok();
}

namespace {

// The payload of an encoded extent without zstd: points into `bytes` or, for a zstd extent, into
// `scratch`.
Result<const uint8_t*> PlainPayload(std::span<const uint8_t> bytes, const ExtentHeader& h,
                                    std::vector<uint8_t>* scratch) {
  const uint8_t* payload = bytes.data() + kExtentHeaderBytes;
  if (!h.zstd) return payload;
  const unsigned long long content = ZSTD_getFrameContentSize(payload, h.payload_bytes);
  if (content != h.raw_payload_bytes) {
    return CorruptionError("encoded extent: zstd frame size does not match the header");
  }
  scratch->resize(h.raw_payload_bytes);
  ZSTD_DCtx* dctx = ThreadDCtx();
  if (dctx == nullptr) return InternalError("zstd: cannot create a context");
  const size_t got =
      ZSTD_decompressDCtx(dctx, scratch->data(), scratch->size(), payload, h.payload_bytes);
  if (ZSTD_isError(got) || got != h.raw_payload_bytes) {
    return CorruptionError("encoded extent: zstd payload does not decompress");
  }
  return static_cast<const uint8_t*>(scratch->data());
}

bool ScaleOk(float v) { return v >= 0.0f && v <= kF16Max; }

}  // namespace

Status DecodeExtentPage(std::span<const uint8_t> bytes, int layer, int page_in_extent,
                        const kernels::KvPool& pool, int32_t dst_page) {
  if (!IsLittleEndianHost()) return UnimplementedError("KV codecs need a little-endian host");
  ASSIGN_OR_RETURN(const ExtentHeader h, ParseExtentHeader(bytes));
  const ExtentShape& s = h.shape;
  if (pool.page_tokens != s.page_tokens || pool.n_kv_heads != s.n_kv_heads ||
      pool.head_dim != s.head_dim) {
    return InvalidArgumentError("encoded extent page geometry differs from the pool's");
  }
  if (layer < 0 || layer >= s.n_layers || page_in_extent < 0 ||
      page_in_extent >= s.extent_pages || dst_page < 0 || pool.base == nullptr) {
    return InvalidArgumentError("decode page: layer, page or destination out of range");
  }
  thread_local std::vector<uint8_t> scratch;
  ASSIGN_OR_RETURN(const uint8_t* payload, PlainPayload(bytes, h, &scratch));
  const int d_n = s.head_dim, t_n = s.tokens(), h_n = s.n_kv_heads, pt = s.page_tokens;
  const int t0 = page_in_extent * pt;
  auto dst_row = [&](bool value, int head, int t) {
    uint16_t* base = value ? pool.V(dst_page) : pool.K(dst_page);
    return base + (static_cast<size_t>(head) * pt + (t - t0)) * d_n;
  };
  std::vector<float> x(d_n);
  switch (h.codec) {
    case Codec::kF16: {
      const size_t row_bytes = static_cast<size_t>(d_n) * 2;
      const uint8_t* in = payload + static_cast<size_t>(layer) * 2 * s.HalfElemsPerLayer() * 2;
      for (int kv = 0; kv < 2; ++kv, in += s.HalfElemsPerLayer() * 2) {
        for (int hd = 0; hd < h_n; ++hd) {
          for (int t = t0; t < t0 + pt; ++t) {
            std::memcpy(dst_row(kv == 1, hd, t),
                        in + (static_cast<size_t>(hd) * t_n + t) * row_bytes, row_bytes);
          }
        }
      }
      break;
    }
    case Codec::kQ8: {
      const size_t rows = static_cast<size_t>(h_n) * t_n;
      const uint8_t* layer_in = payload + static_cast<size_t>(layer) * 2 * Q8HalfBytes(s);
      for (int kv = 0; kv < 2; ++kv) {  // validate first: nothing written on error
        const uint8_t* scales = layer_in + kv * Q8HalfBytes(s);
        for (int hd = 0; hd < h_n; ++hd) {
          for (int t = t0; t < t0 + pt; ++t) {
            const size_t row = static_cast<size_t>(hd) * t_n + t;
            if (!ScaleOk(kernels::F16ToF32(LoadHalf(scales + row * 2)))) {
              return CorruptionError("q8 decode: bad scale");
            }
          }
        }
      }
      for (int kv = 0; kv < 2; ++kv) {
        const uint8_t* scales = layer_in + kv * Q8HalfBytes(s);
        const int8_t* q = reinterpret_cast<const int8_t*>(scales + rows * 2);
        for (int hd = 0; hd < h_n; ++hd) {
          for (int t = t0; t < t0 + pt; ++t) {
            const size_t row = static_cast<size_t>(hd) * t_n + t;
            const float scale = kernels::F16ToF32(LoadHalf(scales + row * 2));
            const int8_t* qr = q + row * d_n;
            for (int d = 0; d < d_n; ++d) {
              x[d] = std::clamp(static_cast<float>(qr[d]) * scale, -kF16Max, kF16Max);
            }
            F32RowToF16(x.data(), dst_row(kv == 1, hd, t), d_n);
          }
        }
      }
      break;
    }
    case Codec::kQ4: {
      const Q4Layout lay = Q4LayoutOf(s);
      const uint8_t* in = payload + static_cast<size_t>(layer) * lay.layer_bytes;
      const uint8_t* k_scales = in + lay.k_params;
      const uint8_t* k_mins = k_scales + static_cast<size_t>(h_n) * d_n * 2;
      const uint8_t* v_scales = in + lay.v_params;
      const uint8_t* v_mins = v_scales + static_cast<size_t>(h_n) * t_n * 2;
      for (size_t i = 0; i < static_cast<size_t>(h_n) * d_n; ++i) {
        if (!ScaleOk(kernels::F16ToF32(LoadHalf(k_scales + i * 2))) ||
            !(std::fabs(kernels::F16ToF32(LoadHalf(k_mins + i * 2))) <= kF16Max)) {
          return CorruptionError("q4 decode: bad scale or min");
        }
      }
      for (int hd = 0; hd < h_n; ++hd) {
        for (int t = t0; t < t0 + pt; ++t) {
          const size_t row = static_cast<size_t>(hd) * t_n + t;
          if (!ScaleOk(kernels::F16ToF32(LoadHalf(v_scales + row * 2))) ||
              !(std::fabs(kernels::F16ToF32(LoadHalf(v_mins + row * 2))) <= kF16Max)) {
            return CorruptionError("q4 decode: bad scale or min");
          }
        }
      }
      std::vector<float> scale(d_n), mins(d_n), qv(d_n);
      for (int hd = 0; hd < h_n; ++hd) {
        for (int d = 0; d < d_n; ++d) {
          const size_t at = (static_cast<size_t>(hd) * d_n + d) * 2;
          scale[d] = kernels::F16ToF32(LoadHalf(k_scales + at));
          mins[d] = kernels::F16ToF32(LoadHalf(k_mins + at));
        }
        const uint8_t* data = in + lay.k_data + static_cast<size_t>(hd) * t_n * d_n / 2;
        for (int t = t0; t < t0 + pt; ++t) {
          UnpackNibbles(data + static_cast<size_t>(t) * d_n / 2, qv.data(), d_n);
          for (int d = 0; d < d_n; ++d) {
            x[d] = std::clamp(qv[d] * scale[d] + mins[d], -kF16Max, kF16Max);
          }
          F32RowToF16(x.data(), dst_row(false, hd, t), d_n);
        }
      }
      for (int hd = 0; hd < h_n; ++hd) {
        for (int t = t0; t < t0 + pt; ++t) {
          const size_t row = static_cast<size_t>(hd) * t_n + t;
          const float sc = kernels::F16ToF32(LoadHalf(v_scales + row * 2));
          const float mn = kernels::F16ToF32(LoadHalf(v_mins + row * 2));
          UnpackNibbles(in + lay.v_data + row * d_n / 2, qv.data(), d_n);
          for (int d = 0; d < d_n; ++d) x[d] = std::clamp(qv[d] * sc + mn, -kF16Max, kF16Max);
          F32RowToF16(x.data(), dst_row(true, hd, t), d_n);
        }
      }
      break;
    }
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> DecompressExtent(std::span<const uint8_t> bytes) {
  ASSIGN_OR_RETURN(const ExtentHeader h, ParseExtentHeader(bytes));
  if (!h.zstd) return std::vector<uint8_t>(bytes.begin(), bytes.end());
  std::vector<uint8_t> out(kExtentHeaderBytes + h.raw_payload_bytes);
  thread_local std::vector<uint8_t> scratch;
  ASSIGN_OR_RETURN(const uint8_t* payload, PlainPayload(bytes, h, &scratch));
  std::memcpy(out.data() + kExtentHeaderBytes, payload, h.raw_payload_bytes);
  std::memcpy(out.data(), bytes.data(), kExtentHeaderBytes);
  uint8_t* p = out.data();
  p[7] = 0;
  PutU32(p + 20, h.raw_payload_bytes);
  PutU32(p + 28, Fnv1a(p, 28));
  return out;
}

bool SetCodecScalarOnlyForTesting(bool scalar_only) {
  return !internal::SetF16RowsSimd(!scalar_only);
}

}  // namespace kvtier::cache
