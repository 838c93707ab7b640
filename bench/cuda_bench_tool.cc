// The GPU benchmarks of issue 6 (scripts/gpu-check runs this after the CUDA tests):
//   1. device-to-device copy bandwidth (cudaMemcpyAsync, bytes read + written);
//   2. decode attention bandwidth (CudaPagedAttentionDecode, K+V bytes of the context read per
//      call) and its ratio to (1), for the default model's attention shape and a Llama-8B-like
//      one, over contexts larger than L2;
//   3. the whole model's decode ms/token (CudaForwardPass::RunGreedy, wall clock, host included)
//      at 8K, 128K and the largest context the device pool fits, dense (a CUDA graph per step,
//      and at 8K/128K also launched directly) and sparse (DESIGN §5:
//      sinks + recent window + top pages by digest bound, budget 2048 tokens), over KV pages
//      filled with random values (decode time does not depend on how the KV was produced);
//   4. prefill tokens/s (CudaForwardPass::Run of a 4K- and an 8K-token prompt, in batches of
//      512 and of 2048 tokens);
//   5. one layer's sparse page selection (CudaSelectPages: scoring, top-k, lists) at 128K, 1M
//      and 6M tokens of context.
// Prints a short table last.
//
//   cuda_bench_tool [--model PATH] [--quick] [--kernels]   (--kernels: 1, 2 and 5 only)
//   cuda_bench_tool --probe      # prints the device name; exit 0 with a device, 2 without
// Without --model it writes a random-weight model of SmolLM2-135M's shape (same speed, no
// quality) to a temporary file. Exit 0: done; 1: a CUDA or model error; 2: no CUDA device.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "base/status.h"
#include "kernels/cpu/ops.h"

#if KVTIER_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_paged.h"
#include "model/cuda_forward.h"
#include "model/model.h"
#include "model/random_model.h"

namespace kvtier {
namespace {

namespace kc = kernels::cuda;
using Clock = std::chrono::steady_clock;

struct Row {
  std::string what, value;
};
std::vector<Row> g_rows;

void Add(const std::string& what, const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  g_rows.push_back({what, buf});
  std::printf("  %-52s %s\n", what.c_str(), buf);
  std::fflush(stdout);
}

void PrintTable(const std::string& device) {
  std::printf("\n== kvtier GPU benchmarks on %s ==\n", device.c_str());
  for (const Row& r : g_rows) std::printf("| %-52s | %14s |\n", r.what.c_str(), r.value.c_str());
}

#define CHECK_OK(expr)                                                            \
  do {                                                                            \
    const Status _s = (expr);                                                     \
    if (!_s.ok()) {                                                               \
      std::fprintf(stderr, "cuda_bench: %s: %s\n", #expr, _s.ToString().c_str()); \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

template <typename T>
T Must(Result<T> r, const char* what) {
  if (!r.ok()) {
    std::fprintf(stderr, "cuda_bench: %s: %s\n", what, r.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*r);
}

// Median device time (ms) of fn() over `reps` runs after `warmup` runs, with events.
template <typename Fn>
double TimeMs(void* stream, int warmup, int reps, Fn fn) {
  void* e0 = Must(kc::CudaEventCreate(), "event");
  void* e1 = Must(kc::CudaEventCreate(), "event");
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    CHECK_OK(kc::CudaEventRecord(e0, stream));
    fn(i);
    CHECK_OK(kc::CudaEventRecord(e1, stream));
    ms.push_back(Must(kc::CudaEventElapsedMs(e0, e1), "elapsed"));
  }
  (void)kc::CudaEventDestroy(e0);
  (void)kc::CudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double CopyBandwidthGBs(void* stream) {
  const size_t bytes = size_t{1} << 30;
  void* a = Must(kc::CudaMalloc(bytes), "malloc");
  void* b = Must(kc::CudaMalloc(bytes), "malloc");
  CHECK_OK(kc::CudaFillRandomF16(static_cast<uint16_t*>(a), bytes / 2, 1, 1.0f, stream));
  const double ms = TimeMs(
      stream, 3, 10, [&](int) { CHECK_OK(kc::CudaCopyDeviceToDeviceAsync(b, a, bytes, stream)); });
  (void)kc::CudaFree(a);
  (void)kc::CudaFree(b);
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

// Decode attention over n_ctx tokens of `layers` separate layers (rotated so that L2 does not
// hold the context); returns GB/s of K+V read.
double DecodeAttentionGBs(int n_heads, int n_kv, int head_dim, int n_ctx, int layers, void* stream,
                          double* ms_out) {
  kernels::KvPool pool;
  pool.page_tokens = 16;
  pool.n_kv_heads = n_kv;
  pool.head_dim = head_dim;
  const int n_pages = (n_ctx + 15) / 16;
  const size_t pool_bytes = static_cast<size_t>(n_pages) * layers * pool.PageBytes();
  pool.base = static_cast<uint16_t*>(Must(kc::CudaMalloc(pool_bytes), "malloc pool"));
  CHECK_OK(kc::CudaFillRandomF16(pool.base, pool_bytes / 2, 2, 1.0f, stream));
  std::vector<kernels::PageRef> refs(static_cast<size_t>(n_pages) * layers);
  for (int l = 0; l < layers; ++l) {
    for (int p = 0; p < n_pages; ++p) {
      refs[static_cast<size_t>(l) * n_pages + p] = {l * n_pages + p, p * 16,
                                                    std::min(16, n_ctx - p * 16)};
    }
  }
  auto* d_refs = static_cast<kernels::PageRef*>(
      Must(kc::CudaMalloc(refs.size() * sizeof(kernels::PageRef)), "malloc"));
  CHECK_OK(kc::CudaCopyToDevice(d_refs, refs.data(), refs.size() * sizeof(kernels::PageRef)));
  const size_t q_bytes = static_cast<size_t>(n_heads) * head_dim * sizeof(float);
  auto* q = static_cast<float*>(Must(kc::CudaMalloc(q_bytes), "malloc"));
  auto* out = static_cast<float*>(Must(kc::CudaMalloc(q_bytes), "malloc"));
  CHECK_OK(kc::CudaMemsetAsync(q, 0, q_bytes, stream));
  void* ws = Must(kc::CudaMalloc(std::max<size_t>(
                      256, kc::CudaDecodeAttentionWorkspaceBytes(n_heads, head_dim, n_pages))),
                  "malloc");
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const double ms = TimeMs(stream, 3, 20, [&](int i) {
    CHECK_OK(kc::CudaPagedAttentionDecode(pool, d_refs + static_cast<size_t>(i % layers) * n_pages,
                                          n_pages, q, n_ctx - 1, n_heads, scale, out, ws, stream));
  });
  for (void* p : {static_cast<void*>(pool.base), static_cast<void*>(d_refs), static_cast<void*>(q),
                  static_cast<void*>(out), ws}) {
    (void)kc::CudaFree(p);
  }
  *ms_out = ms;
  const double bytes = static_cast<double>(n_ctx) * n_kv * head_dim * 2 * sizeof(uint16_t);
  return bytes / (ms * 1e-3) / 1e9;
}

// One layer's page selection for sparse decode (DESIGN §5 defaults: 4 sink pages, 16 recent,
// budget 2048 tokens = 128 pages) over n_pages candidate digests of the default model's shape
// (9 query / 3 KV heads, head_dim 64): CudaSelectPages = scoring + top-k + the lists, median ms.
double SelectMs(int n_pages, void* stream) {
  kernels::KvPool pool;
  pool.page_tokens = 16;
  pool.n_kv_heads = 3;
  pool.head_dim = 64;
  const int n_heads = 9, sink = 4, recent = 16, k = 2048 / 16 - sink - recent;
  const size_t dig_halfs = static_cast<size_t>(n_pages) * kc::DigestHalfs(pool);
  auto* dig = static_cast<uint16_t*>(Must(kc::CudaMalloc(dig_halfs * 2), "malloc digests"));
  CHECK_OK(kc::CudaFillRandomF16(dig, static_cast<int64_t>(dig_halfs), 5, 1.0f, stream));
  std::vector<kernels::PageRef> refs(n_pages);
  for (int p = 0; p < n_pages; ++p) refs[p] = {p, p * 16, 16};
  auto* d_refs = static_cast<kernels::PageRef*>(
      Must(kc::CudaMalloc(refs.size() * sizeof(kernels::PageRef)), "malloc"));
  CHECK_OK(kc::CudaCopyToDevice(d_refs, refs.data(), refs.size() * sizeof(kernels::PageRef)));
  const int n_sel = kc::CudaSelectedPages(n_pages, sink, recent, k);
  auto* q = static_cast<float*>(Must(kc::CudaMalloc(n_heads * 64 * sizeof(float)), "malloc"));
  auto* sel = Must(kc::CudaMalloc(static_cast<size_t>(n_sel) * 3 * sizeof(kernels::PageRef)),
                   "malloc");
  void* ws = Must(kc::CudaMalloc(kc::CudaSelectPagesWorkspaceBytes(n_heads, 3, n_pages)), "malloc");
  std::vector<float> hq(n_heads * 64);
  for (size_t i = 0; i < hq.size(); ++i) hq[i] = std::sin(0.37f * static_cast<float>(i));
  CHECK_OK(kc::CudaCopyToDevice(q, hq.data(), hq.size() * sizeof(float)));
  const double ms = TimeMs(stream, 3, 20, [&](int) {
    CHECK_OK(kc::CudaSelectPages(pool, dig, d_refs, n_pages, sink, recent, k, q, n_heads, 0.125f,
                                 static_cast<kernels::PageRef*>(sel), ws, stream));
  });
  for (void* p : {static_cast<void*>(dig), static_cast<void*>(d_refs), static_cast<void*>(q), sel,
                  ws}) {
    (void)kc::CudaFree(p);
  }
  return ms;
}

// Page tables for one sequence of up to max_tokens: layer l uses pages l*pages_per_layer + p.
std::vector<std::vector<int32_t>> Tables(int n_layers, int pages_per_layer) {
  std::vector<std::vector<int32_t>> t(n_layers, std::vector<int32_t>(pages_per_layer));
  for (int l = 0; l < n_layers; ++l) {
    for (int p = 0; p < pages_per_layer; ++p) t[l][p] = l * pages_per_layer + p;
  }
  return t;
}

double DecodeMsPerToken(model::CudaForwardPass& f, const model::KvView& kv, int32_t n_ctx,
                        bool sparse, int steps, bool graphs = true) {
  model::CudaSparseOptions sp = f.options().sparse;
  sp.enabled = sparse;
  sp.min_context_tokens = 0;  // measure sparse at every context (the default starts at 256K)
  f.set_sparse(sp);
  f.set_cuda_graphs(graphs);
  CHECK_OK(f.RecomputeDigests(kv, n_ctx));
  std::vector<int32_t> tok = {42};
  for (int i = 0; i < 2; ++i) Must(f.RunGreedy(tok, n_ctx, kv), "decode warm-up");
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = Clock::now();
    tok[0] = Must(f.RunGreedy(tok, n_ctx + i, kv), "decode");
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

int Main(int argc, char** argv) {
  std::string model_path;
  bool quick = false, probe = false, kernels_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
      model_path = argv[++i];
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--probe") == 0) {
      probe = true;
    } else if (std::strcmp(argv[i], "--kernels") == 0) {
      kernels_only = true;
    } else {
      std::fprintf(stderr,
                   "usage: cuda_bench_tool [--model PATH] [--quick] [--kernels] | --probe\n");
      return 1;
    }
  }
  if (!kc::CudaDeviceAvailable()) {
    std::fprintf(stderr, "cuda_bench: no CUDA device available\n");
    return 2;
  }
  const std::string device = kc::CudaDeviceName();
  if (probe) {
    size_t free_b = 0, total_b = 0;
    CHECK_OK(kc::CudaMemoryInfo(&free_b, &total_b));
    std::printf("%s, %.1f GiB free of %.1f GiB\n", device.c_str(), free_b / double(1ull << 30),
                total_b / double(1ull << 30));
    return 0;
  }
  std::printf("cuda_bench on %s\n", device.c_str());
  void* stream = Must(kc::CudaStreamCreate(), "stream");

  // 1-2. Bandwidths.
  const double copy_gbs = CopyBandwidthGBs(stream);
  Add("device-to-device copy (read+write)", "%.0f GB/s", copy_gbs);
  struct AttnShape {
    const char* name;
    int heads, kv, dim, ctx, layers;
  };
  const AttnShape shapes[] = {{"9q/3kv/64 (SmolLM2)", 9, 3, 64, 131072, 4},
                              {"32q/8kv/128 (Llama-8B)", 32, 8, 128, 131072, 4},
                              {"32q/8kv/128 (Llama-8B)", 32, 8, 128, 1048576, 2}};
  for (const AttnShape& s : shapes) {
    double ms = 0;
    const double gbs = DecodeAttentionGBs(s.heads, s.kv, s.dim, s.ctx, s.layers, stream, &ms);
    const std::string what =
        std::string("decode attention ") + s.name + " @" + std::to_string(s.ctx / 1024) + "K";
    Add(what + " GB/s", "%.0f GB/s", gbs);
    Add(what + " / copy bw", "%.2f", gbs / copy_gbs);
  }

  // 5. Sparse page selection.
  for (const int ctx_k : {128, 1024, 5960}) {
    const int n_pages = ctx_k * 1024 / 16;
    Add("page selection per layer @" + std::to_string(ctx_k) + "K (budget 2048)", "%.3f ms",
        SelectMs(n_pages, stream));
  }
  if (kernels_only) {
    PrintTable(device);
    return 0;
  }

  // 3-4. The model.
  if (model_path.empty()) {
    const auto dir = std::filesystem::temp_directory_path() / "kvtier_cuda_bench";
    std::filesystem::create_directories(dir);
    model_path = (dir / "random-smollm2-shape.gguf").string();
    if (!std::filesystem::exists(model_path)) {
      std::printf("writing a random-weight model of SmolLM2-135M's shape to %s\n",
                  model_path.c_str());
      CHECK_OK(model::WriteRandomLlamaGguf(model::SmolLm2Shape(), 1, model_path));
    }
  }
  auto m = Must(model::Model::Load(model_path), "model load");
  const model::ModelConfig& c = m->config();
  std::printf("model %s: %d layers, %d/%d heads, head_dim %d\n", model_path.c_str(), c.n_layers,
              c.n_heads, c.n_kv_heads, c.head_dim);

  // Size the pool for the largest context the free memory holds (less 3 GiB for weights,
  // cuBLAS, logits and workspaces).
  size_t free_b = 0, total_b = 0;
  CHECK_OK(kc::CudaMemoryInfo(&free_b, &total_b));
  const double weight_f16 = static_cast<double>(m->weight_bytes()) * 4.5;  // q4 -> f16, bound
  kernels::KvPool shape;
  shape.page_tokens = 16;
  shape.n_kv_heads = c.n_kv_heads;
  shape.head_dim = c.head_dim;
  const double per_page =
      static_cast<double>(shape.PageBytes()) + 2.0 * c.n_kv_heads * 2 * c.head_dim;
  const double usable = static_cast<double>(free_b) - weight_f16 - 3.0 * (1ull << 30);
  int pages_per_layer = static_cast<int>(usable / per_page / c.n_layers);
  const int max_ctx_cap = quick ? 262144 : (1 << 30);
  pages_per_layer = std::min(pages_per_layer, max_ctx_cap / 16);
  const int max_ctx = (pages_per_layer - 2) * 16;
  model::CudaForwardOptions opts;
  opts.pool_pages = static_cast<int64_t>(pages_per_layer) * c.n_layers;
  opts.max_context_tokens = pages_per_layer * 16;
  opts.max_batch_tokens = 2048;  // prefill below runs batches of 512 and of 2048
  auto f = Must(model::CudaForwardPass::Create(*m, opts), "CudaForwardPass");
  std::printf("device pool: %d pages per layer (%.1f GiB), largest context %d tokens\n",
              pages_per_layer, f->pool_bytes() / double(1ull << 30), max_ctx);
  CHECK_OK(kc::CudaFillRandomF16(f->pool().base,
                                 f->pool_bytes() / 2 - opts.pool_pages * kc::DigestHalfs(f->pool()),
                                 3, 1.0f, f->stream()));
  const auto tables = Tables(c.n_layers, pages_per_layer);
  const model::KvView kv{f->pool(), tables};

  std::vector<int> contexts = {8192, 131072, max_ctx};
  contexts.erase(
      std::remove_if(contexts.begin(), contexts.end(), [&](int x) { return x > max_ctx; }),
      contexts.end());
  const int steps = quick ? 5 : 20;
  for (int ctx : contexts) {
    const std::string at = ctx == max_ctx && ctx != 8192 && ctx != 131072
                               ? "max " + std::to_string(ctx / 1024) + "K"
                               : std::to_string(ctx / 1024) + "K";
    Add("decode ms/token dense @" + at, "%.2f ms",
        DecodeMsPerToken(*f, kv, ctx, false, ctx == max_ctx ? std::max(3, steps / 4) : steps));
    if (ctx != max_ctx) {
      Add("decode ms/token dense, no CUDA graph @" + at, "%.2f ms",
          DecodeMsPerToken(*f, kv, ctx, false, steps, false));
    }
    Add("decode ms/token sparse (budget 2048) @" + at, "%.2f ms",
        DecodeMsPerToken(*f, kv, ctx, true, steps));
  }

  // Prefill: prompts of random token ids, fed in batches of 512 (the CPU engine's batch) and of
  // 2048 tokens (more query-row blocks per attention launch, larger products).
  for (int n : {4096, 8192}) {
    if (n > max_ctx) continue;
    std::vector<int32_t> prompt(n);
    for (int i = 0; i < n; ++i) prompt[i] = (i * 7919) % c.vocab_size;
    std::vector<float> logits;
    CHECK_OK(f->Run(std::span(prompt).first(512), 0, kv, model::LogitsMode::kLast, &logits));
    for (const int batch : {512, 2048}) {
      const auto t0 = Clock::now();
      for (int off = 0; off < n; off += batch) {
        const auto part = std::span(prompt).subspan(off, std::min(batch, n - off));
        CHECK_OK(f->Run(part, off, kv,
                        off + batch >= n ? model::LogitsMode::kLast : model::LogitsMode::kNone,
                        &logits));
      }
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      Add("prefill tokens/s @" + std::to_string(n / 1024) + "K prompt, batches of " +
              std::to_string(batch),
          "%.0f tok/s", n / s);
    }
  }

  PrintTable(device);
  (void)kc::CudaStreamDestroy(stream);
  return 0;
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) { return kvtier::Main(argc, argv); }

#else  // !KVTIER_HAVE_CUDA

int main() {
  std::fprintf(stderr,
               "cuda_bench: this build has no CUDA backend (configure with KVTIER_CUDA=ON)\n");
  return 2;
}

#endif
