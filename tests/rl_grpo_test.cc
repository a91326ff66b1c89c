// GRPO with V3.2's stabilisers (rl/grpo.h, docs/rl.md): each stabiliser against its closed form,
// the kept-set renormalisation and the replayed routing inside the trainer, the rollout/trainer
// log-prob mismatch (exactly zero on the CPU), and GRPO raising a reward on the micro preset.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <future>
#include <set>

#include <fmt/format.h>

#include "base/numeric.h"
#include "model/train_step.h"
#include "ops/backends.h"
#include "rl/episodes.h"
#include "rl/grpo.h"
#include "rl/rollouts.h"
#ifdef DSA_RL_CUDA
#include "ops/cuda/cuda_ops.h"
#endif
#include "test_util.h"

namespace dsa {
namespace {

// Batch-invariant GPU arithmetic for the scope (ops/cuda/cuda_ops.h); nothing on the host backends.
struct BatchInvariant {
  explicit BatchInvariant(bool on) {
#ifdef DSA_RL_CUDA
    ops::cuda::set_batch_invariant(on);
#else
    (void)on;
#endif
  }
  ~BatchInvariant() {
#ifdef DSA_RL_CUDA
    ops::cuda::set_batch_invariant(false);
#endif
  }
};

using rl::GrpoConfig;
using rl::Sample;
using test::Trainee;

// ---- closed forms

// E_{v ~ π_old}[D(v)] = KL(π_θ ‖ π_ref) exactly, over a small categorical; the derivative in lt is
// exp(lt - lold)(lt - lref), K3's is 1 - π_ref/π_θ (both against central differences).
TEST(GrpoMath, UnbiasedKlIsTheKlInExpectationWithTheClosedFormGradient) {
  test::Rng rng(3);
  const int V = 7;
  auto logsoftmax = [&](float sd) {
    std::vector<double> z(V);
    double m = -INFINITY, s = 0;
    for (double& x : z) m = std::max(m, x = rng.normal(sd));
    for (double x : z) s += std::exp(x - m);
    for (double& x : z) x -= m + std::log(s);
    return z;
  };
  const std::vector<double> lt = logsoftmax(1.0f), lold = logsoftmax(1.0f), lref = logsoftmax(1.5f);
  double expect = 0, kl = 0, k3_naive = 0;
  for (int v = 0; v < V; ++v) {
    expect += std::exp(lold[v]) * rl::kl_unbiased(lt[v], lold[v], lref[v]);
    kl += std::exp(lt[v]) * (lt[v] - lref[v]);
    k3_naive += std::exp(lold[v]) * rl::kl_k3(lt[v], lref[v]);  // biased when π_old ≠ π_θ
  }
  EXPECT_NEAR(expect, kl, 1e-12);
  EXPECT_GT(std::fabs(k3_naive - kl), 1e-3);
  // On-policy (π_old = π_θ) the two estimates coincide.
  EXPECT_DOUBLE_EQ(rl::kl_unbiased(lt[2], lt[2], lref[2]), rl::kl_k3(lt[2], lref[2]));
  const double h = 1e-6;
  for (int v = 0; v < V; ++v) {
    const double fd = (rl::kl_unbiased(lt[v] + h, lold[v], lref[v]) - rl::kl_unbiased(lt[v] - h, lold[v], lref[v])) / (2 * h);
    EXPECT_NEAR(rl::kl_unbiased_grad(lt[v], lold[v], lref[v]), fd, 1e-7 * (1 + std::fabs(fd)));
    const double fk = (rl::kl_k3(lt[v] + h, lref[v]) - rl::kl_k3(lt[v] - h, lref[v])) / (2 * h);
    EXPECT_NEAR(rl::kl_k3_grad(lt[v], lref[v]), fk, 1e-7 * (1 + std::fabs(fk)));
    EXPECT_NEAR(rl::kl_unbiased_grad(lt[v], lold[v], lref[v]), std::exp(lt[v] - lold[v]) * (lt[v] - lref[v]), 1e-15);
    EXPECT_NEAR(rl::kl_k3_grad(lt[v], lref[v]), 1 - std::exp(lref[v] - lt[v]), 1e-15);
  }
  // K3's gradient weight grows without bound where π_θ ≪ π_ref; the unbiased one stays small
  // when π_θ ≈ π_old there.
  EXPECT_LT(rl::kl_k3_grad(-20, -1), -1e7);
  EXPECT_LT(std::fabs(rl::kl_unbiased_grad(-20, -20, -1)), 20);
}

TEST(GrpoMath, AdvantagesAreGroupRelativeWithoutStdDivision) {
  std::vector<Sample> s(5);
  const double r[5] = {1, 0, 0.5, 3, 5};
  const int64_t g[5] = {0, 0, 0, 7, 7};
  for (int i = 0; i < 5; ++i) s[size_t(i)].reward = r[i], s[size_t(i)].group = g[i];
  rl::group_advantages(s);
  EXPECT_DOUBLE_EQ(s[0].advantage, 0.5);
  EXPECT_DOUBLE_EQ(s[1].advantage, -0.5);
  EXPECT_DOUBLE_EQ(s[2].advantage, 0.0);
  EXPECT_DOUBLE_EQ(s[3].advantage, -1.0);
  EXPECT_DOUBLE_EQ(s[4].advantage, 1.0);
}

// Only negative-advantage sequences whose mean log(π_old/π_θ) exceeds δ are masked.
TEST(GrpoMath, OpsmMasksOnlyNegativeSequencesThatDrifted) {
  const std::vector<double> lold = {-1.0, -2.0, -0.5, -3.0};
  std::vector<double> lt = lold;
  for (double& x : lt) x -= 0.6;  // mean log(π_old/π_θ) = 0.6
  EXPECT_TRUE(rl::opsm_masked(-0.1, lold, lt, 0.5));
  EXPECT_FALSE(rl::opsm_masked(-0.1, lold, lt, 0.7));
  EXPECT_FALSE(rl::opsm_masked(+0.1, lold, lt, 0.5));  // positive: never
  EXPECT_FALSE(rl::opsm_masked(0.0, lold, lt, 0.5));
  std::vector<double> mixed = lold;
  mixed[0] -= 4.0, mixed[1] += 2.0;  // mean drift 0.5: not > 0.5
  EXPECT_FALSE(rl::opsm_masked(-1, lold, mixed, 0.5));
  EXPECT_TRUE(rl::opsm_masked(-1, lold, mixed, 0.49));
  // A masked sequence keeps its KL term only.
  GrpoConfig c;
  c.beta = 0.1;
  c.opsm_delta = 0.5;
  std::vector<double> d;
  const std::vector<double> lref = {-1.2, -1.0, -0.7, -2.0};
  const rl::SeqObjective o = rl::sequence_objective(c, -1.0, lold, lt, &lref, 1.0, d);
  EXPECT_TRUE(o.masked);
  for (size_t t = 0; t < lt.size(); ++t)
    EXPECT_NEAR(d[t], c.beta / 4 * rl::kl_unbiased_grad(lt[t], lold[t], lref[t]), 1e-15);
}

// The sequence loss against central differences, tokens on the clipped branch with no gradient,
// the 1/|o| and w scaling.
TEST(GrpoMath, SequenceObjectiveGradientAndClipping) {
  GrpoConfig c;
  c.clip = 0.2;
  c.beta = 0.05;
  c.opsm = false;
  const std::vector<double> lold = {-1.0, -2.0, -0.5, -3.0, -1.5};
  const std::vector<double> lref = {-1.1, -1.7, -0.9, -2.5, -1.5};
  for (bool unbiased : {true, false}) {
    c.unbiased_kl = unbiased;
    for (double A : {0.7, -0.4}) {
      // ratios 1.5, 0.7, 1.05, 0.95, 1.25
      const std::vector<double> lt = {lold[0] + std::log(1.5), lold[1] + std::log(0.7), lold[2] + std::log(1.05),
                                      lold[3] + std::log(0.95), lold[4] + std::log(1.25)};
      std::vector<double> d;
      const double w = 0.25;
      const rl::SeqObjective o = rl::sequence_objective(c, A, lold, lt, &lref, w, d);
      EXPECT_EQ(o.clipped, A > 0 ? 2 : 1);  // A > 0: r = 1.5, 1.25 above 1.2; A < 0: r = 0.7 below 0.8
      for (size_t t = 0; t < lt.size(); ++t) {
        const double h = 1e-6;
        std::vector<double> a = lt, b = lt, dd;
        a[t] += h, b[t] -= h;
        const double fd = (rl::sequence_objective(c, A, lold, a, &lref, w, dd).loss -
                           rl::sequence_objective(c, A, lold, b, &lref, w, dd).loss) / (2 * h);
        EXPECT_NEAR(d[t], fd, 1e-8) << "token " << t << " A " << A;
        const double r = std::exp(lt[t] - lold[t]);
        const bool clipped = (A > 0 && r > 1.2) || (A < 0 && r < 0.8);
        const double kl_g = unbiased ? rl::kl_unbiased_grad(lt[t], lold[t], lref[t]) : rl::kl_k3_grad(lt[t], lref[t]);
        EXPECT_NEAR(d[t], -w / 5 * ((clipped ? 0 : r * A) - c.beta * kl_g), 1e-15);
      }
    }
  }
}

// ---- inside the trainer, per backend

class GrpoTest : public ::testing::TestWithParam<std::string> {
 protected:
  const ops::OpTable& ops() const { return ops::backend_by_name(GetParam()); }
};

TrainBatch random_batch(int64_t T, int64_t V, uint32_t seed) {
  test::Rng rng(seed);
  TrainBatch b;
  b.B = 1;
  b.T = T;
  for (int64_t i = 0; i < T + 1; ++i) b.tokens.push_back(rng.uni(0, int(V) - 1));
  return b;
}

// log p over a kept set is z[y] − log Σ_{v∈K} e^{z_v} of the engine's own logits, bit for bit; the
// LM head's rows of ids outside every set get no gradient; a target outside its set is refused.
TEST_P(GrpoTest, KeepSamplingMaskRenormalisesOverTheKeptSet) {
  Trainee s(ops());
  const int64_t T = 14, V = s.cfg.vocab_size;
  const TrainBatch batch = random_batch(T, V, 11);
  test::Rng rng(5);
  std::vector<int64_t> off = {0};
  std::vector<int32_t> ids;
  std::set<int32_t> any;
  for (int64_t t = 0; t < T; ++t) {
    if (t % 3 != 0) {  // every third target keeps the whole vocabulary
      std::set<int32_t> k = {batch.tokens[size_t(t + 1)]};
      while (int64_t(k.size()) < 2 + t) k.insert(int32_t(rng.uni(0, int(V) / 2)));
      ids.insert(ids.end(), k.begin(), k.end());
      any.insert(k.begin(), k.end());
    }
    off.push_back(int64_t(ids.size()));
  }
  TrainOptions opt;
  opt.dense = false;
  opt.kept_offsets = &off;
  opt.kept_ids = &ids;
  TrainStep step(*s.model, *s.params);
  const TrainResult r = step.evaluate(batch, opt);
  ForwardOptions fo;
  fo.all_logits = true;
  fo.absorbed_prefill = true;
  fo.dense = false;
  SequenceState seq = s.model->new_sequence();
  const std::vector<int32_t> in(batch.tokens.begin(), batch.tokens.end() - 1);
  const std::vector<float> z = s.model->forward(seq, in, fo);
  for (int64_t t = 0; t < T; ++t) {
    const float* zt = z.data() + t * V;
    const int32_t y = batch.tokens[size_t(t + 1)];
    const int64_t b = off[size_t(t)], e = off[size_t(t + 1)];
    const double want = b == e ? double(zt[y]) - log_sum_exp(zt, V) : double(zt[y]) - log_sum_exp_subset(zt, ids.data() + b, e - b);
    EXPECT_EQ(r.logprobs[size_t(t)], want) << "target " << t;
    if (b != e) {
      EXPECT_GT(r.logprobs[size_t(t)], double(zt[y]) - log_sum_exp(zt, V));
    }
  }
  // Gradient only on the masked targets: head rows outside the union of their sets stay zero.
  opt.objective = [&](const std::vector<double>& lp, std::vector<float>& g) {
    double l = 0;
    for (int64_t t = 0; t < T; ++t)
      if (off[size_t(t)] != off[size_t(t + 1)]) g[size_t(t)] = -1.0f, l -= lp[size_t(t)];
    return l;
  };
  s.params->zero_grad();
  const TrainResult rg = step.run(batch, opt);
  double l = 0;
  for (int64_t t = 0; t < T; ++t)
    if (off[size_t(t)] != off[size_t(t + 1)]) l -= r.logprobs[size_t(t)];
  EXPECT_EQ(rg.loss_main, l);
  const std::vector<float> gh = s.model->backend().to_host<float>(s.params->at("lm_head.weight").grad);
  const int64_t H = s.cfg.hidden_size;
  int64_t inside_nonzero = 0;
  for (int64_t v = 0; v < V; ++v) {
    double n2 = 0;
    for (int64_t h = 0; h < H; ++h) n2 += double(gh[size_t(v * H + h)]) * gh[size_t(v * H + h)];
    if (any.count(int32_t(v))) inside_nonzero += n2 > 0;
    else EXPECT_EQ(n2, 0.0) << "id " << v;
  }
  EXPECT_EQ(inside_nonzero, int64_t(any.size()));
  std::vector<int32_t> bad = ids;
  for (int64_t j = off[1]; j < off[2]; ++j)
    if (bad[size_t(j)] == batch.tokens[2]) bad[size_t(j)] = bad[size_t(j)] == 0 ? 1 : 0;  // drop the target
  std::sort(bad.begin() + off[1], bad.begin() + off[2]);
  if (std::adjacent_find(bad.begin() + off[1], bad.begin() + off[2]) == bad.begin() + off[2]) {
    opt.kept_ids = &bad;
    opt.objective = nullptr;
    EXPECT_THROW(step.evaluate(batch, opt), Error);
  }
}

// With a replay the trainer routes as told even after the router changed (TrainOptions::record
// reports the router's own choice; the log-probs show which experts ran): on the last layer (MoE,
// row-wise) a row's log-prob moves exactly where the replayed experts differ from the new router's.
TEST_P(GrpoTest, ReplayedRoutingSurvivesAChangedRouter) {
  Trainee s(ops());
  const TrainBatch batch = random_batch(24, s.cfg.vocab_size, 12);
  TrainOptions opt;
  opt.dense = false;
  std::vector<Decisions> before, after;
  opt.record = &before;
  TrainStep step(*s.model, *s.params);
  step.evaluate(batch, opt);
  const int64_t moe = s.cfg.num_hidden_layers - 1, k = s.cfg.num_experts_per_tok;
  ASSERT_TRUE(s.cfg.is_moe_layer(moe));
  const std::string gate = fmt::format("model.layers.{}.mlp.gate.weight", moe);
  std::vector<float> g = s.model->backend().to_host<float>(s.params->at(gate).master);
  test::Rng rng(9);
  for (float& x : g) x = rng.normal(1.0f);
  s.params->set_master(gate, g.data());
  s.model->set_weights(s.params->forward_weights());
  opt.record = &after;
  const TrainResult own = step.evaluate(batch, opt);
  opt.record = nullptr;
  const std::vector<Decisions> replay_after = after, replay_before = before;
  opt.replay = &replay_after;
  EXPECT_EQ(step.evaluate(batch, opt).logprobs, own.logprobs);  // replaying its own choice changes nothing
  opt.replay = &replay_before;
  const TrainResult kept = step.evaluate(batch, opt);
  const auto& e0 = before[0].layers[size_t(moe)].experts;
  const auto& e1 = after[0].layers[size_t(moe)].experts;
  int64_t moved = 0;
  for (int64_t t = 0; t < batch.T; ++t) {
    const bool same = std::equal(e0.begin() + t * k, e0.begin() + (t + 1) * k, e1.begin() + t * k);
    EXPECT_EQ(same, kept.logprobs[size_t(t)] == own.logprobs[size_t(t)]) << "row " << t;
    moved += !same;
  }
  EXPECT_GT(moved, batch.T / 3);  // the new router alone would route most rows elsewhere
}

struct Rollouts {
  std::vector<std::vector<int32_t>> prompts;
  rl::RolloutOptions ro;
};

Rollouts mixed_prompts(int64_t V) {
  Rollouts r;
  test::Rng rng(21);
  for (int n : {3, 17, 9, 26, 5}) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back(rng.uni(0, int(V) - 1));
    r.prompts.push_back(p);
  }
  r.ro.group_size = 3;
  r.ro.max_tokens = 12;
  r.ro.sampling = SamplingParams{.temperature = 1.0f, .top_k = 0, .top_p = 0.9f, .seed = 77};
  for (int32_t id = 0; id < 40; ++id) r.ro.stop_ids.push_back(id);  // ~8 % a draw: mixed response lengths
  return r;
}

EngineOptions small_engine() {
  EngineOptions eo;
  eo.page_size = 16;
  eo.kv_pages = 128;
  eo.max_batch = 4;  // fewer slots than samples: continuous batching with joins and leaves
  eo.prefill_chunk = 8;
  eo.absorbed_prefill = true;
  eo.prewarm_kv = false;
  return eo;
}

// The trainer's recomputed log-probs against the engine's sampling-time ones, with continuous
// batching, chunked prefill, mixed lengths, top-p masks and keep-routing: exactly equal on the CPU.
TEST_P(GrpoTest, RolloutLogprobsEqualTheTrainersBeforeTheFirstUpdate) {
  const bool cuda = GetParam() == "cuda";
  // On the GPU twice: the default kernels (decode sums in another order than the trainer's
  // forward), then batch-invariant ones (equal, like the CPU).
  for (bool invariant : cuda ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
  SCOPED_TRACE(invariant ? "batch-invariant" : "default kernels");
  BatchInvariant bi(invariant);
  Trainee s(ops());
  Rollouts ro = mixed_prompts(s.cfg.vocab_size);
  std::vector<Sample> batch;
  {
    Engine engine(*s.model, small_engine());
    batch = rl::sample_groups(engine, ro.prompts, ro.ro);
  }
  ASSERT_EQ(batch.size(), ro.prompts.size() * 3);
  std::set<size_t> lengths;
  int64_t cut = 0;
  for (const Sample& x : batch) {
    lengths.insert(x.tokens.size());
    for (size_t j = 0; j + 1 < x.mask_offsets.size(); ++j) cut += x.mask_offsets[j + 1] > x.mask_offsets[j];
    ASSERT_TRUE(x.experts);
  }
  EXPECT_GT(lengths.size(), 1u);
  EXPECT_GT(cut, 0);
  train::AdamW adam(*s.params, {}, {".*indexer.*", "model\\.layers\\.2\\..*"});
  for (bool ksm : {true, false}) {
    GrpoConfig c;
    c.keep_sampling_mask = ksm;
    c.beta = 0.01;
    rl::Grpo grpo(*s.model, *s.params, adam, c);
    for (size_t i = 0; i < batch.size(); ++i) batch[i].reward = double(i % 4);
    std::vector<Sample> b = batch;
    const rl::GrpoStats st = grpo.update(b, 0.0);  // lr 0: the weights stay
    std::printf("%skeep-sampling-mask %d: rollout vs trainer over %lld tokens: max |dlogp| %.3g, mean %.3g; kl %.3g\n",
                invariant ? "batch-invariant, " : "", int(ksm), (long long)st.mismatch_tokens, st.mismatch_max,
                st.mismatch_mean, st.kl);
    EXPECT_EQ(st.mismatch_tokens, st.tokens);
    if (!cuda || invariant) {
      EXPECT_EQ(st.mismatch_max, 0.0);
    } else {
      EXPECT_LE(st.mismatch_max, 16 * 0x1p-8);  // decode kernels sum in another order (train_step_test)
    }
    EXPECT_NEAR(st.kl, 0.0, cuda && !invariant ? 1e-3 : 1e-12);   // π_ref = π_θ = π_old
  }
  }
}

// One engine request recorded the way the agent loop's EnginePolicy records a turn.
env::TurnRecord record_turn(Engine& engine, const std::vector<int32_t>& prompt, uint64_t seed) {
  env::TurnRecord t;
  t.prompt = prompt;
  t.mask_offsets = {0};
  std::promise<GenResult> done;
  GenRequest r;
  r.prompt = prompt;
  r.max_tokens = 7;
  r.sampling = SamplingParams{.temperature = 1.0f, .top_k = 0, .top_p = 0.9f, .seed = seed};
  r.record_mask = r.record_experts = true;
  r.on_sample = [&t](const SampleInfo& si) {
    t.tokens.push_back(si.token);
    t.logprobs.push_back(si.logprob);
    t.logprobs_kept.push_back(si.logprob_kept);
    t.loss_mask.push_back(1);
    t.mask_ids.insert(t.mask_ids.end(), si.mask->begin(), si.mask->end());
    t.mask_offsets.push_back(int64_t(t.mask_ids.size()));
  };
  r.on_done = [&done](const GenResult& g) { done.set_value(g); };
  engine.submit(std::move(r));
  t.experts = done.get_future().get().experts;
  return t;
}

// A three-turn episode (sampled ids, then given "tool result" ids, sampled again, ...) as one
// sample: the given tokens carry loss mask 0, the trainer's log-probs of every sampled id equal
// the engine's (the later turns' prompt rows partly from the prefix cache), and a turn whose
// prompt does not extend the history is refused.
TEST_P(GrpoTest, MultiTurnEpisodeIsOneSampleWithTheGivenTokensMaskedOut) {
  Trainee s(ops());
  const bool cuda = GetParam() == "cuda";
  BatchInvariant bi(true);
  test::Rng rng(31);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 13; ++i) prompt.push_back(rng.uni(0, int(s.cfg.vocab_size) - 1));
  env::Episode ep;
  {
    EngineOptions eo = small_engine();
    Engine engine(*s.model, eo);
    std::vector<int32_t> seq = prompt;
    for (int turn = 0; turn < 3; ++turn) {
      ep.records.push_back(record_turn(engine, seq, 100 + uint64_t(turn)));
      const env::TurnRecord& t = ep.records.back();
      seq.insert(seq.end(), t.tokens.begin(), t.tokens.end());
      for (int i = 0; i < 4 + turn; ++i) seq.push_back(rng.uni(0, int(s.cfg.vocab_size) - 1));  // the tool's reply
    }
  }
  Sample x;
  ASSERT_TRUE(rl::episode_sample(ep, x));
  const size_t given = 4 + 5, sampled = ep.records[0].tokens.size() + ep.records[1].tokens.size() + ep.records[2].tokens.size();
  ASSERT_EQ(x.tokens.size(), given + sampled);
  EXPECT_EQ(size_t(std::count(x.loss_mask.begin(), x.loss_mask.end(), 1)), sampled);
  EXPECT_EQ(x.prompt, prompt);
  EXPECT_EQ(std::vector<int32_t>(x.tokens.end() - int64_t(ep.records[2].tokens.size()), x.tokens.end()), ep.records[2].tokens);
  train::AdamW adam(*s.params, {}, {".*indexer.*", "model\\.layers\\.2\\..*"});
  GrpoConfig c;
  rl::Grpo grpo(*s.model, *s.params, adam, c);
  std::vector<Sample> b = {x, x};
  b[0].reward = 1;
  b[1].reward = 0;
  const size_t g = size_t(std::find(x.loss_mask.begin(), x.loss_mask.end(), 0) - x.loss_mask.begin());
  ASSERT_LT(g, x.tokens.size());
  b[1].logp[g] = b[1].logp_kept[g] = 123.0;  // the given tokens' entries are never read
  const rl::GrpoStats st = grpo.update(b, 1e-3);
  EXPECT_EQ(st.tokens, int64_t(2 * sampled));
  EXPECT_EQ(st.mismatch_tokens, int64_t(2 * sampled));
  if (!cuda) {
    EXPECT_EQ(st.mismatch_max, 0.0);
  }
  std::printf("multi-turn sample: %zu sampled + %zu given tokens, rollout vs trainer max |dlogp| %.3g\n", sampled, given,
              st.mismatch_max);
  env::Episode broken = ep;
  broken.records[1].prompt[3] ^= 1;  // not the history any more
  EXPECT_FALSE(rl::episode_sample(broken, x));
  broken = ep;
  broken.records[2].experts = nullptr;
  EXPECT_FALSE(rl::episode_sample(broken, x));
}

// GRPO on a trivial verifiable task: reward = the share of sampled ids divisible by 4 (a random
// model: ~0.25). Twelve steps of 4 prompts x 8 samples raise it well above that.
TEST_P(GrpoTest, RaisesTheRewardOnATrivialTask) {
  if (GetParam() == "ref") GTEST_SKIP() << "the scalar reference is too slow for a training run";
  BatchInvariant bi(true);  // the GPU too: rollout and trainer log-probs equal at every step
  Trainee s(ops());
  const int64_t V = s.cfg.vocab_size;
  std::vector<std::vector<int32_t>> prompts;
  test::Rng rng(4);
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> p;
    for (int j = 0; j < 6 + 3 * i; ++j) p.push_back(rng.uni(0, int(V) - 1));
    prompts.push_back(p);
  }
  rl::RolloutOptions ro;
  ro.group_size = 8;
  ro.max_tokens = 8;
  ro.sampling = SamplingParams{.temperature = 1.0f, .top_k = 0, .top_p = 0.95f, .seed = 1};
  train::AdamWConfig ac;
  ac.weight_decay = 0;
  train::AdamW adam(*s.params, ac, {".*indexer.*", "model\\.layers\\.2\\..*"});
  GrpoConfig c;
  c.minibatches = 2;
  c.beta = 0.001;
  rl::Grpo grpo(*s.model, *s.params, adam, c);
  EngineOptions eo = small_engine();
  eo.max_batch = 16;
  Engine engine(*s.model, eo);
  std::vector<double> rewards;
  for (int step = 0; step < 12; ++step) {
    ro.sampling.seed = uint64_t(1000 * step);
    std::vector<Sample> b = rl::sample_groups(engine, prompts, ro);
    for (Sample& x : b) {
      int hit = 0;
      for (int32_t t : x.tokens) hit += t % 4 == 0;
      x.reward = double(hit) / double(x.tokens.size());
      x.pass = x.reward >= 0.5;
    }
    const rl::GrpoStats st = grpo.update(b, 1e-2);
    engine.flush_prefix_cache();
    rewards.push_back(st.reward);
    std::printf("step %2d reward %.3f pass %.2f loss %+.4f kl %.2e masked %.2f clipped %.3f entropy %.2f mismatch %.2g\n",
                step, st.reward, st.pass_rate, st.loss, st.kl, st.masked, st.clipped, st.entropy, st.mismatch_max);
    EXPECT_EQ(st.mismatch_max, 0.0) << "step " << step;
  }
  const double first = (rewards[0] + rewards[1]) / 2, last = (rewards[10] + rewards[11]) / 2;
  EXPECT_LT(first, 0.4);
  EXPECT_GT(last, first + 0.25) << "first " << first << " last " << last;
}

#ifdef DSA_RL_CUDA
const bool kCudaRegistered = (ops::cuda::register_cuda_backend(), true);
INSTANTIATE_TEST_SUITE_P(Cuda, GrpoTest, ::testing::Values("cuda"));
#else
INSTANTIATE_TEST_SUITE_P(Backends, GrpoTest, ::testing::Values("ref", "cpu"));
#endif

}  // namespace
}  // namespace dsa
