// `dsa agent` (one episode, shown live) and `dsa eval` (pass@1 / pass@k per domain and level).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <unistd.h>

#include "app/reporting.h"
#include "app/commands.h"
#include "app/env_policies.h"
#include "base/error.h"
#include "env/agent.h"
#include "env/synth.h"
#include "train/plot.h"

namespace dsa::app {
namespace {

using Json = text::OrderedJson;

struct AgentArgs {
  std::string model, tokenizer, backend, env_file, endpoint, api_model = "default", policy = "model", json_out, plot_out, select_out;
  std::string records_out;
  std::string task, split = "all";
  int spec_index = 0, k = 1, attempts = 0, threads = 4;
  env::AgentOptions opt;
  SamplingParams sampling;
};

void add_common(CLI::App* c, AgentArgs& a) {
  c->add_option("-m,--model", a.model, "Model directory (policy model)");
  c->add_option("--tokenizer", a.tokenizer, "tokenizer.json (default: $DSA_TOKENIZER, third_party/tokenizer, or the model dir)");
  c->add_option("--backend", a.backend, "Op backend");
  c->add_option("--policy", a.policy, "model (default), openai (--endpoint), gold (replay the gold solution), faulty")
      ->check(CLI::IsMember({"model", "openai", "gold", "faulty"}));
  c->add_option("--endpoint", a.endpoint, "OpenAI-compatible base URL (http://host:port/v1) for --policy openai");
  c->add_option("--api-model", a.api_model, "model name sent to the endpoint");
  c->add_flag("--thinking", a.opt.thinking, "V3.2 thinking mode");
  c->add_option("--max-turns", a.opt.max_turns, "Assistant turns per episode")->check(CLI::Range(1, 1000));
  c->add_option("--max-tokens", a.opt.max_tokens, "Generated tokens per episode")->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  c->add_option("--max-turn-tokens", a.opt.max_turn_tokens, "Generated tokens per turn")->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  c->add_option("--temperature", a.sampling.temperature, "0 = greedy");
  c->add_option("--seed", a.sampling.seed, "Sampling seed");
  c->add_option("--top-k", a.sampling.top_k, "Sample among the k most likely ids (0 = off)")->check(CLI::Range(int64_t(0), int64_t(1) << 31));
  c->add_option("--top-p", a.sampling.top_p, "Nucleus sampling mass (1 = off)")->check(CLI::Range(1e-6f, 1.0f));
  c->add_option("--records", a.records_out,
                "Write what RL needs of each model turn as JSONL, one line per episode: prompt and sampled ids, "
                "log-probs, sampling masks, experts per position (--policy model)");
}

// One JSONL line per episode: its outcome and the turn records (keep-routing, keep-sampling-mask).
void write_records(const std::string& path, const std::vector<env::Episode>& eps, int attempts) {
  std::ofstream f(path);
  DSA_CHECK(f.good(), "cannot write {}", path);
  for (size_t i = 0; i < eps.size(); ++i) {
    const env::Episode& e = eps[i];
    Json turns = Json::array();
    for (const auto& r : e.records) turns.push_back(r.to_json());
    f << Json{{"task", e.task_id}, {"attempt", int(i % size_t(attempts))}, {"pass", e.pass}, {"end", e.end},
              {"turns", std::move(turns)}}.dump() << "\n";
  }
  DSA_CHECK(f.good(), "cannot write {}", path);
}

struct PolicyHolder {
  std::unique_ptr<LocalModel> local;
  std::unique_ptr<env::Policy> policy;
};

PolicyHolder make_policy(const AgentArgs& a, int batch) {
  PolicyHolder h;
  DSA_CHECK(a.records_out.empty() || a.policy == "model", "--records needs --policy model (token access)");
  if (a.policy == "gold") {
    h.policy = std::make_unique<env::GoldPolicy>();
  } else if (a.policy == "faulty") {
    h.policy = std::make_unique<env::FaultyPolicy>(env::FaultyPolicy::kMixed);
  } else if (a.policy == "openai") {
    DSA_CHECK(!a.endpoint.empty(), "--policy openai needs --endpoint http://host:port/v1");
    h.policy = std::make_unique<OpenAIPolicy>(EndpointOptions{a.endpoint, a.api_model, "", a.sampling.temperature, a.sampling.seed});
  } else {
    DSA_CHECK(!a.model.empty(), "--policy model needs -m MODEL (or use --policy gold|openai)");
    h.local = LocalModel::load(a.model, a.tokenizer, a.backend, batch);
    h.policy = std::make_unique<env::EnginePolicy>(*h.local->engine, *h.local->tok, h.local->eos(), a.sampling,
                                                   !a.records_out.empty());
  }
  return h;
}


// Unbiased pass@k from n attempts with c passes (Chen et al. 2021).
double pass_at_k(int n, int c, int k) {
  if (n - c < k) return 1.0;
  double p = 1.0;
  for (int i = n - c + 1; i <= n; ++i) p *= 1.0 - double(k) / double(i);
  return 1.0 - p;
}

}  // namespace

void add_agent_command(CLI::App& app) {
  auto a = std::make_shared<AgentArgs>();
  CLI::App* c = app.add_subcommand("agent", "Run one agentic episode, showing reasoning, tool calls and results live");
  add_common(c, *a);
  c->add_option("--env", a->env_file, "Environment spec (.json or .jsonl)")->required();
  c->add_option("--spec", a->spec_index, "Which spec of a .jsonl file (0-based)");
  c->add_option("--task", a->task, "Task index within the spec, or task id (default 0)");
  c->add_option("--json", a->json_out, "Write the episode (with messages) as JSON");
  c->callback([a] {
    reporting("agent", [&] {
      const auto specs = env::load_specs(a->env_file);
      DSA_CHECK(a->spec_index >= 0 && size_t(a->spec_index) < specs.size(), "--spec {}: the file has {} spec(s)", a->spec_index, specs.size());
      std::vector<env::EnvSpec> one = {specs[size_t(a->spec_index)]};
      const auto tasks = env::prepare_tasks(one);
      DSA_CHECK(!tasks.empty(), "the spec has no tasks");
      size_t idx = 0;
      if (!a->task.empty()) {
        bool found = false;
        for (size_t i = 0; i < tasks.size(); ++i)
          if (tasks[i].task->id == a->task) idx = i, found = true;
        if (!found) {
          DSA_CHECK(a->task.find_first_not_of("0123456789") == std::string::npos, "--task {}: no task with that id", a->task);
          idx = size_t(std::stoull(a->task));
          DSA_CHECK(idx < tasks.size(), "--task {}: the spec has {} task(s)", idx, tasks.size());
        }
      }
      PolicyHolder h = make_policy(*a, 1);
      const bool tty = isatty(1);
      auto col = [&](const char* c) { return tty ? std::string(c) : std::string(); };
      std::printf("%s[task %s]%s %s\n", col("\x1b[1m").c_str(), tasks[idx].task->id.c_str(), col("\x1b[0m").c_str(),
                  tasks[idx].task->instruction.c_str());
      auto on = [&](const std::string& kind, const std::string& text) {
        const char* c = kind == "reasoning" ? "\x1b[2m" : kind == "call" ? "\x1b[36m" : kind == "result" ? "\x1b[33m"
                        : kind == "error" ? "\x1b[31m" : kind == "end" ? "\x1b[1m" : "";
        std::printf("%s[%s]%s %s\n", col(c).c_str(), kind.c_str(), col("\x1b[0m").c_str(), text.c_str());
        std::fflush(stdout);
      };
      const env::Episode ep = env::run_episode(tasks[idx], *h.policy, a->opt, on);
      for (const auto& f : ep.failures) std::printf("  - %s\n", f.c_str());
      if (!a->json_out.empty()) {
        std::ofstream f(a->json_out);
        f << ep.to_json(true).dump(1) << "\n";
      }
      if (!a->records_out.empty()) write_records(a->records_out, {ep}, 1);
      if (h.local) h.local->engine->shutdown();
    });
  });
}

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<AgentArgs>();
  CLI::App* c = app.add_subcommand("eval", "pass@1 / pass@k of a policy on a task file, per domain and difficulty");
  add_common(c, *a);
  c->add_option("--tasks", a->env_file, "Spec file (.json or .jsonl, e.g. from dsa env synth)")->required();
  c->add_option("-k", a->k, "k of pass@k")->check(CLI::Range(1, 1000));
  c->add_option("--attempts", a->attempts, "Attempts per task (default k)")->check(CLI::Range(1, 10000));
  c->add_option("--split", a->split, "train, heldout or all")->check(CLI::IsMember({"train", "heldout", "all"}));
  c->add_option("--threads", a->threads, "Concurrent episodes (batched on the engine)")->check(CLI::Range(1, 1024));
  c->add_option("--json", a->json_out, "Write results (per task and aggregates) as JSON");
  c->add_option("--plot", a->plot_out, "Write pass@1 per level and domain as a PNG chart");
  c->add_option("--select-out", a->select_out, "Write the specs restricted to tasks with pass@k > 0 (RL task selection)");
  c->callback([a] {
    reporting("eval", [&] {
      auto specs = env::load_specs(a->env_file);
      if (a->split != "all")
        for (auto& s : specs) std::erase_if(s.tasks, [&](const env::TaskSpec& t) { return t.split != a->split; });
      const auto tasks = env::prepare_tasks(specs);
      DSA_CHECK(!tasks.empty(), "no tasks in {} (split {})", a->env_file, a->split);
      const int n = a->attempts ? a->attempts : a->k;
      DSA_CHECK(n >= a->k, "--attempts must be at least k");
      PolicyHolder h = make_policy(*a, a->threads);
      const bool tty = isatty(2);
      const auto eps = env::run_episodes(tasks, n, *h.policy, a->opt, a->threads, [&](size_t d, size_t total) {
        const int w = 40, f = int(double(w) * double(d) / double(total));
        std::fprintf(stderr, "%s[%s%s] %zu/%zu episodes%s", tty ? "\r" : "", std::string(size_t(f), '#').c_str(),
                     std::string(size_t(w - f), '.').c_str(), d, total, tty ? "" : "\n");
      });
      if (tty) std::fprintf(stderr, "\n");
      if (!a->records_out.empty()) write_records(a->records_out, eps, n);
      struct Agg { double p1 = 0, pk = 0; int tasks = 0; };
      std::map<std::string, std::map<int, Agg>> agg;
      Json per_task = Json::array();
      std::map<const env::TaskSpec*, bool> solvable;
      for (size_t i = 0; i < tasks.size(); ++i) {
        int passes = 0;
        for (int j = 0; j < n; ++j) passes += eps[i * size_t(n) + size_t(j)].pass;
        const double p1 = double(passes) / n, pk = pass_at_k(n, passes, a->k);
        const env::Episode& e0 = eps[i * size_t(n)];
        for (const char* key : {"", "all"}) {
          Agg& g = agg[*key ? key : e0.domain][tasks[i].task->difficulty];
          g.p1 += p1, g.pk += pk, ++g.tasks;
          Agg& t = agg[*key ? key : e0.domain][0];
          t.p1 += p1, t.pk += pk, ++t.tasks;
        }
        solvable[tasks[i].task] = passes > 0;
        Json tj = e0.to_json(false);
        tj["passes"] = passes;
        tj["attempts"] = n;
        per_task.push_back(tj);
      }
      std::printf("%-12s %-6s %6s %8s %8s\n", "domain", "level", "tasks", "pass@1", fmt::format("pass@{}", a->k).c_str());
      Json summary = Json::object();
      for (auto& [d, lv] : agg)
        for (auto& [l, g] : lv) {
          std::printf("%-12s %-6s %6d %7.1f%% %7.1f%%\n", d.c_str(), l ? std::to_string(l).c_str() : "all", g.tasks,
                      100 * g.p1 / g.tasks, 100 * g.pk / g.tasks);
          summary[d][l ? std::to_string(l) : "all"] = {{"tasks", g.tasks}, {"pass@1", g.p1 / g.tasks}, {fmt::format("pass@{}", a->k), g.pk / g.tasks}};
        }
      if (!a->json_out.empty()) {
        std::ofstream f(a->json_out);
        f << Json{{"k", a->k}, {"attempts", n}, {"split", a->split}, {"policy", a->policy}, {"summary", summary}, {"tasks", per_task}}.dump(1) << "\n";
        DSA_CHECK(f.good(), "cannot write {}", a->json_out);
      }
      if (!a->plot_out.empty()) {
        train::Chart ch;
        ch.title = fmt::format("pass@1 by difficulty ({})", a->policy);
        ch.x_label = "level";
        ch.y_label = "pass@1";
        const std::vector<std::array<uint8_t, 3>> colors = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
                                                            {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207}};
        for (auto& [d, lv] : agg) {
          train::Series s;
          s.name = d;
          s.rgb = colors[ch.series.size() % colors.size()];
          for (auto& [l, g] : lv)
            if (l) s.x.push_back(l), s.y.push_back(g.p1 / g.tasks);
          ch.series.push_back(std::move(s));
        }
        train::write_png_chart(a->plot_out, ch);
      }
      if (!a->select_out.empty()) {
        std::ofstream f(a->select_out);
        size_t kept = 0;
        for (auto s : specs) {
          std::erase_if(s.tasks, [&](const env::TaskSpec& t) {
            for (auto& [p, ok] : solvable)
              if (p->id == t.id && ok) return false;
            return true;
          });
          kept += s.tasks.size();
          if (!s.tasks.empty()) f << text::py_json_dumps(env::spec_to_json(s)) << "\n";
        }
        std::printf("kept %zu task(s) with pass@%d > 0 in %s\n", kept, a->k, a->select_out.c_str());
      }
      if (h.local) h.local->engine->shutdown();
    });
  });
}

}  // namespace dsa::app
