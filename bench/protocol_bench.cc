// Protocol-layer cost per request, without sockets: framing + ParseRequest + EncodeResult for
// `health`, `tokenize` (1 KiB of text) and `generate`. The socket-level requests/s of the daemon
// are measured separately (BENCHMARKS.md). Run: build/bench/protocol_bench
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "protocol/framing.h"
#include "protocol/messages.h"

namespace {

using namespace kvtier::protocol;  // NOLINT(build/namespaces): a benchmark file

std::string TokenizeLine() {
  std::string text;
  while (text.size() < 1024) text += "The quick brown fox jumps over the lazy dog. ";
  text.resize(1024);
  return EncodeRequest({kvtier::protocol::RequestId(12345), TokenizeRequest{text, false}});
}

std::string GenerateLine() {
  GenerateRequest g;
  g.input.messages = {{Role::kSystem, "You are a helpful assistant."},
                      {Role::kUser, "What is the capital of France? Answer in one word."}};
  g.max_tokens = 64;
  g.temperature = 0.7;
  g.seed = 42;
  g.stop = {"\n\n"};
  g.stream = true;
  g.cache_salt = "team-a";
  return EncodeRequest({RequestId("req-000123"), g});
}

GenerateResult SampleGenerateResult() {
  GenerateResult r;
  r.text = "Paris.";
  r.finish_reason = FinishReason::kStop;
  r.usage = {41, 32, {32, 0, 0, 0}, 3};
  r.timing = {12.5, 10.25, 30.5, 98.4};
  r.retrieval = {0, 0};
  r.seed = 42;
  return r;
}

// Decodes `frame` (one line and its '\n'), parses, and encodes `result` for it: the protocol
// work the daemon does for one request, minus the engine.
template <typename R>
void RunRoundTrip(benchmark::State& state, const std::string& frame, const R& result) {
  LineDecoder decoder;
  size_t out_bytes = 0;
  for (auto _ : state) {
    (void)decoder.Feed(frame, [&](std::string_view line) {
      RequestError error;
      kvtier::Result<Request> r = ParseRequest(line, &error);
      if (!r.ok()) std::abort();
      std::string out = EncodeResult(r->id, result);
      out_bytes += out.size();
      benchmark::DoNotOptimize(out);
    });
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(frame.size()));
  state.counters["out_bytes"] = static_cast<double>(out_bytes) / state.iterations();
}

void BM_Health(benchmark::State& state) {
  RunRoundTrip(state, EncodeRequest({RequestId(1), HealthRequest{}}),
               HealthResult{"0.1.0", "SmolLM2-135M-Instruct.Q4_1.gguf", "cpu", "x86-64", 3600.5});
}
BENCHMARK(BM_Health);

void BM_Tokenize1KiB(benchmark::State& state) {
  TokenizeResult result;
  for (int i = 0; i < 230; ++i) result.tokens.push_back(1000 + i);  // ~1 KiB of English
  RunRoundTrip(state, TokenizeLine(), result);
}
BENCHMARK(BM_Tokenize1KiB);

void BM_Generate(benchmark::State& state) {
  RunRoundTrip(state, GenerateLine(), SampleGenerateResult());
}
BENCHMARK(BM_Generate);

void BM_ParseGenerateOnly(benchmark::State& state) {
  const std::string frame = GenerateLine();
  const std::string_view line(frame.data(), frame.size() - 1);
  for (auto _ : state) {
    kvtier::Result<Request> r = ParseRequest(line);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParseGenerateOnly);

void BM_EncodeToken(benchmark::State& state) {
  const RequestId id("req-000123");
  for (auto _ : state) {
    std::string out = EncodeToken(id, 12345, " the");
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodeToken);

}  // namespace
