// AdamW, schedules and the balance-bias rule (train/optimizer.h).
#include "train/optimizer.h"

#include <fmt/format.h>

#include <cmath>
#include <regex>

#include "ops/grad.h"

namespace dsa::train {

void Schedule::validate() const {
  DSA_CHECK(kind == "cosine" || kind == "wsd" || kind == "constant",
            "schedule: unknown kind \"{}\" (cosine, wsd, constant)", kind);
  DSA_CHECK(std::isfinite(lr) && lr > 0 && std::isfinite(min_lr) && min_lr >= 0 && min_lr <= lr,
            "schedule: need 0 <= min_lr <= lr, lr > 0 (lr {}, min_lr {})", lr, min_lr);
  DSA_CHECK(warmup >= 0 && total >= 1, "schedule: need warmup >= 0 and total steps >= 1");
  DSA_CHECK(decay_frac > 0 && decay_frac <= 1, "schedule: decay_frac must be in (0, 1]");
}

double Schedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  if (kind == "constant") return lr;
  const int64_t rest = std::max<int64_t>(1, total - warmup);
  const double t = std::clamp(double(step - warmup) / double(rest), 0.0, 1.0);
  if (kind == "cosine") return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * t));
  // wsd: stable at lr, then linear to min_lr over the last decay_frac of the steps after warm-up.
  const double d0 = 1.0 - decay_frac;
  if (t <= d0) return lr;
  return lr + (min_lr - lr) * (t - d0) / decay_frac;
}

AdamW::AdamW(Params& params, const AdamWConfig& cfg, const std::vector<std::string>& freeze) : p_(params), cfg_(cfg) {
  DSA_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1, "adamw: betas must be in [0, 1)");
  DSA_CHECK(cfg.eps > 0 && cfg.weight_decay >= 0, "adamw: need eps > 0 and weight_decay >= 0");
  for (const std::string& pat : freeze) {
    std::regex re;
    try {
      re = std::regex(pat);
    } catch (const std::regex_error& e) {
      DSA_FAIL("freeze pattern \"{}\" is not a valid regex: {}", pat, e.what());
    }
    int64_t hits = 0;
    for (Param& p : params.all())
      if (std::regex_match(p.spec.name, re)) p.frozen = true, ++hits;
    DSA_CHECK(hits > 0, "freeze pattern \"{}\" matches no parameter", pat);
  }
  Backend& be = params.backend();
  for (Param& p : params.all()) {
    if (p.frozen || !p.gradient) {
      m_.emplace_back();
      v_.emplace_back();
      continue;
    }
    m_.push_back(be.alloc(DType::F32, p.spec.shape));
    v_.push_back(be.alloc(DType::F32, p.spec.shape));
    be.ops().mem.fill(m_.back().data, 0, m_.back().nbytes());
    be.ops().mem.fill(v_.back().data, 0, v_.back().nbytes());
  }
}

int64_t AdamW::trainable_count() const {
  int64_t n = 0;
  for (const Param& p : p_.all())
    if (!p.frozen && p.gradient) n += p.master.numel();
  return n;
}

StepStats AdamW::step(int64_t step, double lr) {
  Backend& be = p_.backend();
  const ops::GradTable& g = *be.ops().grad;
  StepStats st;
  st.lr = lr;
  Tensor acc = be.alloc(DType::I64, {1});  // one double
  double sq = 0;
  for (Param& p : p_.all()) {
    if (p.frozen || !p.gradient) continue;
    g.sum_squares({p.grad.ptr<float>(), p.grad.numel(), reinterpret_cast<double*>(acc.data)});
    double v = 0;
    be.download(acc, &v);
    sq += v;
  }
  st.grad_norm = std::sqrt(sq);
  DSA_CHECK(std::isfinite(st.grad_norm), "optimiser step {}: the gradient norm is not finite", step);
  if (cfg_.clip > 0 && st.grad_norm > cfg_.clip) st.clip_scale = cfg_.clip / st.grad_norm;
  const double t = double(step + 1);
  const float bc1 = float(1.0 - std::pow(cfg_.beta1, t)), bc2 = float(1.0 - std::pow(cfg_.beta2, t));
  auto& all = p_.all();
  for (size_t i = 0; i < all.size(); ++i) {
    Param& p = all[i];
    if (p.frozen || !p.gradient) continue;
    g.adamw({p.master.ptr<float>(), p.grad.ptr<float>(), m_[i].ptr<float>(), v_[i].ptr<float>(), p.master.numel(),
             float(lr), float(cfg_.beta1), float(cfg_.beta2), float(cfg_.eps),
             p.decay ? float(cfg_.weight_decay) : 0.0f, float(st.clip_scale), bc1, bc2});
  }
  return st;
}

std::vector<std::pair<std::string, Tensor*>> AdamW::state() {
  std::vector<std::pair<std::string, Tensor*>> s;
  auto& all = p_.all();
  for (size_t i = 0; i < all.size(); ++i) {
    if (!m_[i].data) continue;
    s.emplace_back("m." + all[i].spec.name, &m_[i]);
    s.emplace_back("v." + all[i].spec.name, &v_[i]);
  }
  return s;
}

void update_balance_bias(Params& params, const std::vector<std::vector<int64_t>>& load, double gamma) {
  if (gamma == 0) return;
  const ModelConfig& c = params.config();
  std::vector<int64_t> layers;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    if (c.is_moe_layer(i)) layers.push_back(i);
  if (params.has_mtp()) layers.push_back(c.num_hidden_layers);
  DSA_CHECK(load.size() == layers.size() || load.size() + 1 == layers.size(),
            "balance: loads of {} MoE layers for {}", load.size(), layers.size());
  Backend& be = params.backend();
  for (size_t l = 0; l < load.size(); ++l) {
    Param& p = params.at(fmt::format("model.layers.{}.mlp.gate.e_score_correction_bias", layers[l]));
    if (p.frozen) continue;
    std::vector<float> b = be.to_host<float>(p.master);
    double mean = 0;
    for (int64_t x : load[l]) mean += double(x);
    mean /= double(load[l].size());
    for (size_t e = 0; e < b.size(); ++e) {
      const double diff = mean - double(load[l][e]);
      b[e] += float(gamma * (diff > 0 ? 1.0 : diff < 0 ? -1.0 : 0.0));
    }
    params.set_master(p.spec.name, b.data());
  }
}

}  // namespace dsa::train
