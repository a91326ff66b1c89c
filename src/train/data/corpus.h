// Corpus building and statistics: JSONL text (scripts/corpus_text.py) -> tokenised shards with
// dsa's tokenizer, a manifest and the sources' licences (docs/data.md §Corpus).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dsa::text {
class Tokenizer;
}

namespace dsa::train {

// FNV-1a 64 over the vocabulary: for each id < id_limit, u32 byte length, the token's bytes and a
// special flag byte. Identifies the id <-> bytes mapping, not the tokenizer.json formatting.
uint64_t tokenizer_fingerprint(const text::Tokenizer& tok);

struct CorpusBuildOptions {
  std::string text_dir;        // holds text/<source>.jsonl (+ sources.json, LICENSES.md, licenses/)
  std::string out_dir;         // gets shard-NNNNN.dsatok, manifest.json and the licence files
  std::string tokenizer_path;  // tokenizer.json
  uint64_t shard_tokens = uint64_t(1) << 24;  // a shard is closed at the first document end past this
  int threads = 1;
  bool overwrite = false;      // replace existing shards in out_dir
  bool quiet = false;
};

struct SourceCount {
  uint64_t documents = 0, tokens = 0, bytes = 0, skipped = 0;  // skipped: documents with no tokens
  uint64_t val_documents = 0, val_tokens = 0;
};

struct CorpusSummary {
  std::vector<std::string> shards;              // written files, in order
  std::vector<std::string> source_order;
  std::map<std::string, SourceCount> sources;
  uint64_t documents = 0, tokens = 0, bytes = 0;
  uint64_t tokenizer_hash = 0;
  uint32_t vocab_size = 0;
  double seconds = 0;
};

// Tokenises every text/*.jsonl of text_dir (sorted by file name; source = file stem) into
// shards; deterministic for any thread count. Throws dsa::Error naming file:line on bad input.
CorpusSummary build_corpus(const CorpusBuildOptions& opts);

// Per-source documents/tokens of a set of shards (directories expand to their *.dsatok files),
// with the part that the validation split at `val_permille` would hold out.
CorpusSummary corpus_stats(const std::vector<std::string>& paths, uint32_t val_permille);

// Expands directories to their *.dsatok files (sorted); plain files are kept as given.
std::vector<std::string> expand_shard_paths(const std::vector<std::string>& paths);

// A table of the summary (one row per source + total) for the command line.
std::string format_summary(const CorpusSummary& s, bool with_validation);

}  // namespace dsa::train
