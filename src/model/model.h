// DeepSeek-V3.2 model: loaded weights, per-sequence state (latent + indexer caches) and the
// forward pass of spec §4-§8 with true sparse attention. Ops come from an ops::OpTable.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/backend.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "ops/ops.h"

namespace dsa {

// Decisions of one forward call, per layer, one row per token of the call.
struct LayerDecisions {
  std::vector<int32_t> topk;     // [S, index_topk] ascending, -1 padded
  std::vector<int32_t> experts;  // [S, num_experts_per_tok] ascending (MoE layers only)
};
struct Decisions {
  std::vector<LayerDecisions> layers;
};

// Named intermediates selected by a regex; rows of successive calls are appended.
class Dump {
 public:
  explicit Dump(const std::string& regex) : re_(regex), pattern_(regex) {}
  bool wants(const std::string& name) const { return std::regex_search(name, re_); }
  // Append rows [rows, row_elems...] of fp32 values; row_shape is the shape of one row.
  void add(const std::string& name, const Shape& row_shape, const float* data, int64_t rows);
  // Pads ragged rows (e.g. index scores of growing length) with pad_value to the longest.
  void add_ragged(const std::string& name, const float* data, int64_t len, float pad_value);
  void write(const std::string& path) const;  // safetensors, F32 (I32 for ids/decisions)
  const std::map<std::string, std::pair<Shape, std::vector<float>>>& entries() const { return entries_; }

 private:
  std::regex re_;
  std::string pattern_;
  std::map<std::string, std::pair<Shape, std::vector<float>>> entries_;  // shape incl. rows
  std::map<std::string, std::vector<std::vector<float>>> ragged_;
};

struct ForwardOptions {
  bool all_logits = false;           // logits for every position (else only the last)
  // Use these top-k sets / expert choices instead of our own; a layer whose topk (experts) is
  // empty keeps its own (keep-routing replays the experts only).
  const Decisions* replay = nullptr;
  Decisions* record = nullptr;       // receives our own decisions
  bool record_topk = true;           // false: record the expert choices only
  Dump* dump = nullptr;
  bool dense = false;                // dense MLA over every causal key (indexer bypassed; for comparison)
  // Prefill chunks through the absorbed (MQA) attention of decode (spec §6.2 per query row)
  // instead of the reference's MHA path (§6.1): what production kernels (FlashMLA sparse prefill)
  // do. Mathematically equal, other rounding: a prompt prefilled this way gives the same logits,
  // bit for bit, as feeding its tokens one at a time.
  bool absorbed_prefill = false;
  // Score the indexer even in dense mode (its top-k computed, not used), and keep its tensors on
  // the training tape (LayerTape::indexer): the indexer's KL loss (model/indexer_loss.h).
  bool score_indexer = false;
};

class Model {
 public:
  static std::unique_ptr<Model> load(const std::string& dir, const ops::OpTable& ops,
                                     const std::function<void(const std::string&)>& log);
  // A model without weights (the trainer's: set_weights from its parameters, model/params.h).
  static std::unique_ptr<Model> create(const ModelConfig& cfg, const ops::OpTable& ops);
  // Replaces the weights (backend tensors, e.g. Params::forward_weights()); in-flight sequences
  // keep their caches. Builds the routed-expert tables.
  void set_weights(ModelWeights w);
  const ModelWeights& weights() const { return w_; }
  const ModelConfig& config() const { return cfg_; }
  const ops::OpTable& ops() const { return be_->ops(); }
  void set_ops(const ops::OpTable& ops) { be_->set_ops(ops); }  // same memory kind only
  Backend& backend() { return *be_; }

  // A sequence in the model's own growable KV cache (single-sequence use).
  SequenceState new_sequence();
  // A paged KV cache in this model's backend memory (max_pages = 0: unbounded).
  std::shared_ptr<KvCache> make_kv_cache(int64_t page_size = 64, int64_t max_pages = 0) const;
  // Runs tokens at positions state.len .. state.len+S-1 (S > 1: prefill path, S == 1: decode
  // path), appends them to the caches and returns logits [rows, vocab] (rows = S or 1).
  std::vector<float> forward(SequenceState& state, const std::vector<int32_t>& tokens,
                             const ForwardOptions& opt = {});
  // One decode step for several sequences at once (continuous batching): token i goes to seqs[i]
  // (each takes the decode path, as if fed alone). Returns logits [n, vocab]. The sequences must
  // use the same KvCache. Decisions/dumps have one row per sequence.
  std::vector<float> forward_decode(const std::vector<SequenceState*>& seqs, const std::vector<int32_t>& tokens,
                                    const ForwardOptions& opt = {});
  size_t weight_bytes() const { return weight_bytes_; }
  struct Rows;  // the token rows of one call (model/layer.h)

 private:
  ModelConfig cfg_;
  Checkpoint ckpt_;
  ModelWeights w_;
  std::unique_ptr<Backend> be_;
  std::vector<float> rope_cos_, rope_sin_;  // [max_pos, rope/2]
  Tensor rope_cos_dev_, rope_sin_dev_;      // backend copies
  std::shared_ptr<KvCache> own_kv_;
  std::vector<float> run(Rows& rows, const std::vector<int32_t>& tokens, const ForwardOptions& opt);
  // The pieces of a call, also driven by the trainer (model/train_step.h): block tables, cache-write
  // offsets and rope for rows (reserve: pages for new tokens, positions checked), embedding rows.
  void prepare(Rows& rows, const ForwardOptions& opt, bool reserve);
  Tensor embed_rows(const std::vector<int32_t>& tokens);
  friend class TrainStep;
  size_t weight_bytes_ = 0;
  void ensure_rope(int64_t n);
};

// YaRN frequency table (spec §1.1): f'_i for i < rope_dim/2.
std::vector<float> yarn_inv_freq(const ModelConfig& c);

}  // namespace dsa
