// `dsa rl`: post-training (src/rl, docs/rl.md). `dsa rl sft-data` writes the cold-start SFT shard
// from the environments' gold episodes; `dsa rl grpo` runs GRPO with V3.2's stabilisers.
#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include "app/commands.h"
#include "app/reporting.h"
#include "env/synth.h"
#include "rl/run.h"
#include "rl/sft_data.h"
#include "text/chat_input.h"
#ifdef DSA_HAVE_CUDA
#include "ops/cuda/cuda_ops.h"
#endif

namespace dsa::app {

void add_rl_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("rl", "Post-training: SFT data, GRPO (docs/rl.md)");
  cmd->require_subcommand(1);
  struct Args {
    std::string env_file, out, tokenizer;
    std::vector<std::string> modes = {"thinking", "chat"};
    env::SynthOptions synth;
    rl::SftDataOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sd = cmd->add_subcommand(
      "sft-data", "Cold-start SFT shard: gold episodes of the environments' tasks in the V3.2 chat format, loss on assistant tokens");
  sd->add_option("--env", a->env_file, "Spec file (.json or .jsonl; default: synthesized from --seed)");
  sd->add_option("--seed", a->synth.seed, "Seed when synthesizing");
  sd->add_option("-o,--out", a->out, "Output shard")->required();
  sd->add_option("--tokenizer", a->tokenizer, "tokenizer.json (default: $DSA_TOKENIZER or third_party/tokenizer)");
  sd->add_option("--modes", a->modes, "thinking, chat or both (comma-separated)")->delimiter(',');
  sd->add_option("--split", a->opt.split, "Tasks of this split (train | heldout | all)");
  sd->add_option("--threads", a->opt.threads, "Episode threads")->check(CLI::Range(1, 256));
  sd->callback([a] {
    reporting("rl sft-data", [&] {
      a->opt.modes.clear();
      for (const std::string& m : a->modes) {
        DSA_CHECK(m == "thinking" || m == "chat", "--modes: unknown mode \"{}\" (thinking, chat)", m);
        a->opt.modes.push_back(m == "thinking");
      }
      if (a->opt.split == "all") a->opt.split.clear();
      const std::vector<env::EnvSpec> specs = a->env_file.empty() ? env::synthesize(a->synth) : env::load_specs(a->env_file);
      const std::vector<env::TaskRef> tasks = env::prepare_tasks(specs);
      const text::Tokenizer tok =
          text::Tokenizer::from_file(a->tokenizer.empty() ? text::default_tokenizer_path() : a->tokenizer);
      const rl::SftDataStats st = rl::write_sft_shard(tasks, tok, a->out, a->opt);
      fmt::print("{}: {} documents from {} tasks ({} episodes, {} gold replays failed), {} tokens, {} on assistant turns ({:.1f} %)\n",
                 a->out, st.documents, st.tasks, st.episodes, st.skipped, st.tokens, st.assistant_tokens,
                 100.0 * double(st.assistant_tokens) / double(std::max<int64_t>(st.tokens, 1)));
      for (const auto& [d, n] : st.by_domain) fmt::print("  {:<14} {}\n", d, n);
    });
  });

  struct GArgs {
    rl::GrpoRunConfig c;
    bool k3 = false, no_opsm = false, no_kr = false, no_ksm = false, no_check = false, invariant = false, no_export = false;
  };
  auto g = std::make_shared<GArgs>();
  g->c.rollout.sampling.top_p = 0.95f;
  g->c.rollout.max_tokens = 8;
  g->c.grpo.minibatches = 2;
  g->c.grpo.beta = 0.001;
  g->c.engine.max_batch = 16;
  g->c.engine.page_size = 16;
  g->c.engine.kv_pages = 256;
  g->c.engine.prewarm_kv = false;
  g->c.engine.absorbed_prefill = true;
  rl::GrpoRunConfig& c = g->c;
  CLI::App* gr = cmd->add_subcommand("grpo", "GRPO on the engine's own rollouts (docs/rl.md §6)");
  gr->add_option("--init,-m", c.init, "V3.2-layout checkpoint to start from (default: random init of --preset)");
  gr->add_option("--preset", c.preset, "Random-init preset (micro, tiny, demo, ...)");
  gr->add_option("--init-seed", c.init_seed, "Random-init seed");
  gr->add_option("--backend", c.backend, "ref | cpu | cuda");
  gr->add_option("--task", c.task, "Verifiable task: mod4 (reward = share of sampled ids divisible by 4) or env (the environments' tasks through the agent loop)");
  gr->add_option("--env", c.env_file, "--task env: spec file (default: synthesized from --env-seed)");
  gr->add_option("--env-seed", c.env_seed, "--task env: synthesizer seed");
  gr->add_option("--tokenizer", c.tokenizer, "--task env: tokenizer.json (default: $DSA_TOKENIZER or third_party/tokenizer)");
  gr->add_option("--max-turns", c.agent.max_turns, "--task env: assistant turns per episode")->check(CLI::Range(1, 1000));
  gr->add_option("--max-turn-tokens", c.agent.max_turn_tokens, "--task env: sampled ids per turn")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  gr->add_option("--episode-tokens", c.agent.max_tokens, "--task env: sampled ids per episode")->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  gr->add_option("--format-reward", c.format_reward, "--task env: reward for ending with a well-formed answer");
  gr->add_option("--length-penalty", c.length_penalty, "--task env: reward minus this x sampled ids / --episode-tokens");
  gr->add_option("--steps", c.steps, "GRPO steps (rollout batch + updates)")->check(CLI::Range(1, 1000000));
  gr->add_option("--prompts", c.prompts, "Prompts per step")->check(CLI::Range(1, 4096));
  gr->add_option("--prompt-len", c.prompt_len, "Ids of the shortest prompt (prompt i has 3 i more)")->check(CLI::Range(1, 100000));
  gr->add_option("--group", c.rollout.group_size, "Samples per prompt (G)")->check(CLI::Range(1, 1024));
  gr->add_option("--max-tokens", c.rollout.max_tokens, "Sampled ids per sample at most")->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  gr->add_option("--temperature", c.rollout.sampling.temperature, "Sampling temperature (> 0)")->check(CLI::Range(1e-3f, 10.0f));
  gr->add_option("--top-p", c.rollout.sampling.top_p, "Nucleus mass (1 = off)")->check(CLI::Range(1e-6f, 1.0f));
  gr->add_option("--top-k", c.rollout.sampling.top_k, "Top-k (0 = off)")->check(CLI::Range(int64_t(0), int64_t(1) << 31));
  gr->add_option("--seed", c.seed, "Prompt and sampling seed");
  gr->add_option("--lr", c.lr, "AdamW learning rate (constant)")->check(CLI::Range(0.0, 10.0));
  gr->add_option("--clip", c.grpo.clip, "ε of the clipped ratio")->check(CLI::Range(1e-6, 10.0));
  gr->add_option("--beta", c.grpo.beta, "β of the KL term against the initial policy")->check(CLI::Range(0.0, 100.0));
  gr->add_flag("--k3", g->k3, "Plain K3 instead of the unbiased KL estimate");
  gr->add_flag("--no-opsm", g->no_opsm, "No off-policy sequence masking");
  gr->add_option("--opsm-delta", c.grpo.opsm_delta, "δ of OPSM");
  gr->add_flag("--no-keep-routing", g->no_kr, "The trainer routes on its own (no replay of the engine's experts)");
  gr->add_flag("--no-keep-sampling-mask", g->no_ksm, "Full-vocabulary log-probs (no renormalisation over the kept sets)");
  gr->add_option("--minibatches", c.grpo.minibatches, "Optimiser updates per rollout batch")->check(CLI::Range(1, 4096));
  gr->add_flag("--no-mismatch-check", g->no_check, "Skip the rollout/trainer log-prob comparison before each step");
  gr->add_flag("--batch-invariant", g->invariant, "CUDA: batch-invariant kernels (rollout and trainer log-probs equal)");
  gr->add_option("--page-size", c.engine.page_size, "Engine: KV page size (tokens)")->check(CLI::Range(int64_t(1), int64_t(4096)));
  gr->add_option("--max-batch", c.engine.max_batch, "Engine: sequences decoded together")->check(CLI::Range(int64_t(1), int64_t(4096)));
  gr->add_option("--freeze", c.freeze, "Parameter regexes left alone (default: indexers and the MTP block)");
  gr->add_option("--out,-o", c.out, "Run directory: metrics.jsonl, metrics.csv, reward.png, export/");
  gr->add_flag("--no-export", g->no_export, "No export at the end");
  gr->callback([g] {
    reporting("rl grpo", [&] {
      rl::GrpoRunConfig c = g->c;
      c.grpo.unbiased_kl = !g->k3;
      c.grpo.opsm = !g->no_opsm;
      c.grpo.keep_routing = !g->no_kr;
      c.grpo.keep_sampling_mask = !g->no_ksm;
      c.grpo.check_mismatch = !g->no_check;
      c.export_at_end = !g->no_export;
      if (g->invariant) {
#ifdef DSA_HAVE_CUDA
        ops::cuda::set_batch_invariant(true);
#else
        DSA_CHECK(c.backend != "cuda", "--batch-invariant: this build has no CUDA backend");
#endif
      }
      const rl::GrpoRunSummary s = rl::run_grpo(c, [](const std::string& m) { fmt::print(stderr, "[dsa rl] {}\n", m); });
      fmt::print("{} steps in {:.1f} s ({:.1f} s rollouts, {:.1f} s updates): reward {:.3f} -> {:.3f}; "
                 "rollout/trainer max |dlogp| {:.3g}\n",
                 s.steps, s.seconds, s.rollout_seconds, s.update_seconds, s.first_reward, s.last_reward, s.mismatch_max);
      if (s.dropped) fmt::print("{} episodes dropped (a turn did not extend the history token for token)\n", s.dropped);
      fmt::print("metrics {0}/metrics.csv, curve {0}/reward.png{1}\n", c.out, s.export_dir.empty() ? "" : ", export " + s.export_dir);
    });
  });
}

}  // namespace dsa::app
