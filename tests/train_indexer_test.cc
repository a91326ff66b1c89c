// The DSA conversion's indexer training (model/indexer_loss.h, docs/dsa_conversion.md) on the
// micro preset: the KL loss and the LM loss each reach only their own side (checked on every
// parameter, not assumed), the KL that a training step reports is the one evaluation measures,
// and the dense warm-up through the trainer lowers the KL and raises the recall while every
// non-indexer weight stays bit-identical.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "model/train_step.h"
#include "ops/backends.h"
#ifdef DSA_TRAIN_CUDA
#include "ops/cuda/cuda_ops.h"
#endif
#include "train/context_eval.h"
#include "train/trainer.h"
#include "list_source.h"
#include "test_util.h"

namespace dsa {
namespace {

using test::Trainee;

bool is_indexer(const Param& p) { return p.spec.name.find(".indexer.") != std::string::npos; }

TrainBatch tokens(int64_t B, int64_t T, int64_t V, uint32_t seed) {
  test::Rng rng(seed);
  TrainBatch b;
  b.B = B;
  b.T = T;
  for (int64_t i = 0; i < B * (T + 1); ++i) b.tokens.push_back(rng.uni(0, int(V) - 1));
  return b;
}

class IndexerKlTest : public ::testing::TestWithParam<std::string> {
 protected:
  const ops::OpTable& ops() const { return ops::backend_by_name(GetParam()); }
};

// Sparse stage (top-k 8 of up to 24 keys): LM only, KL only, both. The LM loss gives the indexer
// exactly zero; the KL gives every non-indexer parameter exactly zero and every indexer tensor
// (main layers and the MTP block) a gradient; together each side's gradient is bit for bit the
// one it gets alone.
TEST_P(IndexerKlTest, EachLossReachesOnlyItsOwnSide) {
  Trainee s(ops());
  Backend& be = s.model->backend();
  const TrainBatch batch = tokens(2, 24, s.cfg.vocab_size, 5);
  auto run = [&](double kl, bool lm, TrainResult* out) {
    TrainOptions o;
    o.dense = false;
    o.mtp_weight = 0.3;
    o.balance_alpha = 0.01;
    o.indexer_kl = kl;
    o.lm_backward = lm;
    TrainStep step(*s.model, *s.params);
    s.params->zero_grad();
    *out = step.run(batch, o);
    std::vector<std::vector<float>> g;
    for (Param& p : s.params->all()) g.push_back(be.to_host<float>(p.grad));
    return g;
  };
  TrainResult r_lm, r_kl, r_both;
  const auto g_lm = run(0.0, true, &r_lm), g_kl = run(0.5, false, &r_kl), g_both = run(0.5, true, &r_both);
  const auto& all = s.params->all();
  int indexer_tensors = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    double n_lm = 0, n_kl = 0;
    for (float v : g_lm[i]) n_lm += double(v) * v;
    for (float v : g_kl[i]) n_kl += double(v) * v;
    if (is_indexer(all[i])) {
      ++indexer_tensors;
      EXPECT_EQ(n_lm, 0.0) << all[i].spec.name;
      EXPECT_GT(n_kl, 0.0) << all[i].spec.name;
      EXPECT_EQ(0, std::memcmp(g_kl[i].data(), g_both[i].data(), g_kl[i].size() * 4)) << all[i].spec.name;
    } else {
      EXPECT_EQ(n_kl, 0.0) << all[i].spec.name;
      EXPECT_EQ(0, std::memcmp(g_lm[i].data(), g_both[i].data(), g_lm[i].size() * 4)) << all[i].spec.name;
    }
  }
  EXPECT_EQ(indexer_tensors, 5 * 3);  // wq_b, wk, k_norm.{weight,bias}, weights_proj in 2 layers + MTP
  // The losses do not depend on which gradients are taken; the KL is that of evaluate().
  EXPECT_EQ(r_lm.loss, r_both.loss);
  EXPECT_EQ(r_kl.loss, r_both.loss);
  EXPECT_EQ(r_kl.loss_kl, r_both.loss_kl);
  EXPECT_EQ(r_lm.loss_kl, 0.0);
  ASSERT_EQ(r_kl.layer_kl.size(), 3u);
  for (double v : r_kl.layer_kl) EXPECT_GT(v, 0.0);
  TrainOptions o;
  o.dense = false;
  o.mtp_weight = 0.3;
  o.indexer_kl = 0.5;
  TrainStep step(*s.model, *s.params);
  const TrainResult ev = step.evaluate(batch, o);
  EXPECT_EQ(ev.layer_kl, r_kl.layer_kl);
  EXPECT_EQ(ev.loss_main, r_kl.loss_main);
}

// Dense mode: the target covers every causal key; recall in [0, 1], 1 for queries with at most
// top-k keys; recompute gives the same KL gradients.
TEST_P(IndexerKlTest, DenseRecallAndRecompute) {
  Trainee s(ops());
  Backend& be = s.model->backend();
  const TrainBatch batch = tokens(2, 20, s.cfg.vocab_size, 9);
  auto run = [&](bool recompute, TrainResult* out) {
    TrainOptions o;
    o.dense = true;
    o.mtp_weight = 0.3;
    o.indexer_kl = 1.0;
    o.indexer_recall = true;
    o.lm_backward = false;
    o.recompute = recompute;
    TrainStep step(*s.model, *s.params);
    s.params->zero_grad();
    *out = step.run(batch, o);
    std::vector<std::vector<float>> g;
    for (Param& p : s.params->all()) g.push_back(be.to_host<float>(p.grad));
    return g;
  };
  TrainResult a, b;
  const auto ga = run(false, &a), gb = run(true, &b);
  EXPECT_EQ(a.layer_kl, b.layer_kl);
  EXPECT_EQ(a.layer_recall, b.layer_recall);
  for (size_t i = 0; i < ga.size(); ++i)
    EXPECT_EQ(0, std::memcmp(ga[i].data(), gb[i].data(), ga[i].size() * 4)) << s.params->all()[i].spec.name;
  ASSERT_EQ(a.layer_recall.size(), 3u);
  // 8 of the 20 queries (positions 0..7) see <= top-k keys: recall >= 8/20 on average.
  for (double r : a.layer_recall) {
    EXPECT_GE(r, 8.0 / 20.0 - 1e-12);
    EXPECT_LE(r, 1.0 + 1e-9);
  }
  // The oracle (the top-k largest masses) bounds the indexer's recall from above and is below 1
  // once queries see more than top-k keys; at T <= top-k every key fits: exactly 1.
  EXPECT_EQ(a.layer_oracle_recall, b.layer_oracle_recall);
  ASSERT_EQ(a.layer_oracle_recall.size(), 3u);
  for (size_t l = 0; l < 3; ++l) {
    EXPECT_GE(a.layer_oracle_recall[l], a.layer_recall[l] - 1e-9) << "layer " << l;
    EXPECT_LT(a.layer_oracle_recall[l], 1.0) << "layer " << l;
  }
  TrainStep step(*s.model, *s.params);
  TrainOptions o;
  o.dense = true;
  o.indexer_recall = true;
  const TrainResult shortr = step.evaluate(tokens(2, s.cfg.index_topk, s.cfg.vocab_size, 4), o);
  for (double v : shortr.layer_oracle_recall) EXPECT_NEAR(v, 1.0, 1e-12);
  for (double v : shortr.layer_recall) EXPECT_NEAR(v, 1.0, 1e-9);
}

#ifdef DSA_TRAIN_CUDA
const bool kCudaRegistered = (ops::cuda::register_cuda_backend(), true);
INSTANTIATE_TEST_SUITE_P(Cuda, IndexerKlTest, ::testing::Values("cuda"));
#else
INSTANTIATE_TEST_SUITE_P(Backends, IndexerKlTest, ::testing::Values("ref", "cpu"));

// The warm-up through the trainer (loss.lm false, dense attention, loss.indexer_kl): the KL on
// held-out batches falls, the recall rises, and only indexer parameters change. 150 steps on
// fresh batches (on 4 repeated ones the indexer memorises them: train KL falls, held-out does not).
TEST(IndexerWarmup, LowersTheKlAndLeavesTheRestBitIdentical) {
  namespace fs = std::filesystem;
  train::TrainConfig c;
  c.init = test::micro_model_dir();
  c.out = std::string(DSA_BINARY_DIR) + "/test_runs/warmup-" + std::to_string(::getpid());
  fs::remove_all(c.out);
  c.backend = "cpu";
  c.seq_len = 32;
  c.batch = 4;
  c.steps = 150;
  c.schedule.lr = 1e-2;
  c.schedule.min_lr = 1e-3;
  c.schedule.warmup = 2;
  c.schedule.total = c.steps;
  c.eval_every = 0;
  c.eval_batches = 1;
  c.export_at_end = false;
  c.attention = "dense";
  c.lm = false;
  c.indexer_kl = 1.0;
  train::Trainer t(c, [](const std::string&) {});
  std::vector<TrainBatch> bs;
  for (int i = 0; i < 150; ++i) bs.push_back(tokens(c.batch, c.seq_len, 512, 200 + i));
  t.set_data(std::make_unique<test::ListSource>(bs),
             std::make_unique<test::ListSource>(std::vector<TrainBatch>{tokens(4, 32, 512, 99)}));
  Backend& be = t.model().backend();
  std::vector<std::vector<float>> before;
  for (Param& p : t.params().all()) before.push_back(be.to_host<float>(p.master));
  const auto e0 = t.validate_indexer();
  t.run(false);
  const auto e1 = t.validate_indexer();
  std::printf("warm-up: val KL %.4f -> %.4f; recall per layer", e0.kl, e1.kl);
  for (size_t l = 0; l < e0.recall.size(); ++l) std::printf(" %.3f -> %.3f", e0.recall[l], e1.recall[l]);
  std::printf("\n");
  EXPECT_LT(e1.kl, 0.85 * e0.kl);  // measured 1.538 -> 1.135
  for (size_t l = 0; l < e0.recall.size(); ++l) EXPECT_GT(e1.recall[l], e0.recall[l]) << "layer " << l;
  int changed = 0;
  for (size_t i = 0; i < before.size(); ++i) {
    const Param& p = t.params().all()[i];
    const auto now = be.to_host<float>(p.master);
    if (is_indexer(p)) changed += now != before[i];
    else EXPECT_EQ(now, before[i]) << p.spec.name;
  }
  EXPECT_EQ(changed, 15);
  fs::remove_all(c.out);
}

}  // namespace
}  // namespace dsa


namespace dsa {
namespace {

// eval-context: in the first bucket (positions < top-k) the top-k holds every causal key, so the
// sparse pass is the dense one bit for bit; later buckets differ; recall and KL per layer.
TEST(ContextEval, FirstBucketIsDenseAndLaterOnesAreNot) {
  Trainee s(ops::cpu_ops(), false);
  const int64_t k = s.cfg.index_topk, T = 4 * k;
  test::ListSource src({tokens(2, T, s.cfg.vocab_size, 31), tokens(2, T, s.cfg.vocab_size, 32)});
  train::ContextEvalOptions o;
  o.batches = 2;
  const train::ContextEval ev = train::evaluate_context(*s.model, *s.params, src, o);
  ASSERT_EQ(ev.buckets.size(), 4u);
  EXPECT_EQ(ev.buckets[0].dense_nll, ev.buckets[0].sparse_nll);
  EXPECT_EQ(ev.buckets[0].targets, 2.0 * 2 * double(k));
  EXPECT_NE(ev.buckets[3].dense_nll, ev.buckets[3].sparse_nll);
  ASSERT_EQ(ev.recall.size(), size_t(s.cfg.num_hidden_layers));
  for (double r : ev.recall) {
    EXPECT_GT(r, 0.25);
    EXPECT_LT(r, 1.0);
  }
  ASSERT_EQ(ev.oracle_recall.size(), ev.recall.size());
  for (size_t l = 0; l < ev.recall.size(); ++l) EXPECT_GE(ev.oracle_recall[l], ev.recall[l] - 1e-9);
  const std::string table = train::format_context_eval(ev);
  EXPECT_NE(table.find("[0, 8)"), std::string::npos) << table;
  EXPECT_NE(train::context_eval_json(ev).find("\"ppl_ratio\""), std::string::npos);
}
#endif  // the CPU-only tests

}  // namespace
}  // namespace dsa
