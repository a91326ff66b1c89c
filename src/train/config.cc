// Training configuration parsing with a strict schema (train/config.h).
#include "train/config.h"

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <set>

#include "base/error.h"

namespace dsa::train {

namespace {

using json = nlohmann::json;

// One JSON object of the schema: typed getters that record the keys they read, then a check
// that nothing else was given.
class Section {
 public:
  Section(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    DSA_CHECK(j.is_object(), "train config: {} must be an object, got {}", where(), j.type_name());
  }
  std::string where() const { return path_.empty() ? "the top level" : "\"" + path_ + "\""; }
  std::string key(const char* k) const { return path_.empty() ? k : path_ + "." + k; }
  bool has(const char* k) {
    seen_.insert(k);
    return j_.contains(k) && !j_.at(k).is_null();
  }
  template <class T>
  void get(const char* k, T& out) {
    if (!has(k)) return;
    const json& v = j_.at(k);
    if constexpr (std::is_same_v<T, bool>) {
      DSA_CHECK(v.is_boolean(), "train config: {} must be true or false", key(k));
    } else if constexpr (std::is_integral_v<T>) {
      DSA_CHECK(v.is_number_integer(), "train config: {} must be an integer, got {}", key(k), v.dump());
      if constexpr (std::is_unsigned_v<T>) DSA_CHECK(v.get<int64_t>() >= 0, "train config: {} must be >= 0", key(k));
    } else if constexpr (std::is_floating_point_v<T>) {
      DSA_CHECK(v.is_number(), "train config: {} must be a number, got {}", key(k), v.dump());
    } else if constexpr (std::is_same_v<T, std::string>) {
      DSA_CHECK(v.is_string(), "train config: {} must be a string, got {}", key(k), v.dump());
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      DSA_CHECK(v.is_array(), "train config: {} must be a list of strings", key(k));
      for (auto& e : v) DSA_CHECK(e.is_string(), "train config: {} must be a list of strings", key(k));
    }
    out = v.get<T>();
  }
  Section sub(const char* k) {
    seen_.insert(k);
    static const json empty = json::object();
    return Section(j_.contains(k) ? j_.at(k) : empty, key(k));
  }
  const json& raw(const char* k) {
    seen_.insert(k);
    return j_.at(k);
  }
  void done() const {
    for (auto& [k, v] : j_.items())
      DSA_CHECK(seen_.count(k), "train config: unknown key \"{}\" in {}", k, where());
  }

 private:
  const json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

std::string resolve(const std::string& p, const std::string& base) {
  if (p.empty() || std::filesystem::path(p).is_absolute() || base.empty()) return p;
  return (std::filesystem::path(base) / p).lexically_normal().string();
}

}  // namespace

TrainConfig parse_train_config(const json& j, const std::string& base_dir) {
  TrainConfig c;
  Section top(j, "");
  {
    Section m = top.sub("model");
    m.get("init", c.init);
    m.get("preset", c.preset);
    m.get("seed", c.init_seed);
    if (m.has("config")) {
      c.model_overrides = m.raw("config");
      DSA_CHECK(c.model_overrides.is_object(), "train config: model.config must be an object of config.json keys");
    }
    m.get("mtp", c.mtp);
    m.get("backend", c.backend);
    m.done();
    c.init = resolve(c.init, base_dir);
  }
  {
    Section d = top.sub("data");
    d.get("train", c.train_data);
    d.get("val", c.val_data);
    d.get("seq_len", c.seq_len);
    d.get("batch", c.batch);
    d.get("accumulate", c.accumulate);
    d.get("seed", c.data_seed);
    d.get("val_permille", c.val_permille);
    d.get("overfit", c.overfit);
    d.done();
    for (auto& p : c.train_data) p = resolve(p, base_dir);
    for (auto& p : c.val_data) p = resolve(p, base_dir);
  }
  {
    Section o = top.sub("optimizer");
    o.get("steps", c.steps);
    o.get("schedule", c.schedule.kind);
    o.get("lr", c.schedule.lr);
    c.schedule.min_lr = c.schedule.lr * 0.1;
    o.get("min_lr", c.schedule.min_lr);
    o.get("warmup", c.schedule.warmup);
    o.get("decay_frac", c.schedule.decay_frac);
    o.get("beta1", c.adamw.beta1);
    o.get("beta2", c.adamw.beta2);
    o.get("eps", c.adamw.eps);
    o.get("weight_decay", c.adamw.weight_decay);
    o.get("clip", c.adamw.clip);
    o.get("freeze", c.freeze);
    o.done();
  }
  {
    Section l = top.sub("loss");
    l.get("attention", c.attention);
    l.get("mtp_weight", c.mtp_weight);
    l.get("balance_alpha", c.balance_alpha);
    l.get("bias_gamma", c.bias_gamma);
    l.get("indexer_kl", c.indexer_kl);
    l.get("lm", c.lm);
    l.done();
  }
  {
    Section r = top.sub("run");
    r.get("out", c.out);
    r.get("log_every", c.log_every);
    r.get("recompute", c.recompute);
    r.get("eval_every", c.eval_every);
    r.get("eval_batches", c.eval_batches);
    r.get("checkpoint_every", c.checkpoint_every);
    r.get("keep_checkpoints", c.keep_checkpoints);
    r.get("export_at_end", c.export_at_end);
    r.get("export_shard_mb", c.export_shard_mb);
    r.get("peak_tflops", c.peak_tflops);
    r.done();
    c.out = resolve(c.out, base_dir);
  }
  top.done();
  c.schedule.total = c.steps;
  // Values.
  DSA_CHECK(c.steps >= 1, "train config: optimizer.steps must be >= 1");
  DSA_CHECK(c.seq_len >= 2 && c.batch >= 1 && c.accumulate >= 1,
            "train config: need data.seq_len >= 2, data.batch >= 1, data.accumulate >= 1");
  DSA_CHECK(c.attention == "dense" || c.attention == "sparse", "train config: loss.attention must be dense or sparse");
  DSA_CHECK(c.mtp_weight >= 0 && c.balance_alpha >= 0 && c.bias_gamma >= 0, "train config: loss weights must be >= 0");
  DSA_CHECK(c.mtp || c.mtp_weight == 0, "train config: loss.mtp_weight > 0 needs model.mtp");
  DSA_CHECK(c.indexer_kl >= 0, "train config: loss.indexer_kl must be >= 0");
  DSA_CHECK(c.lm || c.indexer_kl > 0, "train config: loss.lm false trains nothing unless loss.indexer_kl > 0");
  DSA_CHECK(c.log_every >= 1 && c.eval_every >= 0 && c.eval_batches >= 1 && c.checkpoint_every >= 0 &&
                c.keep_checkpoints >= 1 && c.export_shard_mb >= 1,
            "train config: run.* intervals must be >= 0 (counts >= 1)");
  DSA_CHECK(c.val_permille <= 1000, "train config: data.val_permille must be <= 1000");
  DSA_CHECK(!c.train_data.empty(), "train config: data.train lists no shard files");
  DSA_CHECK(c.adamw.clip >= 0, "train config: optimizer.clip must be >= 0 (0 = off)");
  c.schedule.validate();
  return c;
}

TrainConfig load_train_config(const std::string& path) {
  std::ifstream f(path);
  DSA_CHECK(f.good(), "cannot read train config {}", path);
  json j;
  try {
    j = json::parse(f, nullptr, true, /*ignore_comments=*/true);
  } catch (const json::exception& e) {
    DSA_FAIL("train config {}: not valid JSON ({})", path, e.what());
  }
  TrainConfig c = parse_train_config(j, std::filesystem::path(path).parent_path().string());
  c.source = path;
  return c;
}

json to_json(const TrainConfig& c) {
  return json{
      {"model", {{"init", c.init}, {"preset", c.preset}, {"seed", c.init_seed}, {"config", c.model_overrides},
                 {"mtp", c.mtp}, {"backend", c.backend}}},
      {"data", {{"train", c.train_data}, {"val", c.val_data}, {"seq_len", c.seq_len}, {"batch", c.batch},
                {"accumulate", c.accumulate}, {"seed", c.data_seed}, {"val_permille", c.val_permille},
                {"overfit", c.overfit}}},
      {"optimizer", {{"steps", c.steps}, {"schedule", c.schedule.kind}, {"lr", c.schedule.lr},
                     {"min_lr", c.schedule.min_lr}, {"warmup", c.schedule.warmup},
                     {"decay_frac", c.schedule.decay_frac}, {"beta1", c.adamw.beta1}, {"beta2", c.adamw.beta2},
                     {"eps", c.adamw.eps}, {"weight_decay", c.adamw.weight_decay}, {"clip", c.adamw.clip},
                     {"freeze", c.freeze}}},
      {"loss", {{"attention", c.attention}, {"mtp_weight", c.mtp_weight}, {"balance_alpha", c.balance_alpha},
                {"bias_gamma", c.bias_gamma}, {"indexer_kl", c.indexer_kl}, {"lm", c.lm}}},
      {"run", {{"out", c.out}, {"log_every", c.log_every}, {"eval_every", c.eval_every},
               {"eval_batches", c.eval_batches}, {"checkpoint_every", c.checkpoint_every},
               {"keep_checkpoints", c.keep_checkpoints}, {"export_at_end", c.export_at_end},
               {"export_shard_mb", c.export_shard_mb}, {"peak_tflops", c.peak_tflops}, {"recompute", c.recompute}}},
  };
}

}  // namespace dsa::train
