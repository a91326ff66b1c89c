// `dsa rl`: post-training (src/rl, docs/rl.md). `dsa rl sft-data` writes the cold-start SFT shard
// from the environments' gold episodes.
#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include "app/commands.h"
#include "app/reporting.h"
#include "env/synth.h"
#include "rl/sft_data.h"
#include "text/chat_input.h"

namespace dsa::app {

void add_rl_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("rl", "Post-training: SFT data, GRPO (docs/rl.md)");
  cmd->require_subcommand(1);
  struct Args {
    std::string env_file, out, tokenizer, modes = "thinking,chat";
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
  sd->add_option("--modes", a->modes, "thinking, chat or both (comma-separated)");
  sd->add_option("--split", a->opt.split, "Tasks of this split (train | heldout | all)");
  sd->add_option("--threads", a->opt.threads, "Episode threads")->check(CLI::Range(1, 256));
  sd->callback([a] {
    reporting("rl sft-data", [&] {
      a->opt.modes.clear();
      std::vector<std::string> modes;
      for (size_t b = 0; b <= a->modes.size();) {
        const size_t e = std::min(a->modes.find(',', b), a->modes.size());
        modes.push_back(a->modes.substr(b, e - b));
        b = e + 1;
      }
      for (const std::string& m : modes) {
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
}

}  // namespace dsa::app
