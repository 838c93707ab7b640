// bench/retrieval_cases.h — seeded passkey and needle-in-a-haystack cases for retrieval
// attention (DESIGN §5), and the harness that runs one case through the engine: the haystack is
// prefilled (dense) and cached, then the question is the new part of the prompt, processed
// with the attention under test, and the greedy answer is scored by exact match.
//
// Used by bench/retrieval_quality_tool.cc and by tests/engine/retrieval_model_test.cc.
// Thread safety: plain functions; an Engine serialises its requests itself.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/engine.h"

namespace kvtier::bench {

enum class CaseKind { kPasskey, kNeedle };

struct RetrievalCase {
  std::string haystack;  // everything before the question (prefilled and cached first)
  std::string question;  // the new part of the prompt
  std::string answer;    // the digits to find
  double depth = 0;      // where the needle sits in the filler, 0..1
};

// Filler for needle cases: plain sentences on unrelated topics, chosen by the seed.
inline const std::vector<std::string>& NeedleFiller() {
  static const std::vector<std::string> s = {
      "The river bends twice before it reaches the old mill at the edge of the valley.",
      "Most bakeries in the town open before sunrise and close shortly after lunch.",
      "A committee met on Tuesday to discuss the schedule for the coming harvest.",
      "The library keeps its oldest maps in a cool room on the second floor.",
      "Several students walked to the museum to see the new exhibition of ceramics.",
      "Rain fell steadily through the night and the roads were quiet in the morning.",
      "The orchestra rehearsed the second movement until the tempo felt natural.",
      "Farmers in the region rotate their crops to keep the soil healthy.",
      "The ferry leaves the harbour every hour and crosses the bay in twenty minutes.",
      "An engineer checked the bridge cables and wrote a short report about them.",
      "Children played near the fountain while their parents talked on the benches.",
      "The recipe calls for flour, butter, two eggs and a pinch of salt.",
      "Snow covered the mountain pass, so the trucks took the longer southern road.",
      "A small shop on the corner sells stamps, newspapers and fresh flowers.",
      "The astronomer noted the position of the comet on three consecutive nights.",
      "Volunteers planted a row of young oak trees along the new cycling path.",
      "The painter mixed a deep blue for the sky and a pale green for the hills.",
      "Train services were delayed because of maintenance work on the northern line.",
      "The garden behind the school grows tomatoes, beans and a few pumpkins.",
      "An old clock in the square still chimes at noon and at six in the evening.",
  };
  return s;
}

inline const std::vector<std::string>& NeedleKeys() {
  static const std::vector<std::string> k = {
      "Lisbon", "the red kite",   "Oslo",  "the copper kettle", "Nairobi", "the glass tower",
      "Quito",  "the paper boat", "Hanoi", "the silver fox",    "Perth",   "the iron gate"};
  return k;
}

// A case of about `context_tokens` tokens (measured with the engine's tokenizer) with the needle
// at `depth`. The filler depends only on (kind, seed), so cases of one (kind, context, seed)
// share the text before their needles: the engine's prefix cache then reuses it.
// (This one needs only the tokenizer: tests of the CUDA forward pass use it without an Engine.)
inline RetrievalCase MakeCase(const model::Tokenizer& tok, CaseKind kind, int context_tokens,
                              double depth, uint64_t filler_seed, uint64_t case_seed) {
  std::mt19937_64 rng(case_seed);
  RetrievalCase c;
  c.depth = depth;
  std::string intro, needle;
  if (kind == CaseKind::kPasskey) {
    c.answer = std::to_string(10000 + rng() % 90000);
    intro =
        "There is an important info hidden inside a lot of irrelevant text. Find it and "
        "memorize it. I will quiz you about the important information there.\n";
    needle = "The pass key is " + c.answer + ". Remember it. " + c.answer + " is the pass key.\n";
    c.question = "What is the pass key? The pass key is";
  } else {
    c.answer = std::to_string(1000000 + rng() % 9000000);
    const std::string& key = NeedleKeys()[rng() % NeedleKeys().size()];
    intro = "Read the following text carefully; one sentence holds a special magic number.\n";
    needle = "The special magic number for " + key + " is " + c.answer + ".\n";
    c.question = "What is the special magic number for " + key + "? The special magic number for " +
                 key + " is";
  }
  // Filler sentences until the whole prompt reaches the target length.
  std::mt19937_64 frng(filler_seed);
  const auto token_count = [&](const std::string& s) {
    return static_cast<int>(tok.Encode(s, false, false).size());
  };
  const int fixed = token_count(intro) + token_count(needle) + token_count(c.question) + 2;
  std::vector<std::string> sentences;
  int filler_tokens = 0;
  while (fixed + filler_tokens < context_tokens) {
    std::string s = kind == CaseKind::kPasskey
                        ? std::string(
                              "The grass is green. The sky is blue. The sun is yellow. "
                              "Here we go. There and back again.\n")
                        : NeedleFiller()[frng() % NeedleFiller().size()] + " ";
    filler_tokens += token_count(s);
    sentences.push_back(std::move(s));
  }
  if (!sentences.empty() && fixed + filler_tokens > context_tokens) sentences.pop_back();
  const size_t at = static_cast<size_t>(std::lround(depth * static_cast<double>(sentences.size())));
  c.haystack = intro;
  for (size_t i = 0; i < sentences.size(); ++i) {
    if (i == at) c.haystack += needle;
    c.haystack += sentences[i];
  }
  if (at >= sentences.size()) c.haystack += needle;
  return c;
}

inline RetrievalCase MakeCase(const engine::Engine& e, CaseKind kind, int context_tokens,
                              double depth, uint64_t filler_seed, uint64_t case_seed) {
  return MakeCase(e.model().tokenizer(), kind, context_tokens, depth, filler_seed, case_seed);
}

// The first run of digits in s.
inline std::string FirstNumber(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && !(s[i] >= '0' && s[i] <= '9')) ++i;
  size_t j = i;
  while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
  return s.substr(i, j - i);
}

// Prefills (and caches) the case's haystack with dense attention.
inline Status PrefillHaystack(engine::Engine& e, const RetrievalCase& c) {
  engine::GenerateRequest r;
  r.prompt = c.haystack;
  r.raw = true;
  r.max_tokens = 0;
  r.attention = "dense";
  return e.Generate(r, nullptr).status();
}

struct CaseOutcome {
  bool correct = false;
  std::string output;
  engine::GenerateResult result;
};

// Asks the question after the cached haystack with `attention` ("dense" or "sparse") and the
// given budget (0: the engine's default); greedy, a few tokens.
inline Result<CaseOutcome> AskQuestion(engine::Engine& e, const RetrievalCase& c,
                                       const std::string& attention, int budget_tokens,
                                       const std::string& scoring = "") {
  engine::GenerateRequest r;
  r.prompt = c.haystack + c.question;
  r.raw = true;
  r.max_tokens = static_cast<int>(c.answer.size()) + 3;
  r.sampling.temperature = 0;
  r.seed_given = true;
  r.attention = attention;
  r.budget_tokens = budget_tokens;
  r.sparse_scoring = scoring;
  ASSIGN_OR_RETURN(engine::GenerateResult res, e.Generate(r, nullptr));
  CaseOutcome o;
  o.output = res.text;
  o.correct = FirstNumber(res.text) == c.answer;
  o.result = std::move(res);
  return o;
}

}  // namespace kvtier::bench
