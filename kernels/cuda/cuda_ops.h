// kernels/cuda/cuda_ops.h — the CUDA backend's operations (no CUDA types in this header).
//
// Thread safety: every function may be called from any thread; ops on the same stream run in
// order. Pointers named d_* are device pointers; `stream` is a cudaStream_t (nullptr: the
// legacy default stream). Launchers enqueue and return without synchronizing; a launch error
// comes back as a Status (kInternal, naming the op and the CUDA error), an invalid argument as
// kInvalidArgument. Nothing here allocates device memory except CudaMalloc, so a decode step can
// be captured in a CUDA graph.
//
// Every op computes what the CPU op of the same name in kernels/cpu/ops.h computes, with the same
// layouts (tests/kernels/ops_cuda_test.cc checks each against it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"
#include "kernels/cpu/ops.h"

namespace kvtier::kernels::cuda {

// True when the CUDA runtime works and at least one device is visible.
bool CudaDeviceAvailable();

// ---- Memory (thin wrappers so callers and tests need no CUDA headers) ---------------------
Result<void*> CudaMalloc(size_t bytes);
Status CudaFree(void* d_ptr);
Status CudaCopyToDevice(void* d_dst, const void* src, size_t bytes);
Status CudaCopyToHost(void* dst, const void* d_src, size_t bytes);
Status CudaSynchronize(void* stream);
Status CudaMemsetAsync(void* d_ptr, int value, size_t bytes, void* stream);
// Stream-ordered copies; `host` should be pinned (CudaHostAlloc) for the copy to be asynchronous.
Status CudaCopyToDeviceAsync(void* d_dst, const void* host, size_t bytes, void* stream);
Status CudaCopyToHostAsync(void* host, const void* d_src, size_t bytes, void* stream);
Status CudaCopyDeviceToDeviceAsync(void* d_dst, const void* d_src, size_t bytes, void* stream);
Result<void*> CudaHostAlloc(size_t bytes);  // pinned host memory
Status CudaHostFree(void* ptr);
// A non-blocking stream (cudaStreamNonBlocking), and its destruction.
Result<void*> CudaStreamCreate();
Status CudaStreamDestroy(void* stream);
// Free and total device memory of the current device, in bytes.
Status CudaMemoryInfo(size_t* free_bytes, size_t* total_bytes);
// The current device's name, "?" when unknown.
std::string CudaDeviceName();

// Device timing for tools: events recorded on a stream; ElapsedMs synchronizes on `end`.
Result<void*> CudaEventCreate();
Status CudaEventDestroy(void* event);
Status CudaEventRecord(void* event, void* stream);
Result<float> CudaEventElapsedMs(void* start, void* end);

// CUDA graphs of one stream's work. BeginCapture records (does not run) what is enqueued on
// `stream` until EndCapture, which instantiates it and returns the cudaGraphExec_t; Launch
// replays it on `stream` (asynchronously, like any launch).
Status CudaStreamBeginCapture(void* stream);
Result<void*> CudaStreamEndCapture(void* stream);
Status CudaGraphLaunch(void* graph_exec, void* stream);
void CudaGraphDestroy(void* graph_exec);

// ---- Ops ----------------------------------------------------------------------------------

// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight.  x, out: [n_tokens][dim] f32 (may alias);
// weight: [dim] f32.
Status CudaRmsNorm(const float* d_x, const float* d_weight, int64_t n_tokens, int64_t dim,
                   float eps, float* d_out, void* stream);

// Adjacent-pair ("normal") RoPE in place, as RopeInPlace: x [n_tokens][n_heads][head_dim] f32,
// positions [n_tokens] int32 (device). The angle is computed in double and reduced modulo 2*pi
// before a float sine/cosine, exactly as the CPU op does.
Status CudaRopeInPlace(float* d_x, int64_t n_tokens, int n_heads, int head_dim,
                       const int32_t* d_positions, float freq_base, float freq_scale, void* stream);

// As CudaRmsNorm, but the output is IEEE f16 (the input of an f16 matrix product).
Status CudaRmsNormToF16(const float* d_x, const float* d_weight, int64_t n_tokens, int64_t dim,
                        float eps, uint16_t* d_out, void* stream);

// out[i] = silu(gate[i]) * up[i]; out may alias gate. All [n] f32.
Status CudaSwiGlu(const float* d_gate, const float* d_up, int64_t n, float* d_out, void* stream);
// As CudaSwiGlu with an f16 output.
Status CudaSwiGluToF16(const float* d_gate, const float* d_up, int64_t n, uint16_t* d_out,
                       void* stream);

// y[i] = f16(x[i]) (round to nearest even; beyond the f16 range: +-inf, as F32ToF16).
Status CudaF32ToF16(const float* d_x, int64_t n, uint16_t* d_y, void* stream);

// y[i] += x[i], all [n] f32.
Status CudaAddInPlace(float* d_y, const float* d_x, int64_t n, void* stream);

// Embedding lookup: out[t] = f32(table[tokens[t]]).  table: [vocab][dim] f16 (device);
// tokens: [n_tokens] int32 (device, each in [0, vocab)); out: [n_tokens][dim] f32.
Status CudaEmbedding(const uint16_t* d_table, int64_t dim, const int32_t* d_tokens,
                     int64_t n_tokens, float* d_out, void* stream);

// Greedy sampling: out[r] = the index of the largest value of row r of x ([rows][n] f32); ties
// go to the lowest index (as engine::Sampler::Argmax); NaNs are never chosen unless a whole row
// is NaN (then 0).
Status CudaArgmax(const float* d_x, int64_t rows, int64_t n, int32_t* d_out, void* stream);

// Single-token matrix-vector product with its input stage fused in, for decode steps (one
// launch instead of a norm or SwiGLU kernel plus a cuBLAS call):
//   y[r] = beta * y[r] + sum_c W[r][c] * in[c]   for r < rows; W [rows][cols] f16 row-major,
// where `in` ([cols], f32, never rounded to f16) comes from d_x by `input`:
//   kPlain:   in = x                                        (d_x: [cols])
//   kRmsNorm: in = x * rsqrt(mean(x^2) + eps) * d_norm      (d_x: [cols]; as CudaRmsNorm)
//   kSwiGlu:  in = silu(x[c]) * x[cols + c]                 (d_x: [2 cols], gate then up)
// cols a multiple of 8 and <= kGemvMaxCols; d_w 16-byte aligned. y may alias nothing else.
enum class GemvInput { kPlain, kRmsNorm, kSwiGlu };
inline constexpr int64_t kGemvMaxCols = 16384;
Status CudaGemv(const uint16_t* d_w, int64_t rows, int64_t cols, GemvInput input, const float* d_x,
                const float* d_norm, float eps, float beta, float* d_y, void* stream);

// Fills [n] f16 values with a deterministic pseudo-random normal(0, sigma) sequence of `seed`
// (benchmarks and tests fill KV pages with it; never zeros, which time unrealistically).
Status CudaFillRandomF16(uint16_t* d_x, int64_t n, uint64_t seed, float sigma, void* stream);

// Decode attention for one query token over f16 pages.
//   pool.base: device pointer to the page pool, layout as KvPool (per page: K then V, each
//              [kv_head][token][head_dim] f16).  head_dim <= 256.
//   d_pages:   [n_pages] PageRef (device), in position order; keys with position > q_pos are
//              masked.
//   d_q:       [n_heads][head_dim] f32;  d_out: [n_heads][head_dim] f32.
//   d_workspace: CudaDecodeAttentionWorkspaceBytes(n_heads, head_dim, n_pages) bytes (device)
//              for the split-k partial results; it may be null when that size is 0.
// Query head h uses KV head h / (n_heads / pool.n_kv_heads). A head with no visible key gets 0.
size_t CudaDecodeAttentionWorkspaceBytes(int n_heads, int head_dim, int n_pages);

// One decode step's context, read by kernels from device memory, so that a step's launches do
// not depend on the context length and can be replayed from a CUDA graph: the host writes it
// (through an async copy that is part of the graph) before each replay.
struct DecodeStep {
  int32_t pos = 0;      // position of the step's token: its query's q_pos
  int32_t total = 0;    // tokens in the context after the step: pos + 1
  int32_t n_pages = 0;  // its pages: ceil(total / page_tokens)
  int32_t pad = 0;
};

// CudaPagedAttentionDecode over d_pages[0, d_step->n_pages) with q_pos = d_step->pos (both read
// on the device); d_pages holds up to max_pages refs. Workspace:
// CudaDecodeAttentionWorkspaceBytes(n_heads, head_dim, max_pages).
Status CudaPagedAttentionDecodeStep(const KvPool& pool, const PageRef* d_pages, int max_pages,
                                    const DecodeStep* d_step, const float* d_q, int n_heads,
                                    float scale, float* d_out, void* d_workspace, void* stream);
Status CudaPagedAttentionDecode(const KvPool& pool, const PageRef* d_pages, int n_pages,
                                const float* d_q, int32_t q_pos, int n_heads, float scale,
                                float* d_out, void* d_workspace, void* stream);

// The same over a separate page list per KV head (sparse attention, DESIGN §5): KV head g reads
// d_pages[g * n_pages, (g + 1) * n_pages), in position order (as CudaSelectPages writes them).
// Workspace: CudaDecodeAttentionWorkspaceBytes(n_heads, head_dim, n_pages).
Status CudaPagedAttentionDecodePerKvHead(const KvPool& pool, const PageRef* d_pages, int n_pages,
                                         const float* d_q, int32_t q_pos, int n_heads, float scale,
                                         float* d_out, void* d_workspace, void* stream);

}  // namespace kvtier::kernels::cuda
