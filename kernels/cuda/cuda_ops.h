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

// out[i] = silu(gate[i]) * up[i]; out may alias gate. All [n] f32.
Status CudaSwiGlu(const float* d_gate, const float* d_up, int64_t n, float* d_out, void* stream);

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
Status CudaPagedAttentionDecode(const KvPool& pool, const PageRef* d_pages, int n_pages,
                                const float* d_q, int32_t q_pos, int n_heads, float scale,
                                float* d_out, void* d_workspace, void* stream);

}  // namespace kvtier::kernels::cuda
