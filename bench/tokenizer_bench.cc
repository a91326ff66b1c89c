// Tokenizer throughput benchmark: single-thread MB/s of dsa::text::Tokenizer::encode on the
// agreement corpus (tests/fixtures/text/corpus.bin.xz). Usage: tokenizer_bench [tokenizer.json]
// [corpus.bin] [repeats]; bench/tokenizer_bench.sh runs it next to HF tokenizers.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "text/tokenizer.h"

int main(int argc, char** argv) {
  const std::string root = DSA_SOURCE_DIR;
  const std::string tok_path = argc > 1 ? argv[1] : root + "/third_party/tokenizer/tokenizer.json";
  const std::string corpus = argc > 2 ? argv[2] : root + "/tests/fixtures/text/corpus.bin.xz";
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
  const std::string cmd = (corpus.size() > 3 && corpus.substr(corpus.size() - 3) == ".xz" ? "xz -dc '" : "cat '") +
                          corpus + "'";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return 1;
  std::string data;
  char buf[1 << 16];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) data.append(buf, n);
  pclose(p);
  std::vector<std::string> docs;
  for (size_t i = 0; i < data.size();) {
    const size_t nl = data.find('\n', i);
    const size_t sp = data.rfind(' ', nl);
    const size_t len = std::stoul(data.substr(sp + 1, nl - sp - 1));
    docs.push_back(data.substr(nl + 1, len));
    i = nl + 1 + len + 1;
  }
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  const auto tok = dsa::text::Tokenizer::from_file(tok_path);
  double best = 1e30;
  size_t n_ids = 0;
  for (int r = 0; r < repeats; ++r) {
    if (r == 0) tok.clear_cache();  // first pass: cold word cache
    const auto t0 = std::chrono::steady_clock::now();
    n_ids = 0;
    for (const auto& d : docs) n_ids += tok.encode(d).size();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("dsa   pass %d: %.3f s  %.2f MB/s%s\n", r, s, bytes / 1e6 / s, r == 0 ? " (cold cache)" : "");
    best = std::min(best, s);
  }
  std::printf("dsa,%zu,%zu,%.3f,%.2f\n", bytes, n_ids, best, bytes / 1e6 / best);
  return 0;
}
