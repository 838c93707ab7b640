// bench/tokenize_tool.cc — tokenizes texts with kvtier for bench/compare_tokenize.py.
//
// Usage: tokenize_tool MODEL.gguf < texts.jsonl > ids.jsonl
// Input: one JSON string per line, or {"hex": "<bytes in hex>"} for arbitrary bytes (invalid
// UTF-8). Output: one JSON object per input line,
// {"special": [ids with parse_special], "plain": [ids without], "decoded": "<Decode(plain)>"}.
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "model/gguf.h"
#include "model/tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: tokenize_tool MODEL.gguf < texts.jsonl\n";
    return 2;
  }
  auto file = kvtier::model::GgufFile::Open(argv[1]);
  if (!file.ok()) {
    std::cerr << file.status().ToString() << "\n";
    return 1;
  }
  auto tok = kvtier::model::Tokenizer::Create(**file);
  if (!tok.ok()) {
    std::cerr << tok.status().ToString() << "\n";
    return 1;
  }
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    std::string text;
    if (j.is_object()) {
      const auto hex = j.at("hex").get<std::string>();
      for (size_t i = 0; i + 1 < hex.size(); i += 2) {
        text.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
      }
    } else {
      text = j.get<std::string>();
    }
    nlohmann::json out;
    out["special"] = (*tok)->Encode(text, /*parse_special=*/true);
    const auto plain = (*tok)->Encode(text, /*parse_special=*/false);
    out["plain"] = plain;
    auto decoded = (*tok)->Decode(plain);
    out["decoded"] = decoded.ok() ? *decoded : decoded.status().ToString();
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}
