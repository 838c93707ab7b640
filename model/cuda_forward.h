// model/cuda_forward.h — the forward pass of model/model.h on a CUDA GPU (built only when the
// kvtier_cuda backend is, i.e. when KVTIER_HAVE_CUDA is defined).
//
// Thread safety: a CudaForwardPass owns device memory, a stream and a cuBLAS handle; use it
// from one thread at a time (the engine's compute thread).
//
// It computes what model::ForwardPass computes (same page-table contract, same LogitsMode
// semantics) with weights dequantized once at load to f16, matrix products in cuBLAS (f16
// inputs, f32 accumulation), activations in f32, and KV in a device page pool with the CPU's
// KvPool layout. See kernels/cuda/README.md for how the engine drives it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "kernels/cpu/ops.h"
#include "model/model.h"

#if KVTIER_HAVE_CUDA

namespace kvtier::kernels::cuda {
class CudaBlas;
struct DecodeStep;
}

namespace kvtier::model {

// Sparse (retrieval) attention for decode steps, DESIGN §5.
struct CudaSparseOptions {
  bool enabled = false;
  // Sparse only when the context is longer than this. On an H100 a dense step is cheaper up to
  // ~300K tokens (dense 1.25 / 2.42 ms vs sparse 2.54 / 3.00 ms at 8K / 128K; 29.5 vs 13.1 ms at
  // 3.2M: BENCHMARKS.md), and exact: DESIGN §5's 4096 is a CPU figure.
  int min_context_tokens = 262144;
  int dense_layers = 2;           // the first layers stay dense
  int budget_tokens = 2048;       // sinks + recent window + top pages, in tokens
  int sink_tokens = 64;
  int recent_tokens = 256;
};

struct CudaForwardOptions {
  int max_batch_tokens = 512;
  // Device page pool size: page ids in KvView page tables must be in [0, pool_pages).
  int64_t pool_pages = 0;
  // Longest sequence the pass will see (sizes page-table and attention workspaces);
  // 0: the model's trained context.
  int max_context_tokens = 0;
  int page_tokens = 16;
  CudaSparseOptions sparse;
  // Dense single-token RunGreedy steps replay one CUDA graph of the whole step (captured on
  // first use) instead of launching its ~250 kernels one by one; sparse steps, Run and prompt
  // batches always launch directly. Results are the same either way (the same kernels).
  bool cuda_graphs = true;
};

class CudaForwardPass {
 public:
  // Uploads the model's weights (dequantized to f16 on the host) and allocates the page pool,
  // digests and every buffer a step needs: Run allocates nothing on the device.
  static Result<std::unique_ptr<CudaForwardPass>> Create(const Model& model,
                                                         const CudaForwardOptions& options);
  ~CudaForwardPass();
  CudaForwardPass(const CudaForwardPass&) = delete;
  CudaForwardPass& operator=(const CudaForwardPass&) = delete;

  // The device page pool (base is device memory): the same geometry as the host pool the
  // engine's cache::PagePool hands page ids from.
  const kernels::KvPool& pool() const { return pool_; }
  int64_t pool_pages() const { return options_.pool_pages; }
  // Per-page key digests (kernels/cuda/cuda_paged.h layout), device memory.
  uint16_t* digests() const { return digests_; }
  void* stream() const { return stream_; }
  const CudaForwardOptions& options() const { return options_; }
  void set_sparse(const CudaSparseOptions& sparse) { options_.sparse = sparse; }
  void set_cuda_graphs(bool on) { options_.cuda_graphs = on; }
  // Device bytes held for weights and for the KV pool (with digests).
  uint64_t weight_bytes() const { return weight_bytes_; }
  uint64_t pool_bytes() const { return pool_bytes_; }

  // As model::ForwardPass::Run: processes `tokens` at positions n_past .. n_past + size - 1 in
  // batches of at most max_batch_tokens, writing their K/V into the device pages that
  // kv.page_tables name. kv.pool must have this pass's page geometry; kv.pool.base is ignored
  // (the device pool is used). logits receives [vocab] (kLast) or [size][vocab] (kAll) floats,
  // copied back to the host. Returns when the work is done.
  Status Run(std::span<const int32_t> tokens, int32_t n_past, const KvView& kv, LogitsMode mode,
             std::vector<float>* logits);

  // Run with LogitsMode::kLast and greedy sampling on the GPU: the id of the largest logit of
  // the last token (ties: lowest id) — copies back 4 bytes instead of the logits.
  Result<int32_t> RunGreedy(std::span<const int32_t> tokens, int32_t n_past, const KvView& kv);

  // Recomputes the digests of every page of positions [0, n_tokens) in every layer (after
  // pages were filled by a copy rather than by Run, e.g. promoted from the host tier).
  Status RecomputeDigests(const KvView& kv, int32_t n_tokens);

 private:
  struct LayerBuffers {
    float* attn_norm = nullptr;
    float* ffn_norm = nullptr;
    uint16_t* wqkv = nullptr;  // [dim + 2 kv_dim][dim]: wq, wk, wv back to back
    uint16_t* wo = nullptr;
    uint16_t* wgu = nullptr;  // [2 ffn][dim]: w_gate then w_up
    uint16_t* wdown = nullptr;
  };

  CudaForwardPass(const Model& model, const CudaForwardOptions& options);
  Status Init();
  Result<void*> Alloc(size_t bytes);
  Status CheckKv(const KvView& kv, int64_t end_pos) const;
  Status SyncTables(const KvView& kv, int64_t n_pages);
  // Runs one batch; logits_out (host) receives the rows of `mode`, or when greedy_out is set
  // the last row's argmax goes there instead.
  Status RunBatch(std::span<const int32_t> tokens, int32_t n_past, LogitsMode mode,
                  float* logits_out, int32_t* greedy_out);
  // What one batch of n tokens after n_past does: its page count and the sparse layout.
  struct BatchPlan {
    int64_t n = 0;
    int32_t n_past = 0, total = 0;
    int n_pages = 0, sink_pages = 0, recent_pages = 0, k_pages = 0, n_sel = 0;
    bool sparse_step = false;   // a single token attending to selected pages (past dense_layers)
    bool step_program = false;  // a dense single token whose launches read step_ (graph-capturable)
  };
  BatchPlan PlanBatch(int64_t n, int32_t n_past) const;
  // Enqueues a batch whose inputs RunBatch staged in host_io_ (and host_step_): the work of
  // RunBatch without the final synchronisation.
  Status Enqueue(const BatchPlan& plan, LogitsMode mode, float* logits_out, bool greedy);

  const Model& model_;
  CudaForwardOptions options_;
  int max_pages_ = 0;  // per layer, from max_context_tokens
  std::unique_ptr<kernels::cuda::CudaBlas> blas_;
  void* stream_ = nullptr;
  std::vector<void*> allocations_;
  uint64_t weight_bytes_ = 0, pool_bytes_ = 0;

  kernels::KvPool pool_;
  uint16_t* digests_ = nullptr;
  std::vector<LayerBuffers> layers_;
  uint16_t* embd_ = nullptr;    // [vocab][dim] f16
  uint16_t* output_ = nullptr;  // embd_ when tied
  float* output_norm_ = nullptr;

  int32_t* tables_ = nullptr;                          // [n_layers][max_pages_]
  kernels::PageRef* refs_ = nullptr;                   // [n_layers][max_pages_]
  kernels::PageRef* selected_ = nullptr;               // [n_kv_heads][max_pages_]
  int32_t* io_ = nullptr;                              // tokens [B], positions [B], argmax [1]
  int32_t* host_io_ = nullptr;                         // pinned mirror of io_
  float* x_ = nullptr;                                 // [B][dim]
  uint16_t* h16_ = nullptr;                            // [B][max(dim, ffn)]
  float* qkv_ = nullptr;                               // [B][dim + 2 kv_dim]
  float* attn_ = nullptr;                              // [B][dim]
  float* gu_ = nullptr;                                // [B][2 ffn]
  float* logits_ = nullptr;                            // [B][vocab]
  void* attn_ws_ = nullptr;                            // decode split-k partials
  void* select_ws_ = nullptr;                          // page scoring and top-k
  std::vector<std::vector<int32_t>> uploaded_tables_;  // what tables_ holds, per layer
  bool tables_changed_ = true;    // SyncTables uploaded something since refs_ were built
  int32_t refs_total_ = -1;       // refs_ describe this many tokens of the current tables
  kernels::cuda::DecodeStep* step_ = nullptr;       // device
  kernels::cuda::DecodeStep* host_step_ = nullptr;  // pinned
  void* decode_graph_ = nullptr;  // cudaGraphExec_t of the dense greedy decode step
  bool gemv_ = false;             // single-token products through CudaGemv (shapes allow)
};

}  // namespace kvtier::model

#endif  // KVTIER_HAVE_CUDA
