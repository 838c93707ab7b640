// daemon_throughput_tool — requests/s of the protocol layer through a running kvtierd: N client
// threads, each with its own connection (libkvtier), send one op back to back for S seconds.
// `health` exercises framing + parsing + the event loop only; `tokenize` adds the tokenizer
// (1 KiB of text per request). bench/daemon-throughput starts the daemon and runs the matrix.
//
//   daemon_throughput_tool --socket PATH --op health|tokenize --clients N --seconds S
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "client/libkvtier.h"

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt;
  for (int i = 1; i + 1 < argc; i += 2) opt[std::string(argv[i]).substr(2)] = argv[i + 1];
  const std::string socket = opt["socket"], op = opt.count("op") ? opt["op"] : "health";
  const int clients = opt.count("clients") ? std::stoi(opt["clients"]) : 1;
  const double seconds = opt.count("seconds") ? std::stod(opt["seconds"]) : 3.0;
  std::string text;
  while (text.size() < 1024) text += "The quick brown fox jumps over the lazy dog, 12345. ";
  text.resize(1024);

  std::atomic<int64_t> done{0}, errors{0};
  std::atomic<bool> failed_connect{false};
  const auto start = std::chrono::steady_clock::now();
  const auto until = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      auto client = kvtier::client::Client::Connect(socket, std::chrono::milliseconds(5000));
      if (!client.ok()) {
        std::fprintf(stderr, "connect: %s\n", client.status().ToString().c_str());
        failed_connect = true;
        return;
      }
      while (std::chrono::steady_clock::now() < until) {
        bool ok;
        if (op == "tokenize") {
          ok = (*client)->Tokenize(text).ok();
        } else {
          ok = (*client)->Health().ok();
        }
        (ok ? done : errors).fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"op\":\"%s\",\"clients\":%d,\"requests\":%lld,\"errors\":%lld,"
              "\"requests_per_s\":%.1f}\n",
              op.c_str(), clients, static_cast<long long>(done.load()),
              static_cast<long long>(errors.load()), done.load() / elapsed);
  return failed_connect || errors.load() > 0 ? 1 : 0;
}
