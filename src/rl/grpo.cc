// GRPO's objective and update (rl/grpo.h, docs/rl.md).
#include "rl/grpo.h"

#include <cmath>
#include <map>

#include "base/error.h"
#include "model/train_step.h"

namespace dsa::rl {

double kl_unbiased(double lt, double lold, double lref) {
  const double u = lref - lt;
  return std::exp(lt - lold) * (std::expm1(u) - u);
}

double kl_unbiased_grad(double lt, double lold, double lref) { return std::exp(lt - lold) * (lt - lref); }

double kl_k3(double lt, double lref) {
  const double u = lref - lt;
  return std::expm1(u) - u;
}

double kl_k3_grad(double lt, double lref) { return -std::expm1(lref - lt); }

void group_advantages(std::vector<Sample>& samples) {
  std::map<int64_t, std::pair<double, int64_t>> sum;  // group -> (Σ R, n)
  for (const Sample& s : samples) {
    auto& [r, n] = sum[s.group];
    r += s.reward;
    ++n;
  }
  for (Sample& s : samples) {
    const auto& [r, n] = sum[s.group];
    s.advantage = s.reward - r / double(n);
  }
}

bool opsm_masked(double advantage, const std::vector<double>& lold, const std::vector<double>& lt, double delta) {
  DSA_CHECK(lold.size() == lt.size() && !lt.empty(), "opsm: {} old and {} new log-probs", lold.size(), lt.size());
  if (!(advantage < 0)) return false;
  double d = 0;
  for (size_t t = 0; t < lt.size(); ++t) d += lold[t] - lt[t];
  return d / double(lt.size()) > delta;
}

SeqObjective sequence_objective(const GrpoConfig& c, double advantage, const std::vector<double>& lold,
                                const std::vector<double>& lt, const std::vector<double>* lref, double w,
                                std::vector<double>& dlt) {
  const size_t n = lt.size();
  DSA_CHECK(n > 0 && lold.size() == n && (!lref || lref->size() == n),
            "grpo: a sequence with {} new, {} old and {} reference log-probs", n, lold.size(), lref ? lref->size() : n);
  SeqObjective o;
  o.masked = c.opsm && opsm_masked(advantage, lold, lt, c.opsm_delta);
  const double keep = o.masked ? 0.0 : 1.0, scale = w / double(n), A = advantage;
  const bool kl = lref && c.beta > 0;
  dlt.assign(n, 0.0);
  for (size_t t = 0; t < n; ++t) {
    const double r = std::exp(lt[t] - lold[t]);
    // min(r Â, clip(r) Â): the clipped branch is the smaller one exactly when r leaves the
    // interval on the side Â favours; it is constant in θ there.
    double s = r * A, ds = r * A;
    if ((A > 0 && r > 1 + c.clip) || (A < 0 && r < 1 - c.clip)) {
      s = (A > 0 ? 1 + c.clip : 1 - c.clip) * A;
      ds = 0;
      ++o.clipped;
    }
    double d = 0, dd = 0;
    if (kl) {
      d = c.unbiased_kl ? kl_unbiased(lt[t], lold[t], (*lref)[t]) : kl_k3(lt[t], (*lref)[t]);
      dd = c.unbiased_kl ? kl_unbiased_grad(lt[t], lold[t], (*lref)[t]) : kl_k3_grad(lt[t], (*lref)[t]);
    }
    o.kl += d;
    o.loss -= scale * (s * keep - c.beta * d);
    dlt[t] = -scale * (ds * keep - c.beta * dd);
  }
  return o;
}

// One sample as a trainer batch: prompt + tokens (T = their count - 1); token j of `tokens` is
// target P-1+j, and the sampled ones (loss mask 1) are the objective's rows.
struct Grpo::Prepared {
  TrainBatch batch;
  int64_t P = 0;
  std::vector<int64_t> rows;  // targets of the sampled tokens
  std::vector<double> lold;   // their log π_old (kept-set renormalised with keep-sampling-mask)
  std::vector<int64_t> off;   // kept sets over the T targets (empty rows for the others)
  std::vector<int32_t> ids;
  std::vector<Decisions> replay;
  TrainOptions options(const GrpoConfig& c) const {
    TrainOptions o;
    o.dense = c.dense;
    if (c.keep_routing) o.replay = &replay;
    if (c.keep_sampling_mask) o.kept_offsets = &off, o.kept_ids = &ids;
    return o;
  }
};

Grpo::Grpo(Model& model, Params& params, train::AdamW& opt, GrpoConfig cfg)
    : m_(model), p_(params), opt_(opt), cfg_(cfg), ref_(params.forward_weights()) {
  DSA_CHECK(cfg_.clip > 0 && cfg_.beta >= 0 && cfg_.minibatches >= 1 && std::isfinite(cfg_.opsm_delta),
            "grpo: clip must be > 0, beta >= 0, minibatches >= 1 (got {}, {}, {})", cfg_.clip, cfg_.beta,
            cfg_.minibatches);
}

Grpo::Prepared Grpo::prepare(const Sample& s) const {
  const int64_t P = int64_t(s.prompt.size()), G = int64_t(s.tokens.size());
  DSA_CHECK(P > 0 && G > 0, "grpo: a sample needs a prompt and a sampled token");
  DSA_CHECK(int64_t(s.logp.size()) == G, "grpo: {} log-probs for {} tokens", s.logp.size(), G);
  DSA_CHECK(s.loss_mask.empty() || int64_t(s.loss_mask.size()) == G, "grpo: {} loss-mask entries for {} tokens",
            s.loss_mask.size(), G);
  const bool ksm = cfg_.keep_sampling_mask;
  if (ksm)
    DSA_CHECK(int64_t(s.mask_offsets.size()) == G + 1 && int64_t(s.logp_kept.size()) == G &&
                  s.mask_offsets.back() == int64_t(s.mask_ids.size()),
              "grpo: keep-sampling-mask needs the sampling masks and kept log-probs of every sampled id");
  Prepared p;
  p.P = P;
  p.batch.B = 1;
  p.batch.T = P + G - 1;
  p.batch.tokens = s.prompt;
  p.batch.tokens.insert(p.batch.tokens.end(), s.tokens.begin(), s.tokens.end());
  if (ksm) p.off.assign(size_t(P), 0);  // targets 0 .. P-2 (empty) and the first token's start
  for (int64_t j = 0; j < G; ++j) {
    const bool sampled = s.loss_mask.empty() || s.loss_mask[size_t(j)] != 0;
    if (sampled) {
      p.rows.push_back(P - 1 + j);
      p.lold.push_back(ksm ? s.logp_kept[size_t(j)] : s.logp[size_t(j)]);
    }
    if (ksm) {
      if (sampled)  // given tokens (tool results) keep an empty set: they are not the sampler's
        p.ids.insert(p.ids.end(), s.mask_ids.begin() + s.mask_offsets[size_t(j)],
                     s.mask_ids.begin() + s.mask_offsets[size_t(j + 1)]);
      p.off.push_back(int64_t(p.ids.size()));
    }
  }
  DSA_CHECK(!p.rows.empty(), "grpo: a sample without a sampled token (its loss mask is all 0)");
  if (cfg_.keep_routing) {
    DSA_CHECK(s.experts, "grpo: keep-routing needs the experts the engine chose (record_experts)");
    p.replay = {*s.experts};
  }
  return p;
}

std::vector<double> Grpo::sampled_logprobs(const Prepared& p) {
  TrainStep step(m_, p_);
  const TrainResult r = step.evaluate(p.batch, p.options(cfg_));
  std::vector<double> lt;
  for (int64_t r0 : p.rows) lt.push_back(r.logprobs[size_t(r0)]);
  return lt;
}

GrpoStats Grpo::update(std::vector<Sample>& batch, double lr) {
  DSA_CHECK(!batch.empty(), "grpo: an empty rollout batch");
  const size_t N = batch.size();
  group_advantages(batch);
  std::vector<Prepared> prep;
  prep.reserve(N);
  for (const Sample& s : batch) prep.push_back(prepare(s));

  GrpoStats st;
  st.samples = int64_t(N);
  for (size_t i = 0; i < N; ++i) {
    const Sample& s = batch[i];
    st.reward += s.reward / double(N);
    st.pass_rate += (s.pass ? 1.0 : 0.0) / double(N);
    st.tokens += int64_t(prep[i].rows.size());
    for (int64_t r : prep[i].rows) st.entropy -= s.logp[size_t(r - prep[i].P + 1)];
  }
  st.mean_length = double(st.tokens) / double(N);
  st.entropy /= double(st.tokens);

  // π_ref: the weights at construction, with the same decisions and kept sets as π_θ.
  std::vector<std::vector<double>> lref;
  if (cfg_.beta > 0) {
    const ModelWeights cur = m_.weights();
    m_.set_weights(ref_);
    for (size_t i = 0; i < N; ++i) lref.push_back(sampled_logprobs(prep[i]));
    m_.set_weights(cur);
  }
  // The mismatch before any update: the first mini-batch's forward runs at the rollout weights, so
  // its samples are compared inside it (no extra forward); the later ones are evaluated now.
  const size_t nmb = std::min(size_t(cfg_.minibatches), N), first_end = N / nmb;
  auto mismatch = [&](const std::vector<double>& lt, const std::vector<double>& lo) {
    for (size_t t = 0; t < lt.size(); ++t) {
      const double d = std::fabs(lt[t] - lo[t]);
      st.mismatch_max = std::max(st.mismatch_max, d);
      st.mismatch_mean += d;
    }
    st.mismatch_tokens += int64_t(lt.size());
  };
  if (cfg_.check_mismatch)
    for (size_t i = first_end; i < N; ++i) mismatch(sampled_logprobs(prep[i]), prep[i].lold);

  int64_t masked = 0, clipped = 0, tokens_seen = 0;
  double kl = 0;
  for (size_t k = 0; k < nmb; ++k) {
    const size_t b = k * N / nmb, e = (k + 1) * N / nmb;
    const double w = 1.0 / double(e - b);
    p_.zero_grad();
    double loss = 0;
    for (size_t i = b; i < e; ++i) {
      const Prepared& p = prep[i];
      TrainOptions o = p.options(cfg_);
      SeqObjective so;
      o.objective = [&](const std::vector<double>& logp, std::vector<float>& dlogp) {
        std::vector<double> lt, dlt;
        for (int64_t r : p.rows) lt.push_back(logp[size_t(r)]);
        if (k == 0 && cfg_.check_mismatch) mismatch(lt, p.lold);
        so = sequence_objective(cfg_, batch[i].advantage, p.lold, lt, lref.empty() ? nullptr : &lref[i], w, dlt);
        for (size_t j = 0; j < p.rows.size(); ++j) dlogp[size_t(p.rows[j])] = float(dlt[j]);
        return so.loss;
      };
      TrainStep step(m_, p_);
      step.run(p.batch, o);
      loss += so.loss;
      masked += so.masked;
      clipped += so.clipped;
      kl += so.kl;
      tokens_seen += int64_t(p.rows.size());
    }
    const train::StepStats ss = opt_.step(step_++, lr);
    m_.set_weights(p_.forward_weights());
    st.grad_norm = ss.grad_norm;
    st.loss += loss / double(nmb);
    ++st.updates;
  }
  if (st.mismatch_tokens) st.mismatch_mean /= double(st.mismatch_tokens);
  st.masked = double(masked) / double(N);
  st.clipped = double(clipped) / double(tokens_seen);
  st.kl = kl / double(tokens_seen);
  return st;
}

}  // namespace dsa::rl
