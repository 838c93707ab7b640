#include "model/cuda_forward.h"

#include "model/internal/batching.h"

#if KVTIER_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "kernels/cuda/cuda_blas.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_paged.h"

namespace kvtier::model {
namespace {

namespace kc = kernels::cuda;

Status ForwardError(const std::string& m) { return InvalidArgumentError("cuda forward: " + m); }

}  // namespace

CudaForwardPass::CudaForwardPass(const Model& model, const CudaForwardOptions& options)
    : model_(model), options_(options) {}

CudaForwardPass::~CudaForwardPass() {
  if (stream_ != nullptr) {
    (void)kc::CudaSynchronize(stream_);
    (void)kc::CudaStreamDestroy(stream_);
  }
  kc::CudaGraphDestroy(decode_graph_);
  blas_.reset();
  for (void* p : allocations_) (void)kc::CudaFree(p);
  if (host_io_ != nullptr) (void)kc::CudaHostFree(host_io_);
  if (host_step_ != nullptr) (void)kc::CudaHostFree(host_step_);
}

Result<std::unique_ptr<CudaForwardPass>> CudaForwardPass::Create(
    const Model& model, const CudaForwardOptions& options) {
  if (!kc::CudaDeviceAvailable()) return UnavailableError("cuda forward: no CUDA device");
  if (options.pool_pages <= 0 || options.pool_pages > INT32_MAX) {
    return InvalidArgumentError("cuda forward: pool_pages must be in [1, 2^31)");
  }
  if (options.page_tokens != 16) {
    return InvalidArgumentError("cuda forward: page_tokens must be 16 (the prefill kernel's)");
  }
  std::unique_ptr<CudaForwardPass> f(new CudaForwardPass(model, options));
  RETURN_IF_ERROR(f->Init());
  return f;
}

Result<void*> CudaForwardPass::Alloc(size_t bytes) {
  ASSIGN_OR_RETURN(void* p, kc::CudaMalloc(std::max<size_t>(bytes, 256)));
  allocations_.push_back(p);
  return p;
}

Status CudaForwardPass::Init() {
  const ModelConfig& c = model_.config();
  if (c.head_dim > 256) return ForwardError("head_dim > 256 is not supported");
  options_.max_batch_tokens = std::max(1, options_.max_batch_tokens);
  if (options_.max_context_tokens <= 0) options_.max_context_tokens = c.context_length;
  const int pt = options_.page_tokens;
  max_pages_ = (options_.max_context_tokens + pt - 1) / pt;
  const int64_t B = options_.max_batch_tokens;
  const int64_t dim = c.dim, kv = c.kv_dim(), ffn = c.ffn_dim, vocab = c.vocab_size;

  ASSIGN_OR_RETURN(stream_, kc::CudaStreamCreate());
  ASSIGN_OR_RETURN(blas_, kc::CudaBlas::Create());

  // ---- Weights ----
  auto upload_vec = [&](const std::vector<float>& v) -> Result<float*> {
    ASSIGN_OR_RETURN(void* p, Alloc(v.size() * sizeof(float)));
    RETURN_IF_ERROR(kc::CudaCopyToDevice(p, v.data(), v.size() * sizeof(float)));
    weight_bytes_ += v.size() * sizeof(float);
    return static_cast<float*>(p);
  };
  // Several matrices with the same cols stacked row-wise into one f16 buffer.
  auto upload_stack =
      [&](std::initializer_list<const kernels::WeightView*> ws) -> Result<uint16_t*> {
    size_t bytes = 0;
    for (const auto* w : ws) bytes += kc::WeightF16Bytes(*w);
    ASSIGN_OR_RETURN(void* p, Alloc(bytes));
    auto* dst = static_cast<uint16_t*>(p);
    for (const auto* w : ws) {
      RETURN_IF_ERROR(kc::CudaUploadWeightF16(*w, dst));
      dst += w->rows * w->cols;
    }
    weight_bytes_ += bytes;
    return static_cast<uint16_t*>(p);
  };
  ASSIGN_OR_RETURN(embd_, upload_stack({&model_.token_embd()}));
  if (c.tied_embeddings) {
    output_ = embd_;
  } else {
    ASSIGN_OR_RETURN(output_, upload_stack({&model_.output()}));
  }
  ASSIGN_OR_RETURN(output_norm_, upload_vec(model_.output_norm()));
  layers_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model_.layer(l);
    LayerBuffers& b = layers_[l];
    ASSIGN_OR_RETURN(b.attn_norm, upload_vec(w.attn_norm));
    ASSIGN_OR_RETURN(b.ffn_norm, upload_vec(w.ffn_norm));
    ASSIGN_OR_RETURN(b.wqkv, upload_stack({&w.wq, &w.wk, &w.wv}));
    ASSIGN_OR_RETURN(b.wo, upload_stack({&w.wo}));
    ASSIGN_OR_RETURN(b.wgu, upload_stack({&w.w_gate, &w.w_up}));
    ASSIGN_OR_RETURN(b.wdown, upload_stack({&w.w_down}));
  }

  // ---- KV pool and digests ----
  pool_.page_tokens = pt;
  pool_.n_kv_heads = c.n_kv_heads;
  pool_.head_dim = c.head_dim;
  const size_t pool_bytes = static_cast<size_t>(options_.pool_pages) * pool_.PageBytes();
  const size_t digest_bytes =
      static_cast<size_t>(options_.pool_pages) * kc::DigestHalfs(pool_) * sizeof(uint16_t);
  ASSIGN_OR_RETURN(void* pool_mem, Alloc(pool_bytes));
  pool_.base = static_cast<uint16_t*>(pool_mem);
  ASSIGN_OR_RETURN(void* dig, Alloc(digest_bytes));
  digests_ = static_cast<uint16_t*>(dig);
  pool_bytes_ = pool_bytes + digest_bytes;

  // ---- Step buffers ----
  const size_t table_elems = static_cast<size_t>(c.n_layers) * max_pages_;
  ASSIGN_OR_RETURN(void* t, Alloc(table_elems * sizeof(int32_t)));
  tables_ = static_cast<int32_t*>(t);
  RETURN_IF_ERROR(kc::CudaMemsetAsync(tables_, 0, table_elems * sizeof(int32_t), stream_));
  ASSIGN_OR_RETURN(void* r, Alloc(table_elems * sizeof(kernels::PageRef)));
  refs_ = static_cast<kernels::PageRef*>(r);
  ASSIGN_OR_RETURN(
      void* sel, Alloc(static_cast<size_t>(c.n_kv_heads) * max_pages_ * sizeof(kernels::PageRef)));
  selected_ = static_cast<kernels::PageRef*>(sel);
  const size_t io_elems = 2 * static_cast<size_t>(B) + 1;
  ASSIGN_OR_RETURN(void* io, Alloc(io_elems * sizeof(int32_t)));
  io_ = static_cast<int32_t*>(io);
  ASSIGN_OR_RETURN(void* hio, kc::CudaHostAlloc(io_elems * sizeof(int32_t)));
  host_io_ = static_cast<int32_t*>(hio);
  ASSIGN_OR_RETURN(void* st, Alloc(sizeof(kc::DecodeStep)));
  step_ = static_cast<kc::DecodeStep*>(st);
  ASSIGN_OR_RETURN(void* hst, kc::CudaHostAlloc(sizeof(kc::DecodeStep)));
  host_step_ = static_cast<kc::DecodeStep*>(hst);
  auto alloc_f32 = [&](int64_t n) -> Result<float*> {
    ASSIGN_OR_RETURN(void* p, Alloc(static_cast<size_t>(n) * sizeof(float)));
    return static_cast<float*>(p);
  };
  ASSIGN_OR_RETURN(x_, alloc_f32(B * dim));
  ASSIGN_OR_RETURN(void* h, Alloc(static_cast<size_t>(B * std::max(dim, ffn)) * 2));
  h16_ = static_cast<uint16_t*>(h);
  ASSIGN_OR_RETURN(qkv_, alloc_f32(B * (dim + 2 * kv)));
  ASSIGN_OR_RETURN(attn_, alloc_f32(B * dim));
  ASSIGN_OR_RETURN(gu_, alloc_f32(B * 2 * ffn));
  ASSIGN_OR_RETURN(logits_, alloc_f32(B * vocab));
  ASSIGN_OR_RETURN(attn_ws_,
                   Alloc(kc::CudaDecodeAttentionWorkspaceBytes(c.n_heads, c.head_dim, max_pages_)));
  ASSIGN_OR_RETURN(select_ws_,
                   Alloc(kc::CudaSelectPagesWorkspaceBytes(c.n_heads, c.n_kv_heads, max_pages_)));
  uploaded_tables_.assign(c.n_layers, {});
  gemv_ = dim % 8 == 0 && ffn % 8 == 0 && std::max(dim, ffn) <= kc::kGemvMaxCols;
  return kc::CudaSynchronize(stream_);
}

Status CudaForwardPass::CheckKv(const KvView& kv, int64_t end_pos) const {
  const ModelConfig& c = model_.config();
  if (static_cast<int>(kv.page_tables.size()) != c.n_layers) {
    return ForwardError("page tables for " + std::to_string(kv.page_tables.size()) +
                        " layers, model has " + std::to_string(c.n_layers));
  }
  if (kv.pool.page_tokens != pool_.page_tokens || kv.pool.n_kv_heads != pool_.n_kv_heads ||
      kv.pool.head_dim != pool_.head_dim) {
    return ForwardError("KvView page geometry differs from the device pool's");
  }
  if (kv.resolver != nullptr) {
    return ForwardError("cold pages (KvView::resolver) are not supported by the CUDA pass yet");
  }
  if (end_pos > options_.max_context_tokens) {
    return ForwardError("context of " + std::to_string(end_pos) + " tokens exceeds max_context " +
                        std::to_string(options_.max_context_tokens));
  }
  const int64_t pages_needed = (end_pos + pool_.page_tokens - 1) / pool_.page_tokens;
  for (const auto& table : kv.page_tables) {
    if (static_cast<int64_t>(table.size()) < pages_needed) {
      return ForwardError("page table covers " + std::to_string(table.size() * pool_.page_tokens) +
                          " positions, need " + std::to_string(end_pos));
    }
  }
  return Status::Ok();
}

// Uploads the part of each layer's page table that differs from what the device holds (usually
// nothing, or the one page appended since the last step).
Status CudaForwardPass::SyncTables(const KvView& kv, int64_t n_pages) {
  for (size_t l = 0; l < kv.page_tables.size(); ++l) {
    const std::vector<int32_t>& want = kv.page_tables[l];
    std::vector<int32_t>& have = uploaded_tables_[l];
    int64_t first = 0;
    const int64_t common = std::min<int64_t>(n_pages, static_cast<int64_t>(have.size()));
    // Usually everything but the last page matches: memcmp finds that at memory speed (an
    // element loop took milliseconds per step at millions of tokens x 30 layers).
    if (common > 0 && std::memcmp(have.data(), want.data(), common * sizeof(int32_t)) == 0) {
      first = common;
    } else {
      while (first < common && have[first] == want[first]) ++first;
    }
    if (first == n_pages) continue;
    for (int64_t p = first; p < n_pages; ++p) {
      if (want[p] < 0 || want[p] >= options_.pool_pages) {
        return ForwardError("page id " + std::to_string(want[p]) + " outside the device pool of " +
                            std::to_string(options_.pool_pages) + " pages");
      }
    }
    if (static_cast<int64_t>(have.size()) < n_pages) have.resize(n_pages);
    std::copy(want.begin() + first, want.begin() + n_pages, have.begin() + first);
    tables_changed_ = true;
    RETURN_IF_ERROR(kc::CudaCopyToDeviceAsync(tables_ + l * max_pages_ + first, have.data() + first,
                                              (n_pages - first) * sizeof(int32_t), stream_));
  }
  return Status::Ok();
}

Status CudaForwardPass::Run(std::span<const int32_t> tokens, int32_t n_past, const KvView& kv,
                            LogitsMode mode, std::vector<float>* logits) {
  const ModelConfig& c = model_.config();
  if (tokens.empty()) return ForwardError("no tokens");
  if (n_past < 0) return ForwardError("negative position");
  const int64_t end_pos = static_cast<int64_t>(n_past) + static_cast<int64_t>(tokens.size());
  RETURN_IF_ERROR(CheckKv(kv, end_pos));
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab_size) {
      return ForwardError("token id " + std::to_string(t) + " out of range");
    }
  }
  RETURN_IF_ERROR(SyncTables(kv, (end_pos + pool_.page_tokens - 1) / pool_.page_tokens));
  return internal::ForEachBatch(
      tokens, n_past, static_cast<size_t>(options_.max_batch_tokens), c.vocab_size, mode, logits,
      [&](std::span<const int32_t> batch, int32_t batch_past, LogitsMode batch_mode, float* out) {
        return RunBatch(batch, batch_past, batch_mode, out, nullptr);
      });
}

Result<int32_t> CudaForwardPass::RunGreedy(std::span<const int32_t> tokens, int32_t n_past,
                                           const KvView& kv) {
  const ModelConfig& c = model_.config();
  if (tokens.empty()) return ForwardError("no tokens");
  if (n_past < 0) return ForwardError("negative position");
  const int64_t end_pos = static_cast<int64_t>(n_past) + static_cast<int64_t>(tokens.size());
  RETURN_IF_ERROR(CheckKv(kv, end_pos));
  for (int32_t t : tokens) {
    if (t < 0 || t >= c.vocab_size) {
      return ForwardError("token id " + std::to_string(t) + " out of range");
    }
  }
  RETURN_IF_ERROR(SyncTables(kv, (end_pos + pool_.page_tokens - 1) / pool_.page_tokens));
  const size_t B = static_cast<size_t>(options_.max_batch_tokens);
  int32_t token = 0;
  for (size_t off = 0; off < tokens.size(); off += B) {
    const size_t n = std::min(B, tokens.size() - off);
    const bool last_batch = off + n == tokens.size();
    RETURN_IF_ERROR(RunBatch(tokens.subspan(off, n), n_past + static_cast<int32_t>(off),
                             last_batch ? LogitsMode::kLast : LogitsMode::kNone, nullptr,
                             last_batch ? &token : nullptr));
  }
  return token;
}

Status CudaForwardPass::RecomputeDigests(const KvView& kv, int32_t n_tokens) {
  if (n_tokens <= 0) return Status::Ok();
  RETURN_IF_ERROR(CheckKv(kv, n_tokens));
  const int n_pages = (n_tokens + pool_.page_tokens - 1) / pool_.page_tokens;
  RETURN_IF_ERROR(SyncTables(kv, n_pages));
  const int n_layers = model_.config().n_layers;
  RETURN_IF_ERROR(kc::CudaBuildPageRefs(tables_, max_pages_, n_layers, n_tokens, pool_.page_tokens,
                                        refs_, max_pages_, stream_));
  refs_total_ = n_tokens;
  tables_changed_ = false;
  for (int l = 0; l < n_layers; ++l) {
    RETURN_IF_ERROR(kc::CudaUpdateDigests(pool_, refs_ + static_cast<size_t>(l) * max_pages_,
                                          n_pages, digests_, stream_));
  }
  return kc::CudaSynchronize(stream_);
}

CudaForwardPass::BatchPlan CudaForwardPass::PlanBatch(int64_t n, int32_t n_past) const {
  BatchPlan p;
  const int pt = pool_.page_tokens;
  p.n = n;
  p.n_past = n_past;
  p.total = n_past + static_cast<int32_t>(n);
  p.n_pages = (p.total + pt - 1) / pt;
  // Sparse decode: sinks + recent window + top pages, in layers past the dense ones.
  const CudaSparseOptions& sp = options_.sparse;
  p.sink_pages = (sp.sink_tokens + pt - 1) / pt;
  p.recent_pages = (sp.recent_tokens + pt - 1) / pt;
  p.k_pages = std::max(0, sp.budget_tokens / pt - p.sink_pages - p.recent_pages);
  p.n_sel = kc::CudaSelectedPages(p.n_pages, p.sink_pages, p.recent_pages, p.k_pages);
  p.sparse_step =
      n == 1 && sp.enabled && p.total > sp.min_context_tokens && p.n_sel < p.n_pages;
  p.step_program = n == 1 && !p.sparse_step;
  return p;
}

Status CudaForwardPass::RunBatch(std::span<const int32_t> tokens, int32_t n_past, LogitsMode mode,
                                 float* logits_out, int32_t* greedy_out) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t B = options_.max_batch_tokens;
  const BatchPlan plan = PlanBatch(n, n_past);
  const bool step_program = plan.step_program;

  // Inputs into the pinned staging: free, the previous batch ended with a sync.
  std::memcpy(host_io_, tokens.data(), n * sizeof(int32_t));
  for (int64_t t = 0; t < n; ++t) host_io_[B + t] = n_past + static_cast<int32_t>(t);
  void* s = stream_;
  if (step_program) {
    *host_step_ = kc::DecodeStep{n_past, plan.total, plan.n_pages, 0};
    // The step program appends its own page's ref; the refs before it must describe n_past
    // tokens of the current tables.
    if (tables_changed_ || refs_total_ != n_past) {
      RETURN_IF_ERROR(kc::CudaBuildPageRefs(tables_, max_pages_, model_.config().n_layers, n_past,
                                            pool_.page_tokens, refs_, max_pages_, s));
    }
  }
  const bool greedy = greedy_out != nullptr;
  if (step_program && greedy && options_.cuda_graphs && decode_graph_ == nullptr) {
    // Capture the step once. Should the runtime refuse (nothing here allocates or syncs, but a
    // driver may lack graph support), graphs go off for this pass and the step runs directly.
    Status st = kc::CudaStreamBeginCapture(s);
    if (st.ok()) {
      st = Enqueue(plan, mode, nullptr, true);
      auto exec = kc::CudaStreamEndCapture(s);  // ends the capture even after an error
      if (st.ok() && exec.ok()) decode_graph_ = *exec;
      if (st.ok() && !exec.ok()) st = exec.status();
    }
    if (!st.ok()) {
      std::fprintf(stderr, "kvtier: CUDA graph capture failed (%s); launching directly\n",
                   st.ToString().c_str());
      options_.cuda_graphs = false;
    }
  }
  if (step_program && greedy && options_.cuda_graphs) {
    RETURN_IF_ERROR(kc::CudaGraphLaunch(decode_graph_, s));
  } else {
    RETURN_IF_ERROR(Enqueue(plan, mode, logits_out, greedy));
  }
  RETURN_IF_ERROR(kc::CudaSynchronize(s));
  refs_total_ = plan.total;
  tables_changed_ = false;
  if (greedy) *greedy_out = host_io_[2 * B];
  return Status::Ok();
}

Status CudaForwardPass::Enqueue(const BatchPlan& plan, LogitsMode mode, float* logits_out,
                                bool greedy) {
  const ModelConfig& c = model_.config();
  const int64_t B = options_.max_batch_tokens;
  const int64_t dim = c.dim, kv_dim = c.kv_dim(), ffn = c.ffn_dim, vocab = c.vocab_size;
  const int pt = pool_.page_tokens;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const int64_t n = plan.n;
  const int32_t n_past = plan.n_past, total = plan.total;
  const int n_pages = plan.n_pages;
  const int first_new_page = n_past / pt;
  const bool step_program = plan.step_program, sparse_step = plan.sparse_step;
  void* s = stream_;

  int32_t* d_tokens = io_;
  int32_t* d_positions = io_ + B;
  int32_t* d_argmax = io_ + 2 * B;
  RETURN_IF_ERROR(kc::CudaCopyToDeviceAsync(d_tokens, host_io_, n * sizeof(int32_t), s));
  RETURN_IF_ERROR(kc::CudaCopyToDeviceAsync(d_positions, host_io_ + B, n * sizeof(int32_t), s));
  if (step_program) {
    RETURN_IF_ERROR(kc::CudaCopyToDeviceAsync(step_, host_step_, sizeof(kc::DecodeStep), s));
    RETURN_IF_ERROR(
        kc::CudaAppendPageRef(tables_, max_pages_, c.n_layers, step_, pt, refs_, max_pages_, s));
  } else {
    RETURN_IF_ERROR(
        kc::CudaBuildPageRefs(tables_, max_pages_, c.n_layers, total, pt, refs_, max_pages_, s));
  }
  RETURN_IF_ERROR(kc::CudaEmbedding(embd_, dim, d_tokens, n, x_, s));

  float* q = qkv_;
  float* k = qkv_ + n * dim;
  float* v = k + n * kv_dim;
  float* gate = gu_;
  float* up = gu_ + n * ffn;
  // A single token's products go through CudaGemv (the norms and SwiGLU fused in, f32 inputs);
  // batches through cuBLAS.
  const bool gemv = n == 1 && gemv_;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerBuffers& w = layers_[l];
    const kernels::PageRef* refs = refs_ + static_cast<size_t>(l) * max_pages_;
    if (gemv) {  // one product, the norm fused in: q | k | v are contiguous for one token
      RETURN_IF_ERROR(kc::CudaGemv(w.wqkv, dim + 2 * kv_dim, dim, kc::GemvInput::kRmsNorm, x_,
                                   w.attn_norm, c.rms_eps, 0.0f, qkv_, s));
    } else {
      RETURN_IF_ERROR(kc::CudaRmsNormToF16(x_, w.attn_norm, n, dim, c.rms_eps, h16_, s));
      RETURN_IF_ERROR(blas_->Gemm(w.wqkv, dim, dim, h16_, n, 0.0f, q, s));
      RETURN_IF_ERROR(blas_->Gemm(w.wqkv + dim * dim, kv_dim, dim, h16_, n, 0.0f, k, s));
      RETURN_IF_ERROR(blas_->Gemm(w.wqkv + (dim + kv_dim) * dim, kv_dim, dim, h16_, n, 0.0f, v, s));
    }
    if (n == 1) {  // q | k contiguous: their heads in one launch
      RETURN_IF_ERROR(kc::CudaRopeInPlace(q, 1, c.n_heads + c.n_kv_heads, c.head_dim, d_positions,
                                          c.rope_freq_base, c.rope_freq_scale, s));
    } else {
      RETURN_IF_ERROR(kc::CudaRopeInPlace(q, n, c.n_heads, c.head_dim, d_positions,
                                          c.rope_freq_base, c.rope_freq_scale, s));
      RETURN_IF_ERROR(kc::CudaRopeInPlace(k, n, c.n_kv_heads, c.head_dim, d_positions,
                                          c.rope_freq_base, c.rope_freq_scale, s));
    }
    RETURN_IF_ERROR(kc::CudaWriteKv(pool_, tables_ + static_cast<size_t>(l) * max_pages_,
                                    d_positions, k, v, n, s));
    if (step_program) {  // the step page's digests: once for all layers, after the loop
      RETURN_IF_ERROR(kc::CudaPagedAttentionDecodeStep(pool_, refs, max_pages_, step_, q,
                                                       c.n_heads, scale, attn_, attn_ws_, s));
    } else {
      RETURN_IF_ERROR(
          kc::CudaUpdateDigests(pool_, refs + first_new_page, n_pages - first_new_page, digests_, s));
      if (sparse_step && l >= options_.sparse.dense_layers) {
        RETURN_IF_ERROR(kc::CudaSelectPages(pool_, digests_, refs, n_pages, plan.sink_pages,
                                            plan.recent_pages, plan.k_pages, q, c.n_heads, scale,
                                            selected_, select_ws_, s));
        RETURN_IF_ERROR(kc::CudaPagedAttentionDecodePerKvHead(
            pool_, selected_, plan.n_sel, q, n_past, c.n_heads, scale, attn_, attn_ws_, s));
      } else if (n == 1) {
        RETURN_IF_ERROR(kc::CudaPagedAttentionDecode(pool_, refs, n_pages, q, n_past, c.n_heads,
                                                     scale, attn_, attn_ws_, s));
      } else {
        RETURN_IF_ERROR(kc::CudaPagedAttentionPrefill(pool_, refs, n_pages, q, d_positions, n,
                                                      c.n_heads, scale, attn_, s));
      }
    }
    if (gemv) {  // x += wo . attn; x += down . swiglu(gate, up), the norm and SwiGLU fused in
      RETURN_IF_ERROR(kc::CudaGemv(w.wo, dim, dim, kc::GemvInput::kPlain, attn_, nullptr, 0.0f,
                                   1.0f, x_, s));
      RETURN_IF_ERROR(kc::CudaGemv(w.wgu, 2 * ffn, dim, kc::GemvInput::kRmsNorm, x_, w.ffn_norm,
                                   c.rms_eps, 0.0f, gu_, s));
      RETURN_IF_ERROR(kc::CudaGemv(w.wdown, dim, ffn, kc::GemvInput::kSwiGlu, gu_, nullptr, 0.0f,
                                   1.0f, x_, s));
      continue;
    }
    RETURN_IF_ERROR(kc::CudaF32ToF16(attn_, n * dim, h16_, s));
    RETURN_IF_ERROR(blas_->Gemm(w.wo, dim, dim, h16_, n, 1.0f, x_, s));  // x += wo . attn
    RETURN_IF_ERROR(kc::CudaRmsNormToF16(x_, w.ffn_norm, n, dim, c.rms_eps, h16_, s));
    if (n == 1) {
      RETURN_IF_ERROR(blas_->Gemm(w.wgu, 2 * ffn, dim, h16_, 1, 0.0f, gu_, s));
    } else {
      RETURN_IF_ERROR(blas_->Gemm(w.wgu, ffn, dim, h16_, n, 0.0f, gate, s));
      RETURN_IF_ERROR(blas_->Gemm(w.wgu + ffn * dim, ffn, dim, h16_, n, 0.0f, up, s));
    }
    RETURN_IF_ERROR(kc::CudaSwiGluToF16(gate, up, n * ffn, h16_, s));
    RETURN_IF_ERROR(blas_->Gemm(w.wdown, dim, ffn, h16_, n, 1.0f, x_, s));  // x += down . h
  }
  if (step_program) {
    RETURN_IF_ERROR(
        kc::CudaUpdateStepDigests(pool_, refs_, max_pages_, c.n_layers, step_, digests_, s));
  }

  if (mode != LogitsMode::kNone) {
    const int64_t first_row = mode == LogitsMode::kLast ? n - 1 : 0;
    const int64_t rows = n - first_row;
    if (rows == 1 && gemv_) {
      RETURN_IF_ERROR(kc::CudaGemv(output_, vocab, dim, kc::GemvInput::kRmsNorm,
                                   x_ + first_row * dim, output_norm_, c.rms_eps, 0.0f, logits_, s));
    } else {
      RETURN_IF_ERROR(
          kc::CudaRmsNormToF16(x_ + first_row * dim, output_norm_, rows, dim, c.rms_eps, h16_, s));
      RETURN_IF_ERROR(blas_->Gemm(output_, vocab, dim, h16_, rows, 0.0f, logits_, s));
    }
    if (greedy) {
      RETURN_IF_ERROR(kc::CudaArgmax(logits_ + (rows - 1) * vocab, 1, vocab, d_argmax, s));
      RETURN_IF_ERROR(kc::CudaCopyToHostAsync(host_io_ + 2 * B, d_argmax, sizeof(int32_t), s));
    } else if (logits_out != nullptr) {
      RETURN_IF_ERROR(kc::CudaCopyToHostAsync(
          logits_out, logits_, static_cast<size_t>(rows * vocab) * sizeof(float), s));
    }
  }
  return Status::Ok();
}

}  // namespace kvtier::model

#endif  // KVTIER_HAVE_CUDA
