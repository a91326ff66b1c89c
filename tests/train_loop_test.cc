// The training loop (train/trainer.h) on the micro preset: overfitting one batch, bit-identical
// resume, freezing, export -> `dsa run`-style load, import -> export lossless, config errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/safetensors.h"
#include "model/export.h"
#include "ops/backends.h"
#include "train/config.h"
#include "train/trainer.h"
#include "list_source.h"
#include "test_util.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using train::TrainConfig;

using test::ListSource;

TrainBatch batch(int64_t B, int64_t T, uint32_t seed) {
  test::Rng rng(seed);
  TrainBatch b;
  b.B = B;
  b.T = T;
  for (int64_t i = 0; i < B * (T + 1); ++i) b.tokens.push_back(rng.uni(1, 511));
  return b;
}

// Run directories live under the build tree, one set per process, removed at exit.
struct RunDirs : ::testing::Environment {
  void TearDown() override {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(std::string(DSA_BINARY_DIR) + "/test_runs", ec))
      if (e.path().string().ends_with("-" + std::to_string(::getpid()))) fs::remove_all(e.path(), ec);
  }
};
const auto* const kRunDirs = ::testing::AddGlobalTestEnvironment(new RunDirs);

std::string tmpdir(const std::string& name) {
  const std::string d = std::string(DSA_BINARY_DIR) + "/test_runs/" + name + "-" + std::to_string(::getpid());
  fs::remove_all(d);
  return d;
}

TrainConfig base_config(const std::string& out) {
  TrainConfig c;
  c.init = test::micro_model_dir();
  c.out = out;
  c.seq_len = 16;
  c.batch = 2;
  c.steps = 6;
  c.schedule.lr = 2e-3;
  c.schedule.min_lr = 2e-4;
  c.schedule.warmup = 2;
  c.schedule.total = c.steps;
  c.eval_every = 3;
  c.eval_batches = 1;
  c.export_at_end = false;
  c.mtp_weight = 0.3;
  c.balance_alpha = 1e-3;
  c.bias_gamma = 1e-3;
  return c;
}

std::unique_ptr<train::Trainer> make(const TrainConfig& c, int nbatches = 4) {
  auto t = std::make_unique<train::Trainer>(c, [](const std::string&) {});
  std::vector<TrainBatch> bs;
  for (int i = 0; i < nbatches; ++i) bs.push_back(batch(c.batch, c.seq_len, 100 + i));
  t->set_data(std::make_unique<ListSource>(bs), std::make_unique<ListSource>(std::vector<TrainBatch>{batch(2, 16, 99)}));
  return t;
}

std::vector<std::vector<float>> masters(train::Trainer& t) {
  std::vector<std::vector<float>> m;
  for (Param& p : t.params().all()) m.push_back(t.model().backend().to_host<float>(p.master));
  return m;
}

// Issue 12: "a tiny model drives the loss on one batch close to zero on CPU in under a minute".
TEST(TrainLoop, OverfitsOneBatch) {
  TrainConfig c = base_config(tmpdir("overfit"));
  c.steps = 80;
  c.schedule.lr = 1e-2;
  c.schedule.min_lr = 1e-4;
  c.schedule.warmup = 5;
  c.schedule.total = c.steps;
  c.adamw.weight_decay = 0;
  c.eval_every = 0;
  c.mtp_weight = 0;
  auto t = make(c, 1);
  const auto t0 = std::chrono::steady_clock::now();
  const train::RunSummary s = t->run(false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("overfit: loss %.4f after %lld steps in %.1f s\n", s.loss, (long long)s.steps, secs);
  EXPECT_LT(s.loss, 0.05);
  EXPECT_LT(secs, 60.0);
  EXPECT_TRUE(fs::exists(c.out + "/loss.png"));
  EXPECT_TRUE(fs::exists(c.out + "/metrics.jsonl"));
}

TEST(TrainLoop, ResumeIsBitIdentical) {
  TrainConfig a = base_config(tmpdir("straight"));
  auto ta = make(a);
  ta->run(false);
  TrainConfig b = base_config(tmpdir("resumed"));
  b.steps = 3;  // stop half-way (the schedule keeps total = 6)
  {
    auto tb = make(b);
    tb->run(false);
  }
  b.steps = 6;
  auto tb = make(b);
  const train::RunSummary s = tb->run(true);
  EXPECT_EQ(s.steps, 6);
  const auto ma = masters(*ta), mb = masters(*tb);
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t i = 0; i < ma.size(); ++i) EXPECT_EQ(ma[i], mb[i]) << ta->params().all()[i].spec.name;
  // The metrics of the resumed run equal the straight run's, line for line.
  auto lines = [](const std::string& p) {
    std::ifstream f(p);
    std::vector<std::string> v;
    std::string l;
    while (std::getline(f, l)) v.push_back(l.substr(0, l.find(",", l.find(",", l.find(",") + 1) + 1)));
    return v;
  };
  EXPECT_EQ(lines(a.out + "/metrics.csv"), lines(b.out + "/metrics.csv"));
}

TEST(TrainLoop, FrozenParametersStayBitIdentical) {
  TrainConfig c = base_config(tmpdir("freeze"));
  c.steps = 3;
  c.freeze = {R"(.*self_attn\.(q_a|q_b)_proj\.weight)", "model.embed_tokens.weight"};
  auto t = make(c);
  const auto before = masters(*t);
  t->run(false);
  const auto after = masters(*t);
  int frozen = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    const Param& p = t->params().all()[i];
    if (p.frozen) {
      ++frozen;
      EXPECT_EQ(before[i], after[i]) << p.spec.name;
    } else if (p.gradient && p.spec.name.find("indexer") == std::string::npos) {
      EXPECT_NE(before[i], after[i]) << p.spec.name;
    }
  }
  EXPECT_EQ(frozen, 2 * 3 + 1);  // two matrices in each of 2 layers + MTP, and the embedding
  TrainConfig bad = c;
  bad.freeze = {"no\\.such\\.param"};
  EXPECT_THROW(make(bad), Error);
}

// Export -> the engine's loader -> the same log-probs as the trainer's forward; import -> export
// writes the same bytes.
TEST(TrainLoop, ExportLoadsInTheEngineAndImportExportIsLossless) {
  TrainConfig c = base_config(tmpdir("export"));
  c.steps = 2;
  c.export_at_end = true;
  c.export_shard_mb = 1;  // several shards + index
  auto t = make(c);
  const train::RunSummary s = t->run(false);
  ASSERT_FALSE(s.export_dir.empty());
  EXPECT_TRUE(fs::exists(s.export_dir + "/model.safetensors.index.json"));
  auto engine = Model::load(s.export_dir, ops::cpu_ops(), [](const std::string&) {});
  const TrainBatch b = batch(1, 16, 7);
  TrainOptions o;
  o.dense = true;
  TrainStep ts(t->model(), t->params());
  const TrainResult r = ts.evaluate(b, o);
  std::vector<int32_t> in(b.tokens.begin(), b.tokens.begin() + 16);
  ForwardOptions fo;
  fo.all_logits = true;
  fo.absorbed_prefill = true;
  fo.dense = true;
  SequenceState seq = engine->new_sequence();
  const auto z = engine->forward(seq, in, fo);
  const int64_t V = engine->config().vocab_size;
  for (int64_t i = 0; i < 16; ++i)
    EXPECT_EQ(double(z[i * V + b.tokens[i + 1]]) - log_sum_exp(z.data() + i * V, V), r.logprobs[i]) << i;
  // Import the export and export again: byte-identical shards.
  Params again(t->model().backend(), engine->config(), true);
  again.load(Checkpoint::open(s.export_dir));
  const std::string d2 = tmpdir("export2");
  export_checkpoint(again, d2, 1 << 20, {{"generator", "dsa train"}, {"steps", "2"}});
  int files = 0;
  for (const auto& e : fs::directory_iterator(s.export_dir)) {
    if (e.path().extension() != ".safetensors") continue;
    ++files;
    EXPECT_EQ(test::sha256_file(e.path().string()), test::sha256_file(d2 + "/" + e.path().filename().string()))
        << e.path();
  }
  EXPECT_GT(files, 1);
}

TEST(TrainConfigParse, ClearErrors) {
  using nlohmann::json;
  const json ok = json::parse(R"({"model": {"preset": "micro"}, "data": {"train": ["a.bin"], "seq_len": 64},
                                  "optimizer": {"steps": 10, "lr": 1e-3}})");
  EXPECT_NO_THROW(train::parse_train_config(ok, "/base"));
  EXPECT_EQ(train::parse_train_config(ok, "/base").train_data[0], "/base/a.bin");
  auto msg = [&](const std::string& text) {
    try {
      train::parse_train_config(json::parse(text), "");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg(R"({"data": {"train": ["a"]}, "optimizer": {"stepz": 3}})").find("unknown key \"stepz\""), std::string::npos);
  EXPECT_NE(msg(R"({"data": {"train": ["a"], "seq_len": "long"}})").find("data.seq_len must be an integer"),
            std::string::npos);
  EXPECT_NE(msg(R"({"data": {"train": []}})").find("no shard files"), std::string::npos);
  EXPECT_NE(msg(R"({"data": {"train": ["a"]}, "loss": {"attention": "full"}})").find("dense or sparse"),
            std::string::npos);
  EXPECT_NE(msg(R"({"data": {"train": ["a"]}, "optimizer": {"schedule": "step"}})").find("unknown kind"),
            std::string::npos);
  EXPECT_NE(msg(R"({"data": {"train": ["a"]}, "bogus": 1})").find("unknown key \"bogus\""), std::string::npos);
}

TEST(TrainSchedule, WarmupCosineAndWsd) {
  train::Schedule s;
  s.lr = 1.0;
  s.min_lr = 0.1;
  s.warmup = 10;
  s.total = 110;
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_NEAR(s.at(60), 0.55, 1e-12);
  EXPECT_NEAR(s.at(109), 0.1, 1e-3);
  s.kind = "wsd";
  s.decay_frac = 0.2;
  EXPECT_DOUBLE_EQ(s.at(50), 1.0);
  EXPECT_DOUBLE_EQ(s.at(90), 1.0);
  EXPECT_NEAR(s.at(100), 0.55, 1e-12);
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);
}

}  // namespace
}  // namespace dsa
