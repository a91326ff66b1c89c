// A GRPO run (rl/run.h).
#include "rl/run.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

#include "base/error.h"
#include "env/synth.h"
#include "rl/episodes.h"
#include "text/chat_input.h"
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/export.h"
#include "model/make_model.h"
#include "ops/backends.h"
#include "train/plot.h"

namespace dsa::rl {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void score_mod4(Sample& s) {
  int hit = 0;
  for (int32_t t : s.tokens) hit += t % 4 == 0;
  s.reward = double(hit) / double(s.tokens.size());
  s.pass = s.reward >= 0.5;
}

}  // namespace

GrpoRunSummary run_grpo(const GrpoRunConfig& cfg, const std::function<void(const std::string&)>& log) {
  DSA_CHECK(cfg.steps >= 1 && cfg.prompts >= 1 && cfg.prompt_len >= 1, "rl: steps, prompts and prompt_len must be >= 1");
  DSA_CHECK(cfg.task == "mod4" || cfg.task == "env", "rl: unknown task \"{}\" (known: mod4, env)", cfg.task);
  const ops::OpTable& ops = ops::select_backend(cfg.backend);
  DSA_CHECK(ops.grad, "the {} backend has no training ops", ops.name);
  fs::create_directories(cfg.out);
  std::string init = cfg.init;
  if (init.empty()) {
    init = (fs::path(cfg.out) / "init").string();
    MakeModelOptions mo;
    mo.preset = cfg.preset;
    mo.out_dir = init;
    mo.seed = cfg.init_seed;
    make_model(mo);
  }
  const ModelConfig mc = ModelConfig::load(init + "/config.json");
  std::unique_ptr<Model> model = Model::create(mc, ops);
  Params params(model->backend(), mc, true);
  params.load(Checkpoint::open(init));
  model->set_weights(params.forward_weights());
  std::vector<std::string> freeze = cfg.freeze;
  if (freeze.size() == 1 && freeze[0] == "DEFAULT") {
    freeze = {".*\\.indexer\\..*"};
    if (params.has_mtp()) freeze.push_back(fmt::format("model\\.layers\\.{}\\..*", mc.num_hidden_layers));
  }
  train::AdamW adam(params, cfg.adam, freeze);
  Grpo grpo(*model, params, adam, cfg.grpo);
  log(fmt::format("model {}: {} layers, hidden {}, vocab {}, {:.2f}M parameters ({:.2f}M trained), backend {}", init,
                  mc.num_hidden_layers, mc.hidden_size, mc.vocab_size, params.count() / 1e6,
                  adam.trainable_count() / 1e6, ops.name));

  std::mt19937_64 rng(cfg.seed);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; cfg.task == "mod4" && i < cfg.prompts; ++i) {
    std::vector<int32_t> p;
    for (int j = 0; j < cfg.prompt_len + 3 * i; ++j) p.push_back(int32_t(rng() % uint64_t(mc.vocab_size)));
    prompts.push_back(p);
  }
  // env: the tasks (their refs point into `specs`), the tokenizer and the agent loop's policy.
  std::vector<env::EnvSpec> specs;
  std::vector<env::TaskRef> tasks;
  std::unique_ptr<text::Tokenizer> tok;
  if (cfg.task == "env") {
    env::SynthOptions so;
    so.seed = cfg.env_seed;
    specs = cfg.env_file.empty() ? env::synthesize(so) : env::load_specs(cfg.env_file);
    for (const env::TaskRef& t : env::prepare_tasks(specs))
      if (t.task->split == "train") tasks.push_back(t);
    DSA_CHECK(!tasks.empty(), "rl: no train-split task in the environments");
    tok = std::make_unique<text::Tokenizer>(
        text::Tokenizer::from_file(cfg.tokenizer.empty() ? text::default_tokenizer_path() : cfg.tokenizer));
    DSA_CHECK(mc.vocab_size >= tok->id_limit(), "rl: the model's vocabulary ({}) is smaller than the tokenizer's ({})",
              mc.vocab_size, tok->id_limit());
    log(fmt::format("{} train tasks from {}", tasks.size(), cfg.env_file.empty() ? "the synthesizer" : cfg.env_file));
  }

  std::ofstream jl(fs::path(cfg.out) / "metrics.jsonl"), csv(fs::path(cfg.out) / "metrics.csv");
  DSA_CHECK(jl.good() && csv.good(), "rl: cannot write metrics under {}", cfg.out);
  csv << "step,reward,pass_rate,loss,kl,masked,clipped,entropy,mean_length,grad_norm,mismatch_max,mismatch_mean,"
         "rollout_s,update_s\n";
  GrpoRunSummary sum;
  std::vector<double> rewards;
  train::Series curve{"reward", {}, {}};
  const auto t0 = Clock::now();
  {
    Engine engine(*model, cfg.engine);
    std::unique_ptr<env::EnginePolicy> policy;
    if (tok) {
      SamplingParams sp = cfg.rollout.sampling;
      sp.seed = cfg.seed;
      policy = std::make_unique<env::EnginePolicy>(engine, *tok, int32_t(mc.eos_token_id), sp, true);
    }
    for (int step = 0; step < cfg.steps; ++step) {
      const auto tr = Clock::now();
      std::vector<Sample> batch;
      if (cfg.task == "mod4") {
        RolloutOptions ro = cfg.rollout;
        ro.sampling.seed = cfg.rollout.sampling.seed + uint64_t(step) * 1000003u;
        batch = sample_groups(engine, prompts, ro);
        for (Sample& s : batch) score_mod4(s);
      } else {
        std::vector<env::TaskRef> sel;
        for (int i = 0; i < cfg.prompts; ++i) sel.push_back(tasks[size_t(step * cfg.prompts + i) % tasks.size()]);
        const int G = cfg.rollout.group_size;
        const std::vector<env::Episode> eps =
            env::run_episodes(sel, G, *policy, cfg.agent, std::min(64, cfg.prompts * G));
        for (size_t e = 0; e < eps.size(); ++e) {
          Sample s;
          if (!episode_sample(eps[e], s)) {
            ++sum.dropped;
            continue;
          }
          s.group = int64_t(step) * cfg.prompts + int64_t(e / size_t(G));
          s.pass = eps[e].pass;
          const int64_t sampled = int64_t(std::count(s.loss_mask.begin(), s.loss_mask.end(), 1));
          s.reward = (s.pass ? 1.0 : 0.0) + (eps[e].end == "answer" ? cfg.format_reward : 0.0) -
                     cfg.length_penalty * double(sampled) / double(std::max<int64_t>(cfg.agent.max_tokens, 1));
          batch.push_back(std::move(s));
        }
      }
      const double rs = since(tr);
      if (batch.empty()) {
        log(fmt::format("step {:3d}  no sample (every episode dropped)", step));
        continue;
      }
      const auto tu = Clock::now();
      const GrpoStats st = grpo.update(batch, cfg.lr);
      engine.flush_prefix_cache();  // cached prompt rows came from the old weights
      const double us = since(tu);
      sum.rollout_seconds += rs;
      sum.update_seconds += us;
      sum.mismatch_max = std::max(sum.mismatch_max, st.mismatch_max);
      rewards.push_back(st.reward);
      curve.x.push_back(step);
      curve.y.push_back(st.reward);
      const nlohmann::ordered_json j = {{"step", step},       {"reward", st.reward},       {"pass_rate", st.pass_rate},
                      {"loss", st.loss},    {"kl", st.kl},               {"masked", st.masked},
                      {"clipped", st.clipped}, {"entropy", st.entropy}, {"mean_length", st.mean_length},
                      {"grad_norm", st.grad_norm}, {"mismatch_max", st.mismatch_max},
                      {"mismatch_mean", st.mismatch_mean}, {"rollout_s", rs}, {"update_s", us}};
      jl << j.dump() << "\n";
      csv << fmt::format("{},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.6g},{:.4f},{:.4f}\n",
                         step, st.reward, st.pass_rate, st.loss, st.kl, st.masked, st.clipped, st.entropy,
                         st.mean_length, st.grad_norm, st.mismatch_max, st.mismatch_mean, rs, us);
      jl.flush();
      csv.flush();
      log(fmt::format("step {:3d}  reward {:.3f}  pass {:.2f}  kl {:.2e}  masked {:.2f}  clipped {:.3f}  entropy {:.2f}  "
                      "len {:.1f}  mismatch {:.2g}  ({:.2f} s rollouts, {:.2f} s update)",
                      step, st.reward, st.pass_rate, st.kl, st.masked, st.clipped, st.entropy, st.mean_length,
                      st.mismatch_max, rs, us));
    }
  }
  sum.seconds = since(t0);
  sum.steps = cfg.steps;
  const size_t n = rewards.size(), k = std::min<size_t>(2, n);
  for (size_t i = 0; i < k; ++i) {
    sum.first_reward += rewards[i] / double(k);
    sum.last_reward += rewards[n - 1 - i] / double(k);
  }
  train::Chart ch;
  ch.title = fmt::format("GRPO on {} ({})", cfg.task, cfg.init.empty() ? cfg.preset + " preset" : cfg.init);
  ch.x_label = "step";
  ch.y_label = "mean reward";
  ch.series = {curve};
  train::write_png_chart((fs::path(cfg.out) / "reward.png").string(), ch);
  if (cfg.export_at_end) {
    sum.export_dir = (fs::path(cfg.out) / "export").string();
    export_checkpoint(params, sum.export_dir, int64_t(15) << 20, {{"producer", "dsa rl grpo"}});
  }
  return sum;
}

}  // namespace dsa::rl
