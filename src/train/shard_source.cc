// shard_source: DataLoader behind BatchSource (train/shard_source.h).
#include "train/shard_source.h"

#include "train/data/corpus.h"
#include "train/data/loader.h"

namespace dsa::train {

namespace {

class ShardSource : public BatchSource {
 public:
  explicit ShardSource(DataLoader dl) : dl_(std::move(dl)) {}
  TrainBatch next() override {
    Batch b = dl_.next();
    TrainBatch t;
    t.B = b.B;
    t.T = b.T;
    t.tokens = std::move(b.tokens);
    t.weights = std::move(b.weights);
    return t;
  }
  std::string state() const override { return dl_.state().to_json(); }
  void restore(const std::string& s) override { dl_.restore(LoaderState::from_json(s)); }
  void rewind() override { dl_.rewind(); }

 private:
  DataLoader dl_;
};

// data.overfit: the first batch, forever (debugging a model / the overfit test).
class RepeatSource : public BatchSource {
 public:
  explicit RepeatSource(TrainBatch b) : b_(std::move(b)) {}
  TrainBatch next() override { return b_; }
  std::string state() const override { return "repeat"; }
  void restore(const std::string& s) override {
    DSA_CHECK(s == "repeat", "data.overfit: cannot resume from another data position ({})", s.substr(0, 40));
  }
  void rewind() override {}

 private:
  TrainBatch b_;
};

}  // namespace

std::unique_ptr<BatchSource> shard_source(const TrainConfig& cfg, bool validation, uint32_t max_vocab) {
  LoaderOptions o;
  o.T = cfg.seq_len;
  o.B = cfg.batch;
  o.seed = cfg.data_seed;
  o.val_permille = cfg.val_permille;
  o.max_vocab = max_vocab;
  const bool own_val = validation && !cfg.val_data.empty();
  o.split = validation && !own_val ? Split::kValidation : Split::kTrain;
  if (own_val) o.val_permille = 0;  // a validation file is used whole
  auto src = std::make_unique<ShardSource>(DataLoader::open(expand_shard_paths(own_val ? cfg.val_data : cfg.train_data), o));
  if (cfg.overfit && !validation) return std::make_unique<RepeatSource>(src->next());
  return src;
}

}  // namespace dsa::train
