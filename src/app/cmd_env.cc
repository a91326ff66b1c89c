// `dsa env synth|stats|validate|bench`: synthesized agentic environments (src/env/).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>

#include "app/commands.h"
#include "base/error.h"
#include "env/agent.h"
#include "env/sandbox.h"
#include "env/synth.h"
#include "env/verify.h"

namespace dsa::app {
namespace {

struct EnvArgs {
  env::SynthOptions synth;
  std::string out, file, stats_json;
  bool no_worked = false, json = false;
  int threads = 2;
  double seconds = 3;
};

template <class F>
void reporting(const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dsa env %s: error: %s\n", what, e.what());
    throw CLI::RuntimeError(1);
  }
}

void write_jsonl(const std::string& path, const std::vector<env::EnvSpec>& specs) {
  std::ofstream f(path);
  DSA_CHECK(f.good(), "cannot write {}", path);
  for (const auto& s : specs) f << text::py_json_dumps(env::spec_to_json(s)) << "\n";
  DSA_CHECK(f.good(), "write to {} failed", path);
}

}  // namespace

void add_env_command(CLI::App& app) {
  auto a = std::make_shared<EnvArgs>();
  CLI::App* cmd = app.add_subcommand("env", "Agentic environments: synthesize, inspect, validate, benchmark (docs/environments.md)");
  cmd->require_subcommand(1);

  CLI::App* sy = cmd->add_subcommand("synth", "Synthesize validated environments and tasks from a seed (JSONL, one spec per line)");
  sy->add_option("--seed", a->synth.seed, "Seed (same seed, same file)");
  sy->add_option("--out", a->out, "Output .jsonl")->required();
  sy->add_option("--domains", a->synth.domains, "Tool domains (default: all)")->delimiter(',');
  sy->add_option("--envs-per-domain", a->synth.envs_per_domain, "Database instances per domain")->check(CLI::Range(0, 1000));
  sy->add_option("--tasks-per-level", a->synth.tasks_per_level, "Task draws per level and instance")->check(CLI::Range(1, 1000));
  sy->add_option("--scale", a->synth.scale, "Extra rows per generated database")->check(CLI::Range(int64_t(0), int64_t(100000)));
  sy->add_option("--reasoning", a->synth.reasoning, "Reasoning kinds (countdown, arithmetic, sorting, logic; default all)")->delimiter(',');
  sy->add_option("--reasoning-tasks", a->synth.reasoning_tasks, "Tasks per reasoning kind (0 = none)")->check(CLI::Range(0, 100000));
  sy->add_flag("--no-worked", a->no_worked, "Leave out worked reasoning (gold.reasoning)");
  sy->add_option("--heldout-percent", a->synth.heldout_percent, "Held-out share (fixed by instruction hash)")->check(CLI::Range(0, 100));
  sy->add_option("--stats-json", a->stats_json, "Also write the statistics as JSON");
  sy->callback([a] {
    reporting("synth", [&] {
      a->synth.worked_reasoning = !a->no_worked;
      env::SynthStats st;
      const auto specs = env::synthesize(a->synth, &st);
      write_jsonl(a->out, specs);
      size_t n = 0;
      for (const auto& s : specs) n += s.tasks.size();
      std::printf("%s", st.table().c_str());
      for (const auto& r : st.rejected) std::printf("rejected: %s\n", r.c_str());
      std::printf("wrote %zu environments, %zu tasks to %s\n", specs.size(), n, a->out.c_str());
      if (!a->stats_json.empty()) {
        std::ofstream f(a->stats_json);
        f << st.to_json().dump(1) << "\n";
        DSA_CHECK(f.good(), "cannot write {}", a->stats_json);
      }
    });
  });

  CLI::App* st = cmd->add_subcommand("stats", "Environments and tasks per domain and level of a spec file");
  st->add_option("file", a->file, "Spec file (.json or .jsonl)")->required();
  st->add_flag("--json", a->json, "JSON instead of a table");
  st->callback([a] {
    reporting("stats", [&] {
      const auto specs = env::load_specs(a->file);
      const env::SynthStats s = env::spec_stats(specs);
      if (a->json) {
        std::printf("%s\n", s.to_json().dump(1).c_str());
        return;
      }
      size_t train = 0, held = 0, tools = 0;
      for (const auto& e : specs) {
        tools += e.tools.size();
        for (const auto& t : e.tasks) (t.split == "heldout" ? held : train)++;
      }
      std::printf("%s", s.table().c_str());
      std::printf("%zu environments, %zu tools, %zu train + %zu held-out tasks\n", specs.size(), tools, train, held);
    });
  });

  CLI::App* va = cmd->add_subcommand("validate", "Build every database, check every tool, replay and mutation-test every task");
  va->add_option("file", a->file, "Spec file (.json or .jsonl)")->required();
  va->callback([a] {
    reporting("validate", [&] {
      const auto specs = env::load_specs(a->file);
      size_t ok = 0, bad = 0, mutations = 0;
      for (const auto& s : specs) {
        std::shared_ptr<const env::DbImage> img;
        try {
          img = env::build_image(s);
        } catch (const Error& e) {
          std::printf("INVALID %s: %s\n", s.name.c_str(), e.what());
          bad += s.tasks.size();
          continue;
        }
        for (const auto& t : s.tasks) {
          const env::Validation v = env::validate_task(s, img, t);
          mutations += size_t(v.mutations);
          if (v.ok) {
            ++ok;
          } else {
            ++bad;
            std::printf("INVALID %s/%s: %s\n", s.name.c_str(), t.id.c_str(), v.error.c_str());
          }
        }
      }
      std::printf("%zu tasks valid, %zu invalid (%zu mutations rejected by the verifiers)\n", ok, bad, mutations);
      if (bad) throw CLI::RuntimeError(1);
    });
  });

  CLI::App* be = cmd->add_subcommand("bench", "Tool-execution episodes per second (gold replay through encoder, parser and sandbox)");
  be->add_option("--tasks", a->file, "Spec file (default: synthesized from --seed)");
  be->add_option("--seed", a->synth.seed, "Seed when synthesizing");
  be->add_option("--threads", a->threads, "Worker threads")->check(CLI::Range(1, 256));
  be->add_option("--seconds", a->seconds, "Measure for about this long")->check(CLI::Range(0.1, 3600.0));
  be->callback([a] {
    reporting("bench", [&] {
      std::vector<env::EnvSpec> specs;
      if (a->file.empty()) {
        a->synth.reasoning_tasks = 0;
        specs = env::synthesize(a->synth);
      } else {
        specs = env::load_specs(a->file);
      }
      const auto tasks = env::prepare_tasks(specs);
      DSA_CHECK(!tasks.empty(), "no tasks");
      env::GoldPolicy gold;
      env::AgentOptions opt;
      size_t episodes = 0, calls = 0, passed = 0;
      const auto t0 = std::chrono::steady_clock::now();
      double el = 0;
      while (el < a->seconds) {
        const auto eps = env::run_episodes(tasks, 1, gold, opt, a->threads);
        for (const auto& e : eps) episodes++, calls += size_t(e.tool_calls), passed += e.pass;
        el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      std::printf("%zu tasks, %zu episodes in %.2f s on %d thread(s): %.0f episodes/s, %.0f tool calls/s, %.2f ms/episode; %zu/%zu passed\n",
                  tasks.size(), episodes, el, a->threads, double(episodes) / el, double(calls) / el,
                  1000.0 * el * a->threads / double(episodes), passed, episodes);
    });
  });
}

}  // namespace dsa::app
