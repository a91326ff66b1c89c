// The training loop (train/trainer.h).
#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <sstream>

#include "model/export.h"
#include "model/make_model.h"
#include "ops/backends.h"
#include "train/checkpoint.h"
#include "train/plot.h"
#include "train/shard_source.h"

namespace dsa::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

ModelConfig model_config(const TrainConfig& c) {
  ModelConfig mc = preset_config(c.preset);
  json j = mc.to_json();
  for (auto& [k, v] : c.model_overrides.items()) {
    DSA_CHECK(j.contains(k), "train config: model.config key \"{}\" is not a config.json key of deepseek_v32", k);
    j[k] = v;
  }
  mc = ModelConfig::from_json(j);
  if (!c.mtp) mc.num_nextn_predict_layers = 0;
  mc.validate();
  return mc;
}

// Keeps the metric lines of steps <= step (a resumed run rewrites what came after).
void truncate_metrics(const std::string& path, int64_t step, bool csv) {
  std::ifstream f(path);
  if (!f.good()) return;
  std::vector<std::string> keep;
  std::string line;
  bool header = csv;
  while (std::getline(f, line)) {
    if (header) {
      keep.push_back(line);
      header = false;
      continue;
    }
    int64_t s = -1;
    if (csv) {
      s = std::atoll(line.c_str());
    } else {
      try {
        s = json::parse(line).at("step").get<int64_t>();
      } catch (...) {
        continue;
      }
    }
    if (s <= step) keep.push_back(line);
  }
  f.close();
  std::ofstream o(path, std::ios::trunc);
  for (auto& l : keep) o << l << "\n";
}

std::string human_time(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02d}m", t / 3600, (t / 60) % 60);
  if (t >= 60) return fmt::format("{}m{:02d}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

}  // namespace

Trainer::Trainer(TrainConfig cfg, Log log) : cfg_(std::move(cfg)), log_(std::move(log)) {
  const ops::OpTable& ops = ops::select_backend(cfg_.backend);
  DSA_CHECK(ops.grad, "the {} backend has no training ops", ops.name);
  std::string init = cfg_.init;
  ModelConfig mc;
  if (init.empty()) {
    mc = model_config(cfg_);
    init = (fs::path(cfg_.out) / "init").string();
    if (!fs::exists(fs::path(init) / "config.json") ||
        ModelConfig::load(init + "/config.json").to_json() != mc.to_json()) {
      MakeModelOptions mo;
      mo.config = &mc;
      mo.out_dir = init;
      mo.seed = cfg_.init_seed;
      mo.mtp = cfg_.mtp;
      make_model(mo);
    }
    log_(fmt::format("random init ({} preset + {} overrides, seed {}) in {}", cfg_.preset,
                     cfg_.model_overrides.size(), cfg_.init_seed, init));
  } else {
    mc = ModelConfig::load(init + "/config.json");
  }
  model_ = Model::create(mc, ops);
  params_ = std::make_unique<Params>(model_->backend(), mc, cfg_.mtp);
  params_->load(Checkpoint::open(init));
  DSA_CHECK(cfg_.mtp_weight == 0 || params_->has_mtp(),
            "train config: loss.mtp_weight > 0 but the model has no MTP layer (set model.mtp false or mtp_weight 0)");
  std::vector<std::string> freeze = cfg_.freeze;
  if (!cfg_.lm) freeze.push_back("^(?!.*\\.indexer\\.).*$");  // the warm-up: only the indexers learn
  opt_ = std::make_unique<AdamW>(*params_, cfg_.adamw, freeze);
  topt_.dense = cfg_.attention == "dense";
  topt_.mtp_weight = params_->has_mtp() ? cfg_.mtp_weight : 0.0;
  topt_.balance_alpha = cfg_.balance_alpha;
  topt_.recompute = cfg_.recompute;
  topt_.indexer_kl = cfg_.indexer_kl;
  topt_.lm_backward = cfg_.lm;
  model_->set_weights(params_->forward_weights());
  log_(fmt::format("model {}: {} layers, hidden {}, vocab {}, {:.2f}M parameters ({:.2f}M trained), backend {}",
                   init, mc.num_hidden_layers, mc.hidden_size, mc.vocab_size, params_->count() / 1e6,
                   opt_->trainable_count() / 1e6, ops.name));
}

Trainer::~Trainer() = default;

void Trainer::set_data(std::unique_ptr<BatchSource> train, std::unique_ptr<BatchSource> val) {
  train_ = std::move(train);
  val_ = std::move(val);
}

double Trainer::flops_per_token() const {
  const ModelConfig& c = params_->config();
  const double H = double(c.hidden_size), nh = double(c.num_attention_heads), L = double(c.kv_lora_rank),
               R = double(c.qk_rope_head_dim), dv = double(c.v_head_dim), nope = double(c.qk_nope_head_dim),
               qlr = double(c.q_lora_rank), T = double(cfg_.seq_len);
  double keys = (T + 1) / 2;  // mean causal keys per query
  if (!topt_.dense) {
    const double k = double(c.index_topk);
    keys = T <= k ? (T + 1) / 2 : (k * (k + 1) / 2 + (T - k) * k) / T;
  }
  auto block = [&](bool moe) {
    double n = qlr * H + nh * (nope + R) * qlr + (L + R) * H + nh * nope * L + nh * dv * L + H * nh * dv;
    if (!moe) n += 3 * H * double(c.intermediate_size);
    else n += double(c.n_routed_experts) * H + double(c.num_experts_per_tok + c.n_shared_experts) * 3 * H *
                                                   double(c.moe_intermediate_size);
    const double attn = 2 * nh * keys * (L + R) + 2 * nh * keys * L;
    return 3 * (2 * n + attn);
  };
  double f = 0;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) f += block(c.is_moe_layer(i));
  f += 6 * double(c.vocab_size) * H;
  if (topt_.mtp_weight > 0) f += block(true) + 6 * 2 * H * H + 6 * double(c.vocab_size) * H;
  return f;
}

void Trainer::ensure_data() {
  if (!train_) {
    const uint32_t V = uint32_t(params_->config().vocab_size);
    train_ = shard_source(cfg_, false, V);
    if (!val_) val_ = shard_source(cfg_, true, V);
  }
}

double Trainer::validate() {
  if (!val_) return NAN;
  val_->rewind();
  TrainStep step(*model_, *params_);
  TrainOptions o = topt_;
  o.mtp_weight = 0;
  o.balance_alpha = 0;
  o.indexer_kl = 0;
  o.indexer_recall = false;
  double sum = 0, w = 0;
  for (int64_t i = 0; i < cfg_.eval_batches; ++i) {
    const TrainResult r = step.evaluate(val_->next(), o);
    sum += r.loss_main * r.weight_sum;
    w += r.weight_sum;
  }
  return w > 0 ? sum / w : NAN;
}

Trainer::IndexerEval Trainer::validate_indexer() {
  IndexerEval ev;
  if (!val_) return ev;
  val_->rewind();
  TrainStep step(*model_, *params_);
  TrainOptions o = topt_;
  o.dense = true;
  o.mtp_weight = 0;
  o.balance_alpha = 0;
  o.indexer_kl = 1;
  o.indexer_recall = true;
  double rows = 0;
  for (int64_t i = 0; i < cfg_.eval_batches; ++i) {
    const TrainBatch b = val_->next();
    const TrainResult r = step.evaluate(b, o);
    const double n = double(b.B * b.T);
    if (ev.layer_kl.empty())
      ev.layer_kl.assign(r.layer_kl.size(), 0.0), ev.recall.assign(r.layer_recall.size(), 0.0),
          ev.oracle.assign(r.layer_oracle_recall.size(), 0.0);
    for (size_t l = 0; l < r.layer_kl.size(); ++l) ev.layer_kl[l] += r.layer_kl[l] * n;
    for (size_t l = 0; l < r.layer_recall.size(); ++l) ev.recall[l] += r.layer_recall[l] * n;
    for (size_t l = 0; l < r.layer_oracle_recall.size(); ++l) ev.oracle[l] += r.layer_oracle_recall[l] * n;
    rows += n;
  }
  ev.kl = 0;
  for (double& v : ev.layer_kl) ev.kl += v /= rows;
  for (double& v : ev.recall) v /= rows;
  for (double& v : ev.oracle) v /= rows;
  return ev;
}

RunSummary Trainer::run(bool resume, const std::atomic<bool>* stop_flag) {
  ensure_data();
  std::error_code ec;
  fs::create_directories(cfg_.out, ec);
  DSA_CHECK(!ec, "cannot create {}: {}", cfg_.out, ec.message());
  {
    std::ofstream f(fs::path(cfg_.out) / "train_config.json");
    f << to_json(cfg_).dump(2) << "\n";
  }
  RunSummary sum;
  int64_t step = 0;
  double tokens_total = 0, seconds_before = 0;
  const std::string jsonl = (fs::path(cfg_.out) / "metrics.jsonl").string(),
                    csv = (fs::path(cfg_.out) / "metrics.csv").string();
  if (resume) {
    const std::string ck = latest_checkpoint(cfg_.out);
    if (ck.empty()) {
      log_(fmt::format("no checkpoint under {}: starting from step 0", cfg_.out));
    } else {
      const CheckpointMeta meta = load_checkpoint(ck, *params_, *opt_);
      step = meta.step;
      train_->restore(meta.data_state);
      tokens_total = meta.extra.value("tokens", 0.0);
      seconds_before = meta.extra.value("seconds", 0.0);
      log_(fmt::format("resumed from {} (step {})", ck, step));
    }
  }
  if (!resume || step == 0) {
    fs::remove(jsonl, ec);
    fs::remove(csv, ec);
  }
  truncate_metrics(jsonl, step, false);
  truncate_metrics(csv, step, true);
  std::ofstream mj(jsonl, std::ios::app), mc(csv, std::ios::app);
  if (fs::file_size(csv, ec) == 0 || ec)
    mc << "step,loss,loss_main,loss_mtp,loss_bal,lr,grad_norm,tokens,tok_s,mfu,val_loss,loss_kl,val_kl,recall_min\n";
  const double fpt = flops_per_token();
  const double peak = cfg_.peak_tflops > 0 ? cfg_.peak_tflops * 1e12
                      : model_->backend().device()  ? 989.4e12  // H200 bf16 dense tensor peak (datasheet)
                                                    : 0.0;
  model_->set_weights(params_->forward_weights());
  TrainStep ts(*model_, *params_);
  const bool tty = isatty(2);
  auto t0 = std::chrono::steady_clock::now();
  double run_tokens = 0;
  auto save = [&] {
    CheckpointMeta meta;
    meta.step = step;
    meta.data_state = train_->state();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    meta.extra = json{{"tokens", tokens_total}, {"seconds", seconds_before + secs}};
    sum.checkpoint = save_checkpoint(cfg_.out, meta, *params_, *opt_, cfg_.keep_checkpoints);
  };
  const int64_t start_step = step;
  while (step < cfg_.steps) {
    if (stop_flag && stop_flag->load()) {
      sum.interrupted = true;
      break;
    }
    params_->zero_grad();
    TrainResult acc;
    double loss = 0, lm = 0, lmtp = 0, lbal = 0, lkl = 0;
    int64_t ntok = 0;
    for (int64_t a = 0; a < cfg_.accumulate; ++a) {
      const TrainBatch b = train_->next();
      const TrainResult r = ts.run(b, topt_, float(1.0 / double(cfg_.accumulate)));
      loss += r.loss / double(cfg_.accumulate);
      lm += r.loss_main / double(cfg_.accumulate);
      lmtp += r.loss_mtp / double(cfg_.accumulate);
      lbal += r.loss_bal / double(cfg_.accumulate);
      lkl += r.loss_kl / double(cfg_.accumulate);
      ntok += b.B * b.T;
      if (acc.expert_load.empty()) acc.expert_load = r.expert_load;
      else
        for (size_t l = 0; l < r.expert_load.size(); ++l)
          for (size_t e = 0; e < r.expert_load[l].size(); ++e) acc.expert_load[l][e] += r.expert_load[l][e];
    }
    DSA_CHECK(std::isfinite(loss), "step {}: the loss is not finite ({})", step, loss);
    const double lr = cfg_.schedule.at(step);
    const StepStats st = opt_->step(step, lr);
    update_balance_bias(*params_, acc.expert_load, cfg_.bias_gamma);
    model_->set_weights(params_->forward_weights());
    ++step;
    tokens_total += double(ntok);
    run_tokens += double(ntok);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = run_tokens / std::max(secs, 1e-9);
    const double mfu = peak > 0 ? tps * fpt / peak : NAN;
    double val = NAN;
    IndexerEval iev;
    if ((cfg_.eval_every > 0 && step % cfg_.eval_every == 0) || step == cfg_.steps) {
      val = validate();
      if (cfg_.indexer_kl > 0) iev = validate_indexer();
    }
    const double rec_min = iev.recall.empty() ? NAN : *std::min_element(iev.recall.begin(), iev.recall.end());
    json load_stats = json::array();
    for (auto& l : acc.expert_load) {
      double mean = 0, mx = 0;
      for (int64_t v : l) mean += double(v), mx = std::max(mx, double(v));
      mean /= double(std::max<size_t>(l.size(), 1));
      load_stats.push_back(mean > 0 ? mx / mean : 0.0);
    }
    json rec{{"step", step},       {"loss", loss},   {"loss_main", lm},       {"loss_mtp", lmtp},
             {"loss_bal", lbal},   {"lr", lr},       {"grad_norm", st.grad_norm}, {"tokens", tokens_total},
             {"tok_s", tps},       {"elapsed", seconds_before + secs}, {"load_max_over_mean", load_stats}};
    if (std::isfinite(mfu)) rec["mfu"] = mfu;
    if (cfg_.indexer_kl > 0) rec["loss_kl"] = lkl;
    if (std::isfinite(iev.kl)) {
      rec["val_kl"] = iev.kl;
      rec["val_layer_kl"] = iev.layer_kl;
      rec["recall"] = iev.recall;
      rec["oracle_recall"] = iev.oracle;
    }
    if (std::isfinite(val)) {
      rec["val_loss"] = val;
      rec["expert_load"] = acc.expert_load;
      sum.val_loss = val;
    }
    mj << rec.dump() << "\n";
    mj.flush();
    auto opt_num = [](double v, const char* f) { return std::isfinite(v) ? fmt::format(fmt::runtime(f), v) : ""; };
    mc << fmt::format("{},{:.6f},{:.6f},{:.6f},{:.6g},{:.6g},{:.6g},{:.0f},{:.1f},{},{},{},{},{}\n", step, loss, lm, lmtp,
                      lbal, lr, st.grad_norm, tokens_total, tps, opt_num(mfu, "{:.4f}"), opt_num(val, "{:.6f}"),
                      cfg_.indexer_kl > 0 ? fmt::format("{:.6f}", lkl) : "", opt_num(iev.kl, "{:.6f}"),
                      opt_num(rec_min, "{:.4f}"));
    mc.flush();
    sum.loss = lm;
    if (step % cfg_.log_every == 0 || step == cfg_.steps || std::isfinite(val)) {
      const double eta = double(cfg_.steps - step) * secs / double(step - start_step);
      std::string line = fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | {:.0f} tok/s", step, cfg_.steps, lm, lr, tps);
      if (std::isfinite(mfu)) line += fmt::format(" | MFU {:.1f}%", 100 * mfu);
      line += fmt::format(" | ETA {}", human_time(eta));
      if (cfg_.indexer_kl > 0) line += fmt::format(" | kl {:.4f}", lkl);
      if (std::isfinite(val)) line += fmt::format(" | val {:.4f}", val);
      if (std::isfinite(rec_min)) line += fmt::format(" | recall min {:.3f}", rec_min);
      if (tty && !std::isfinite(val)) std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
      else std::fprintf(stderr, "%s%s\n", tty ? "\r" : "", line.c_str());
    }
    if (cfg_.checkpoint_every > 0 && step % cfg_.checkpoint_every == 0 && step < cfg_.steps) save();
  }
  if (tty) std::fprintf(stderr, "\n");
  save();
  sum.steps = step;
  sum.tokens = run_tokens;
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Loss curve from the whole metrics file (earlier runs included).
  {
    Series tr{"train", {}, {}, {31, 119, 180}}, va{"val", {}, {}, {214, 39, 40}};
    std::ifstream f(jsonl);
    std::string line;
    while (std::getline(f, line)) {
      const json r = json::parse(line);
      tr.x.push_back(r["step"].get<double>());
      tr.y.push_back(r["loss_main"].get<double>());
      if (r.contains("val_loss")) va.x.push_back(r["step"].get<double>()), va.y.push_back(r["val_loss"].get<double>());
    }
    Chart ch{"loss", "step", "", {tr, va}};
    write_png_chart((fs::path(cfg_.out) / "loss.png").string(), ch);
  }
  if (cfg_.export_at_end && !sum.interrupted) {
    sum.export_dir = (fs::path(cfg_.out) / "export").string();
    const ExportInfo info = export_checkpoint(*params_, sum.export_dir, cfg_.export_shard_mb << 20,
                                              {{"generator", "dsa train"}, {"steps", std::to_string(step)}});
    log_(fmt::format("exported {} ({:.1f} MB in {} shard(s))", sum.export_dir, info.bytes / 1e6, info.shards));
  }
  return sum;
}

}  // namespace dsa::train
