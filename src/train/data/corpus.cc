// build_corpus: streams JSONL documents, tokenises them in parallel (one tokenizer per thread,
// results kept in input order), writes shards + manifest.json; corpus_stats and its table.
#include "train/data/corpus.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "base/hash.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "text/tokenizer.h"
#include "train/data/loader.h"
#include "train/data/shard.h"

namespace fs = std::filesystem;

namespace dsa::train {

uint64_t tokenizer_fingerprint(const text::Tokenizer& tok) {
  uint64_t h = kFnv1aOffset;
  for (int32_t id = 0; id < tok.id_limit(); ++id) {
    const std::string_view b = tok.token_bytes(id);
    h = fnv1a_bytes(fnv1a_le(h, uint32_t(b.size())), b);
    h = fnv1a_byte(h, tok.is_special(id) ? 1 : 0);
  }
  return h;
}

std::vector<std::string> expand_shard_paths(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> in_dir;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() && e.path().extension() == ".dsatok") in_dir.push_back(e.path().string());
      DSA_CHECK(!in_dir.empty(), "{}: directory holds no .dsatok shards", p);
      std::sort(in_dir.begin(), in_dir.end());
      out.insert(out.end(), in_dir.begin(), in_dir.end());
    } else {
      out.push_back(p);
    }
  }
  return out;
}

namespace {

struct PendingDoc {
  std::string where;  // file:line
  std::string text;
  std::vector<int32_t> ids;
};

class ShardSink {
 public:
  ShardSink(const CorpusBuildOptions& o, const std::vector<std::string>& sources, uint32_t vocab, uint64_t hash)
      : o_(o), sources_(sources), vocab_(vocab), hash_(hash) {}

  void add(const std::vector<int32_t>& ids, uint32_t source) {
    if (!w_) {
      const std::string path = (fs::path(o_.out_dir) / fmt::format("shard-{:05d}.dsatok", files_.size())).string();
      w_ = std::make_unique<ShardWriter>(path, ShardWriterOptions{vocab_, hash_, WeightKind::kNone});
      for (const std::string& s : sources_) w_->add_source(s);
    }
    w_->add_document(ids, source);
    if (w_->tokens() >= o_.shard_tokens) close();
  }
  void close() {
    if (!w_) return;
    w_->finish();
    files_.push_back(w_->path());
    w_.reset();
  }
  const std::vector<std::string>& files() const { return files_; }

 private:
  const CorpusBuildOptions& o_;
  const std::vector<std::string>& sources_;
  uint32_t vocab_;
  uint64_t hash_;
  std::unique_ptr<ShardWriter> w_;
  std::vector<std::string> files_;
};

void copy_licences(const fs::path& from, const fs::path& to) {
  for (const char* name : {"LICENSES.md", "sources.json"}) {
    if (fs::exists(from / name)) fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing);
  }
  if (fs::is_directory(from / "licenses")) {
    fs::create_directories(to / "licenses");
    fs::copy(from / "licenses", to / "licenses", fs::copy_options::overwrite_existing | fs::copy_options::recursive);
  }
}

void write_manifest(const CorpusSummary& s, const fs::path& out) {
  nlohmann::json j;
  j["format"] = "dsa-corpus 1";
  j["shard_format_version"] = kShardVersion;
  j["tokenizer_hash"] = fmt::format("{:016x}", s.tokenizer_hash);
  j["vocab_size"] = s.vocab_size;
  j["documents"] = s.documents;
  j["tokens"] = s.tokens;
  j["text_bytes"] = s.bytes;
  j["bos_id"] = kBosId;
  nlohmann::json shards = nlohmann::json::array();
  for (const std::string& f : s.shards) shards.push_back(fs::path(f).filename().string());
  j["shards"] = shards;
  nlohmann::json src = nlohmann::json::array();
  for (const std::string& name : s.source_order) {
    const SourceCount& c = s.sources.at(name);
    src.push_back({{"name", name}, {"documents", c.documents}, {"tokens", c.tokens}, {"text_bytes", c.bytes},
                   {"skipped_empty", c.skipped}});
  }
  j["sources"] = src;
  std::ofstream f(out / "manifest.json");
  f << j.dump(1) << "\n";
  DSA_CHECK(f.good(), "{}: cannot write", (out / "manifest.json").string());
}

}  // namespace

CorpusSummary build_corpus(const CorpusBuildOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path text_dir = fs::path(o.text_dir) / "text";
  DSA_CHECK(fs::is_directory(text_dir), "{}: no text/ directory (make it with scripts/corpus_text.py)", o.text_dir);
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(text_dir))
    if (e.is_regular_file() && e.path().extension() == ".jsonl") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  DSA_CHECK(!files.empty(), "{}: no .jsonl files", text_dir.string());
  DSA_CHECK(o.threads >= 1 && o.threads <= 256, "threads = {} must be in 1..256", o.threads);
  DSA_CHECK(o.shard_tokens >= 1, "shard_tokens must be >= 1");

  fs::create_directories(o.out_dir);
  for (const auto& e : fs::directory_iterator(o.out_dir)) {
    if (e.path().extension() != ".dsatok") continue;
    DSA_CHECK(o.overwrite, "{}: already holds shards (e.g. {}); pass --overwrite to replace them", o.out_dir,
              e.path().filename().string());
    fs::remove(e.path());
  }

  // One tokenizer per thread (a shared one would serialise on its word cache), loaded in parallel.
  ThreadPool pool(o.threads);
  std::vector<std::unique_ptr<text::Tokenizer>> toks(size_t(o.threads));
  toks[0] = std::make_unique<text::Tokenizer>(text::Tokenizer::from_file(o.tokenizer_path));
  pool.parallel_for(o.threads - 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      toks[size_t(t + 1)] = std::make_unique<text::Tokenizer>(text::Tokenizer::from_file(o.tokenizer_path));
  });
  CorpusSummary s;
  s.tokenizer_hash = tokenizer_fingerprint(*toks[0]);
  s.vocab_size = uint32_t(toks[0]->id_limit());
  for (const fs::path& f : files) s.source_order.push_back(f.stem().string());
  ShardSink sink(o, s.source_order, s.vocab_size, s.tokenizer_hash);

  std::vector<PendingDoc> batch;
  size_t batch_bytes = 0;
  uint32_t source = 0;
  auto flush = [&]() {
    const int64_t nt = o.threads;
    pool.parallel_for(nt, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        for (size_t i = size_t(t); i < batch.size(); i += size_t(nt)) {
          try {
            batch[i].ids = toks[size_t(t)]->encode(batch[i].text, /*allow_special=*/false);
          } catch (const std::exception& ex) {
            batch[i].where += std::string(": ") + ex.what();
            batch[i].ids.assign(1, -1);  // marks the failure; reported below in input order
          }
        }
    });
    SourceCount& c = s.sources[s.source_order[source]];
    for (PendingDoc& d : batch) {
      DSA_CHECK(d.ids.size() != 1 || d.ids[0] != -1, "{}", d.where);
      c.bytes += d.text.size();
      if (d.ids.empty()) {
        ++c.skipped;
        continue;
      }
      sink.add(d.ids, source);
      ++c.documents;
      c.tokens += d.ids.size();
    }
    batch.clear();
    batch_bytes = 0;
  };

  for (source = 0; source < files.size(); ++source) {
    const std::string fname = files[source].string();
    std::ifstream in(fname, std::ios::binary);
    DSA_CHECK(in.good(), "{}: cannot open", fname);
    s.sources[s.source_order[source]];
    std::string line;
    for (uint64_t ln = 1; std::getline(in, line); ++ln) {
      if (line.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        DSA_FAIL("{}:{}: not a JSON object: {}", fname, ln, e.what());
      }
      DSA_CHECK(j.is_object() && j.contains("text") && j["text"].is_string(),
                "{}:{}: expected an object with a string 'text'", fname, ln);
      PendingDoc d;
      d.where = fmt::format("{}:{}", fname, ln);
      d.text = j["text"].get<std::string>();
      batch_bytes += d.text.size();
      batch.push_back(std::move(d));
      if (batch.size() >= 512 || batch_bytes >= (size_t(16) << 20)) flush();
    }
    DSA_CHECK(!in.bad(), "{}: read error", fname);
    flush();
    if (!o.quiet) {
      const SourceCount& c = s.sources[s.source_order[source]];
      std::fprintf(stderr, "[corpus] %-12s %8llu documents %12llu tokens\n", s.source_order[source].c_str(),
                   (unsigned long long)c.documents, (unsigned long long)c.tokens);
    }
  }
  sink.close();
  s.shards = sink.files();
  for (const auto& [name, c] : s.sources) {
    s.documents += c.documents;
    s.tokens += c.tokens;
    s.bytes += c.bytes;
  }
  DSA_CHECK(s.documents > 0, "{}: no non-empty documents", text_dir.string());
  copy_licences(o.text_dir, o.out_dir);
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_manifest(s, o.out_dir);
  return s;
}

CorpusSummary corpus_stats(const std::vector<std::string>& paths, uint32_t val_permille) {
  DSA_CHECK(val_permille <= 1000, "val_permille = {} must be <= 1000", val_permille);
  CorpusSummary s;
  for (const std::string& p : expand_shard_paths(paths)) {
    const ShardReader r = ShardReader::open(p);
    if (s.shards.empty()) {
      s.tokenizer_hash = r.header().tokenizer_hash;
    } else {
      DSA_CHECK(r.header().tokenizer_hash == s.tokenizer_hash, "{}: made with another tokenizer than {}", p,
                s.shards[0]);
    }
    s.vocab_size = std::max(s.vocab_size, r.header().vocab_size);
    s.shards.push_back(p);
    for (uint64_t d = 0; d < r.n_docs(); ++d) {
      const std::string& name = r.sources()[r.doc_source(d)];
      if (!s.sources.count(name)) s.source_order.push_back(name);
      SourceCount& c = s.sources[name];
      const uint64_t n = r.doc_end(d) - r.doc_begin(d);
      ++c.documents;
      c.tokens += n;
      if (is_validation_doc(r.tokens().subspan(r.doc_begin(d), n), val_permille)) {
        ++c.val_documents;
        c.val_tokens += n;
      }
      ++s.documents;
      s.tokens += n;
    }
  }
  return s;
}

std::string format_summary(const CorpusSummary& s, bool with_validation) {
  std::string out = fmt::format("{:<14} {:>10} {:>14} {:>9}", "source", "documents", "tokens", "share");
  if (with_validation) out += fmt::format(" {:>10} {:>12}", "val docs", "val tokens");
  out += "\n";
  SourceCount total;
  for (const std::string& name : s.source_order) {
    const SourceCount& c = s.sources.at(name);
    out += fmt::format("{:<14} {:>10} {:>14} {:>8.1f}%", name, c.documents, c.tokens,
                       s.tokens ? 100.0 * double(c.tokens) / double(s.tokens) : 0.0);
    if (with_validation) out += fmt::format(" {:>10} {:>12}", c.val_documents, c.val_tokens);
    out += "\n";
    total.val_documents += c.val_documents;
    total.val_tokens += c.val_tokens;
  }
  out += fmt::format("{:<14} {:>10} {:>14} {:>8.1f}%", "total", s.documents, s.tokens, 100.0);
  if (with_validation) out += fmt::format(" {:>10} {:>12}", total.val_documents, total.val_tokens);
  out += "\n";
  return out;
}

}  // namespace dsa::train
