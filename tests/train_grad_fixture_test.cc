// The trainer against the independent PyTorch training reference (tests/reference/train_ref.py,
// fixture tests/fixtures/train_grads.safetensors): on the micro preset and a fixed batch of 2 x 16
// targets (one masked, one at weight 0.5), with the reference's decisions replayed (keep routing),
// the losses (main + λ·MTP + balance), the per-target log-probs, every parameter's gradient (dense
// attention) and the attention's and embedding's gradients (sparse attention over the reference's
// top-k sets), one AdamW update from the same gradients, and the losses of three AdamW steps with
// the balance-bias rule.
//
// Where the two differ, and the bounds (docs/training.md §3):
// - Forward: the reference evaluates each rounding point from fp64 values, the engine from fp32
//   ones, so a value within ~2^-24 relative of a bf16 / FP8 rounding boundary can round the other
//   way. Most targets' log-probs agree to < 1e-6 (kLogpTypical 1e-5 for >= 90 % of them); a row
//   where a rounding flipped is off by up to ~4e-3 (measured: 1 main and 2 MTP rows of 62, an FP8
//   element one step off; kLogpFlip 1e-2). Losses: ~5e-6 relative (kLossBound 1e-4).
// - Backward: the GEMMs of the FP8 linears take bf16 operands (dy and Q(W); Q(x) is exact): each
//   product carries a relative error of up to 2 × 2^-9, random in sign, so a gradient entry summed
//   over K terms is off by ~2^-9 of the rms of its terms (a relative L2 error of ~2e-3 per GEMM),
//   and the error of an activation gradient is carried into every gradient upstream of it: ~4
//   such GEMMs per block on the way back from the heads, 3 blocks with the MTP one, sqrt(12) × 2e-3
//   ≈ 7e-3. Measured: 4-7e-3 on most tensors, 6.2e-3 worst in the sparse case; the worst dense
//   ones, 1.2-1.6e-2, are MTP-block experts that only a few rows reach, among them a flipped row.
//   Bound kGradBound = 3e-2 relative L2 per tensor.
// - The bound can fail: the trainer run with the MTP weight 20 % off, the balance coefficient
//   doubled, or dense attention where the reference was sparse misses it by 7-18× on the tensors
//   they touch (BoundsCatchWrongGradients requires > 3×).
// - AdamW from identical gradients (the stored ones): the update agrees to ~2e-6 relative (fp32
//   here, fp64 there). Over 3 steps on our own gradients (lr 1e-3, loss 8.96 -> 5.19), an entry
//   whose gradient is at the noise level can step the other way (the first update is ±lr per
//   entry, m̂/√v̂ = sign g): the losses drift apart by up to 4.3e-3 relative (kAdamLossBound 1e-2).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>

#include "model/train_step.h"
#include "ops/backends.h"
#include "test_util.h"
#include "train/optimizer.h"

namespace dsa {
namespace {

constexpr double kGradBound = 3e-2;     // relative L2 error per gradient tensor
constexpr double kLossBound = 1e-4;     // relative, losses of the same weights
constexpr double kLogpTypical = 1e-5;   // nats, per target, where no rounding point flipped
constexpr double kLogpFlip = 1e-2;      // nats, per target, where one did
constexpr double kAdamLossBound = 1e-2; // relative, losses after AdamW steps on our own gradients

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) return std::bit_cast<float>(sign) + (sign ? -1.0f : 1.0f) * std::ldexp(float(man), -24);
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
}

struct Fixture {
  std::shared_ptr<SafetensorsFile> f;
  int64_t B = 0, T = 0;
  explicit Fixture(const std::string& file = "train_grads.safetensors")
      : f(SafetensorsFile::open(test::fixture_path(file))) {
    B = std::stoll(meta("batch"));
    T = std::stoll(meta("seq_len"));
  }
  const std::string& meta(const std::string& k) const {
    auto it = f->metadata().find(k);
    if (it == f->metadata().end()) throw Error("fixture: no metadata " + k);
    return it->second;
  }
  double num(const std::string& k) const { return std::stod(meta(k)); }
  bool has(const std::string& name) const { return f->tensors().count(name) > 0; }
  const TensorEntry& entry(const std::string& name) const {
    auto it = f->tensors().find(name);
    if (it == f->tensors().end()) throw Error("fixture: no tensor " + name);
    return it->second;
  }
  std::vector<int32_t> i32(const std::string& name) const {
    const TensorEntry& e = entry(name);
    std::vector<int32_t> v(e.nbytes / 4);
    std::memcpy(v.data(), e.data, e.nbytes);
    return v;
  }
  std::vector<float> f32(const std::string& name) const {
    const TensorEntry& e = entry(name);
    std::vector<float> v(e.nbytes / 4);
    std::memcpy(v.data(), e.data, e.nbytes);
    return v;
  }
  // A gradient: F16 of g * 2^e, e in gexp.<name>.
  std::vector<float> grad(const std::string& prefix, const std::string& name) const {
    const TensorEntry& e = entry(prefix + "grad." + name);
    const int32_t ex = i32(prefix + "gexp." + name).at(0);
    std::vector<float> v(e.nbytes / 2);
    for (size_t i = 0; i < v.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, e.data + 2 * i, 2);
      v[i] = std::ldexp(half_to_float(h), -ex);
    }
    return v;
  }
  TrainBatch batch() const {
    TrainBatch b;
    b.B = B;
    b.T = T;
    b.tokens = i32("tokens");
    if (has("weights")) b.weights = f32("weights");
    return b;
  }
  // The reference's decisions, per sequence, in the trainer's layout (layers 0..n-1: T rows, the
  // MTP block n: T-1 rows).
  std::vector<Decisions> decisions(const std::string& prefix, const ModelConfig& c) const {
    const int64_t n = c.num_hidden_layers;
    std::vector<Decisions> d(static_cast<size_t>(B));
    for (auto& s : d) s.layers.assign(size_t(n + 1), {});
    for (int64_t l = 0; l <= n; ++l) {
      const int64_t rows = l < n ? T : T - 1;
      for (const char* key : {"experts", "topk"}) {
        const std::string name = prefix + key + ".l" + std::to_string(l);
        if (!has(name)) continue;
        const std::vector<int32_t> all = i32(name);
        const size_t per = all.size() / size_t(B);
        EXPECT_EQ(per % size_t(rows), 0u) << name;
        for (int64_t b = 0; b < B; ++b) {
          auto& dst = std::string(key) == "experts" ? d[size_t(b)].layers[size_t(l)].experts
                                                    : d[size_t(b)].layers[size_t(l)].topk;
          dst.assign(all.begin() + b * per, all.begin() + (b + 1) * per);
        }
      }
    }
    return d;
  }
};

const Fixture& fixture() {
  static Fixture f;
  return f;
}
const Fixture& kl_fixture() {  // tests/reference/indexer_kl_ref.py
  static Fixture f("indexer_kl.safetensors");
  return f;
}

double rel_l2(const std::vector<float>& ours, const std::vector<float>& ref) {
  double e = 0, r = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    e += (double(ours[i]) - ref[i]) * (double(ours[i]) - ref[i]);
    r += double(ref[i]) * ref[i];
  }
  return r > 0 ? std::sqrt(e / r) : std::sqrt(e);
}

// Relative L2 error of each of the case's gradients (name -> error); zero reference gradients
// (the indexer's) must be exactly zero here too.
std::map<std::string, double> grad_errors(Params& params, const std::string& prefix, const Fixture& fx = fixture()) {
  Backend& be = params.backend();
  std::map<std::string, double> out;
  for (Param& p : params.all()) {
    if (!fx.has(prefix + "grad." + p.spec.name)) continue;
    const std::vector<float> ref = fx.grad(prefix, p.spec.name), ours = be.to_host<float>(p.grad);
    EXPECT_EQ(ref.size(), ours.size()) << p.spec.name;
    if (ref.size() != ours.size()) continue;
    double rn = 0;
    for (float v : ref) rn += double(v) * v;
    if (rn == 0) {
      for (float v : ours) EXPECT_EQ(v, 0.0f) << p.spec.name;
      continue;
    }
    out[p.spec.name] = rel_l2(ours, ref);
  }
  return out;
}

TrainResult run_case(test::Trainee& s, const std::string& prefix, bool dense, double mtp, double alpha) {
  const Fixture& fx = fixture();
  const std::vector<Decisions> dec = fx.decisions(prefix, s.cfg);
  TrainOptions opt;
  opt.dense = dense;
  opt.mtp_weight = mtp;
  opt.balance_alpha = alpha;
  opt.replay = &dec;
  TrainStep step(*s.model, *s.params);
  s.params->zero_grad();
  s.model->set_weights(s.params->forward_weights());
  return step.run(fx.batch(), opt);
}

class TrainGradFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  const ops::OpTable& ops() const { return ops::backend_by_name(GetParam()); }
};

// Refuse a stale fixture: it records the sha256 of the micro checkpoint it was made from.
TEST(TrainGradFixture, FixtureMatchesTheMicroCheckpoint) {
  for (const Fixture* fx : {&fixture(), &kl_fixture()}) {
    const auto files = nlohmann::json::parse(fx->meta("checkpoint_files_sha256"));
    for (auto& [name, sha] : files.items())
      EXPECT_EQ(test::sha256_file(test::micro_model_dir() + "/" + name), sha.get<std::string>())
          << name << ": the fixture was made from another checkpoint; regenerate it (tests/reference/README.md)";
  }
}

// Per-target log-probs: at least 90 % agree to kLogpTypical (the same roundings on both sides);
// the rest are rows where a rounding point flipped (bounded by kLogpFlip).
void expect_logprobs(const std::vector<double>& ours, const std::vector<float>& ref, const std::string& what,
                     double* worst_out = nullptr) {
  ASSERT_EQ(ours.size(), ref.size()) << what;
  double worst = 0;
  size_t off = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = std::fabs(ours[i] - ref[i]);
    worst = std::max(worst, d);
    off += d > kLogpTypical;
    EXPECT_LE(d, kLogpFlip) << what << " row " << i;
  }
  EXPECT_LE(double(off), 0.1 * double(ref.size())) << what << ": rows beyond " << kLogpTypical;
  if (worst_out) *worst_out = worst;
}

void expect_losses(const TrainResult& r, const std::string& prefix) {
  const Fixture& fx = fixture();
  auto rel = [](double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-30); };
  EXPECT_LE(rel(r.loss, fx.num(prefix + "loss")), kLossBound) << r.loss << " vs " << fx.meta(prefix + "loss");
  EXPECT_LE(rel(r.loss_main, fx.num(prefix + "main")), kLossBound) << r.loss_main;
  EXPECT_LE(rel(r.loss_mtp, fx.num(prefix + "mtp")), kLossBound) << r.loss_mtp;
  EXPECT_LE(rel(r.loss_bal, fx.num(prefix + "bal")), 1e-4) << r.loss_bal;  // a sum of products of ~0.1 terms
  double worst = 0;
  expect_logprobs(r.logprobs, fx.f32(prefix + "logp"), prefix + "logp", &worst);
  std::printf("%s losses: ours %.9f (main %.9f mtp %.9f bal %.3e), reference %s; log-probs max |diff| %.3g\n",
              prefix.c_str(), r.loss, r.loss_main, r.loss_mtp, r.loss_bal, fx.meta(prefix + "loss").c_str(), worst);
}

void expect_grads(Params& params, const std::string& prefix, size_t expect_n, const Fixture& fx = fixture()) {
  const auto err = grad_errors(params, prefix, fx);
  EXPECT_GE(err.size(), expect_n);
  std::string worst;
  double w = 0;
  for (const auto& [name, e] : err) {
    EXPECT_LE(e, kGradBound) << prefix << name;
    if (e > w) w = e, worst = name;
    if (std::getenv("DSA_TEST_VERBOSE")) std::printf("  %.4g %s\n", e, name.c_str());
  }
  std::printf("%s gradients: %zu tensors, worst relative L2 error %.3g (%s), bound %.3g\n", prefix.c_str(), err.size(), w,
              worst.c_str(), kGradBound);
}

TEST_P(TrainGradFixtureTest, DenseLossesAndEveryGradientMatchTheReference) {
  test::Trainee s(ops());
  const Fixture& fx = fixture();
  const TrainResult r = run_case(s, "dense.", true, fx.num("mtp_weight"), fx.num("balance_alpha"));
  expect_losses(r, "dense.");
  expect_logprobs(r.mtp_logprobs, fx.f32("dense.mtp_logp"), "dense.mtp_logp");
  // Every parameter with a gradient (all but the correction biases) is in the fixture.
  size_t with_grad = 0;  // the indexer's are in the fixture too, and zero in both
  for (const Param& p : s.params->all()) with_grad += p.gradient && p.spec.name.find(".indexer.") == std::string::npos;
  expect_grads(*s.params, "dense.", with_grad);
}

TEST_P(TrainGradFixtureTest, SparseAttentionGradientsMatchTheReference) {
  test::Trainee s(ops());
  const Fixture& fx = fixture();
  const TrainResult r = run_case(s, "sparse.", false, fx.num("mtp_weight"), fx.num("balance_alpha"));
  expect_losses(r, "sparse.");
  expect_grads(*s.params, "sparse.", 3 * 7 + 1);  // 7 attention tensors in each of 3 blocks, the embedding
}

// The indexer's KL (docs/dsa_conversion.md §1) against tests/reference/indexer_kl_ref.py (fixture
// tests/fixtures/indexer_kl.safetensors: micro preset without MTP, 2 x 20 rows, the reference's
// decisions replayed): each layer's mean KL and the gradients of the 10 indexer tensors, with
// dense attention (target over every causal key) and sparse attention (over the top-k set).
// Bounds: the KL is a smooth function of the logits and of the bf16 probabilities, which both
// sides compute at the same rounding points (fp64 there, fp32 here): measured 3e-8 relative,
// kKlBound 1e-5; gradients: the weight GEMMs of wq_b and wk take bf16(dy) (~2e-3 relative L2, as
// above; measured 1.8e-3 worst), the rest is fp32: kGradBound. The bound can fail: the KL weighted
// 1.25 instead of 1 puts every indexer gradient 0.2 off (> 3x the bound).
constexpr double kKlBound = 1e-5;

TEST_P(TrainGradFixtureTest, IndexerKlAndItsGradientsMatchTheReference) {
  test::Trainee s(ops(), false);
  const Fixture& fx = kl_fixture();
  for (const std::string c : {"dense.", "sparse."}) {
    const std::vector<Decisions> dec = fx.decisions(c, s.cfg);
    TrainOptions o;
    o.dense = c == "dense.";
    o.indexer_kl = 1.0;
    o.lm_backward = false;
    o.replay = &dec;
    TrainStep step(*s.model, *s.params);
    s.params->zero_grad();
    const TrainResult r = step.run(fx.batch(), o);
    const auto ref = nlohmann::json::parse(fx.meta(c + "layer_kl"));
    ASSERT_EQ(r.layer_kl.size(), ref.size()) << c;
    for (size_t l = 0; l < ref.size(); ++l) {
      const double want = ref[l].get<double>();
      EXPECT_LE(std::fabs(r.layer_kl[l] - want), kKlBound * want) << c << "layer " << l;
      std::printf("%slayer %zu KL: ours %.9f, reference %.9f\n", c.c_str(), l, r.layer_kl[l], want);
    }
    expect_grads(*s.params, c, 5 * size_t(s.cfg.num_hidden_layers), fx);
    for (const Param& p : s.params->all())  // the KL reaches the indexer only
      if (p.spec.name.find(".indexer.") == std::string::npos)
        for (float v : s.model->backend().to_host<float>(p.grad)) ASSERT_EQ(v, 0.0f) << p.spec.name;
    if (c != "dense.") continue;
    o.indexer_kl = 1.25;
    s.params->zero_grad();
    step.run(fx.batch(), o);
    for (const auto& [name, e] : grad_errors(*s.params, c, fx)) EXPECT_GT(e, 3 * kGradBound) << "mutated " << name;
  }
}

// Each of these errors breaks the bound on the tensors it touches, so the bound can fail.
TEST_P(TrainGradFixtureTest, BoundsCatchWrongGradients) {
  test::Trainee s(ops());
  const Fixture& fx = fixture();
  const double lam = fx.num("mtp_weight"), alpha = fx.num("balance_alpha");
  const std::string mtp_w = "model.layers." + std::to_string(s.cfg.num_hidden_layers) + ".eh_proj.weight";
  auto expect_caught = [&](const std::string& prefix, const std::string& name, const char* what) {
    const double e = grad_errors(*s.params, prefix).at(name);
    std::printf("%s: relative L2 error %.3g on %s (bound %.3g)\n", what, e, name.c_str(), kGradBound);
    EXPECT_GT(e, 3 * kGradBound) << what;
  };
  run_case(s, "dense.", true, lam * 1.2, alpha);
  expect_caught("dense.", mtp_w, "MTP weight 20% off");
  run_case(s, "dense.", true, lam, 2 * alpha);
  expect_caught("dense.", "model.layers.1.mlp.gate.weight", "balance coefficient doubled");
  run_case(s, "sparse.", true, lam, alpha);  // dense attention where the reference was sparse
  expect_caught("sparse.", "model.layers.1.self_attn.kv_b_proj.weight", "dense instead of sparse attention");
}

// The reference's AdamW hyper-parameters (metadata "adamw").
train::AdamWConfig adamw_config(const Fixture& fx) {
  const auto ad = nlohmann::json::parse(fx.meta("adamw"));
  train::AdamWConfig cfg;
  cfg.beta1 = ad.at("beta1");
  cfg.beta2 = ad.at("beta2");
  cfg.eps = ad.at("eps");
  cfg.weight_decay = ad.at("weight_decay");
  cfg.clip = ad.at("clip");
  return cfg;
}

// AdamW (clip, decay on matrices only) and the balance-bias rule over three steps on the batch.
TEST_P(TrainGradFixtureTest, AdamWStepsFollowTheReference) {
  test::Trainee s(ops());
  const Fixture& fx = fixture();
  train::AdamW opt(*s.params, adamw_config(fx));
  const auto losses = nlohmann::json::parse(fx.meta("step_losses"));
  const auto norms = nlohmann::json::parse(fx.meta("step_grad_norms"));
  const int64_t steps = std::stoll(fx.meta("steps"));
  const double lam = fx.num("mtp_weight"), alpha = fx.num("balance_alpha"), lr = fx.num("lr"),
               gamma = fx.num("bias_gamma");
  double worst = 0;
  for (int64_t k = 0; k <= steps; ++k) {
    const TrainResult r = run_case(s, k == 0 ? "dense." : "step" + std::to_string(k) + ".", true, lam, alpha);
    const double ref = losses.at(size_t(k));
    const double rel = std::fabs(r.loss - ref) / ref;
    worst = std::max(worst, rel);
    EXPECT_LE(rel, kAdamLossBound) << "step " << k << ": " << r.loss << " vs " << ref;
    std::printf("step %lld: loss %.6f, reference %.6f\n", (long long)k, r.loss, ref);
    if (k == steps) break;
    const train::StepStats st = opt.step(k, lr);
    EXPECT_NEAR(st.grad_norm, double(norms.at(size_t(k))), 3 * kGradBound * double(norms.at(size_t(k))));
    train::update_balance_bias(*s.params, r.expert_load, gamma);
  }
  std::printf("AdamW: worst relative loss difference over %lld steps %.3g (bound %.3g)\n", (long long)steps, worst,
              kAdamLossBound);
  // The biases moved by the same ±γ steps (the loads come from the same replayed decisions).
  Backend& be = s.model->backend();
  int checked = 0;
  for (Param& p : s.params->all()) {
    if (!fx.has("final." + p.spec.name)) continue;
    const std::vector<float> ref = fx.f32("final." + p.spec.name), ours = be.to_host<float>(p.master);
    ASSERT_EQ(ref.size(), ours.size());
    for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(ours[i], ref[i], 1e-7) << p.spec.name << "[" << i << "]";
    ++checked;
  }
  EXPECT_EQ(checked, 2);  // layer 1 and the MTP block
}

// One AdamW step from the reference's own (stored) gradients: the update of every tensor matches
// (clipping, bias correction, decay on matrices only), compared through per-tensor sums of the
// update Δ: Σ Δ, Σ Δ², Σ |Δ| and a ±1-weighted Σ c_i Δ_i (a permuted update shows). fp32 arithmetic
// here, fp64 there: Δ agrees to ~1e-6 relative plus one fp32 ulp of the master (~6e-8 |θ|).
TEST_P(TrainGradFixtureTest, AdamWUpdateOnTheSameGradientsMatchesTheReference) {
  test::Trainee s(ops());
  const Fixture& fx = fixture();
  train::AdamW opt(*s.params, adamw_config(fx));
  Backend& be = s.model->backend();
  std::map<std::string, std::vector<float>> before;
  for (Param& p : s.params->all()) {
    before[p.spec.name] = be.to_host<float>(p.master);
    if (!p.gradient) continue;
    const std::vector<float> g = fx.grad("dense.", p.spec.name);
    ASSERT_EQ(g.size(), size_t(p.grad.numel()));
    std::memcpy(p.grad.data, g.data(), g.size() * 4);  // host backends
  }
  const train::StepStats st = opt.step(0, fx.num("lr"));
  EXPECT_NEAR(st.grad_norm, fx.num("adam1.grad_norm"), 1e-6 * st.grad_norm);
  int checked = 0;
  double worst = 0;
  for (Param& p : s.params->all()) {
    if (!p.gradient) continue;
    const std::vector<float> ref = fx.f32("adam1." + p.spec.name), after = be.to_host<float>(p.master);
    const std::vector<float>& b = before[p.spec.name];
    double sum = 0, sq = 0, ab = 0, pm = 0, tol_abs = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      const double d = double(after[i]) - b[i];
      const double c = ((uint64_t(i) * 2654435761ull) >> 16 & 1) ? 1.0 : -1.0;
      sum += d, sq += d * d, ab += std::fabs(d), pm += c * d;
      tol_abs += 1e-6 * std::fabs(d) + 0x1p-23 * std::fabs(b[i]);
    }
    EXPECT_NEAR(ab, ref[2], tol_abs) << p.spec.name;
    EXPECT_NEAR(sum, ref[0], tol_abs) << p.spec.name;
    EXPECT_NEAR(pm, ref[3], tol_abs) << p.spec.name;
    EXPECT_NEAR(std::sqrt(sq), std::sqrt(double(ref[1])), 1e-5 * std::sqrt(sq) + tol_abs) << p.spec.name;
    worst = std::max(worst, std::fabs(ab - ref[2]) / std::max(ab, 1e-30));
    ++checked;
  }
  EXPECT_GT(checked, 90);
  std::printf("AdamW update from the stored gradients: %d tensors, worst relative difference of sum |delta| %.3g\n",
              checked, worst);
}

INSTANTIATE_TEST_SUITE_P(Backends, TrainGradFixtureTest, ::testing::Values("ref", "cpu"));

}  // namespace
}  // namespace dsa
