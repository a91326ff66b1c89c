// `dsa env synth|stats|validate|call|bench`: synthesized agentic environments (src/env/); synth --endpoint runs the
// model-driven synthesizer (env/model_synth.h) over app::OpenAIChatEndpoint.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "app/reporting.h"
#include "app/commands.h"
#include "app/env_policies.h"
#include "base/error.h"
#include "env/agent.h"
#include "env/model_synth.h"
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
  // synth --endpoint: the model-driven synthesizer
  env::ModelSynthOptions model;
  std::string endpoint, api_model = "default", api_key_env, transcript;
  float temperature = 0.7f;
  int64_t max_reply_tokens = 8192;
  // call
  int spec_index = 0;
  std::string task, calls = "[]", answer;
  bool has_answer = false;
};

template <class F>
void reporting(const char* what, F&& f) {
  app::reporting(std::string("env ") + what, f);
}

void write_jsonl(const std::string& path, const std::vector<env::EnvSpec>& specs) {
  std::ofstream f(path);
  DSA_CHECK(f.good(), "cannot write {}", path);
  for (const auto& s : specs) f << text::py_json_dumps(env::spec_to_json(s)) << "\n";
  DSA_CHECK(f.good(), "write to {} failed", path);
}

// Every line of a multi-line text, indented.
std::string indented(const std::string& s, const char* pad) {
  std::string out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out += pad + line + "\n";
  return out;
}

void synth_with_model(const EnvArgs& a) {
  std::string key;
  if (!a.api_key_env.empty()) {
    const char* v = std::getenv(a.api_key_env.c_str());
    DSA_CHECK(v && *v, "--api-key-env {}: the variable is not set", a.api_key_env);
    key = v;
  } else if (const char* v = std::getenv("OPENAI_API_KEY")) {
    key = v;
  }
  OpenAIChatEndpoint ep(EndpointOptions{a.endpoint, a.api_model, key, a.temperature, a.synth.seed}, a.max_reply_tokens);
  std::printf("model synth: %s (model %s), difficulty %d..%d, %d round(s) per level\n", a.endpoint.c_str(), a.api_model.c_str(),
              a.model.start_level, a.model.start_level + a.model.levels - 1, a.model.rounds);
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  const env::ModelSynthResult r = env::synthesize_with_model(ep, a.model, [&](const env::SynthRound& x) {
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (x.ok) std::printf("level %d round %d: valid (%s) [%.1f s]\n", x.level, x.round, x.spec_name.c_str(), el);
    else std::printf("level %d round %d: invalid [%.1f s]\n%s", x.level, x.round, el, indented(x.error, "  ").c_str());
    std::fflush(stdout);
  });
  if (!a.transcript.empty()) {
    std::ofstream f(a.transcript);
    f << r.messages.dump(1) << "\n";
    DSA_CHECK(f.good(), "cannot write {}", a.transcript);
  }
  if (!r.stopped.empty()) std::printf("stopped: %s\n", r.stopped.c_str());
  DSA_CHECK(!r.kept.empty(), "no spec validated; nothing written to {}", a.out);
  write_jsonl(a.out, r.kept);
  size_t n = 0;
  for (const auto& s : r.kept) n += s.tasks.size();
  std::printf("wrote %zu validated environments, %zu tasks to %s (%zu model replies)\n", r.kept.size(), n, a.out.c_str(),
              r.rounds.size());
}

// --calls: a JSON array (or @file) of {"name", "arguments"} or OpenAI tool calls
// ({"function": {"name", "arguments": "<json text>"}}); arguments as an object or JSON text.
env::Json read_calls(const std::string& arg) {
  std::string text = arg;
  if (!arg.empty() && arg[0] == '@') {
    std::ifstream f(arg.substr(1));
    DSA_CHECK(f.good(), "--calls: cannot read {}", arg.substr(1));
    text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  env::Json j;
  try {
    j = text::parse_json_exact(text, 64);
  } catch (const Error& e) {
    DSA_FAIL("--calls: not valid JSON: {}", e.what());
  }
  DSA_CHECK(j.is_array(), "--calls: must be a JSON array of tool calls");
  return j;
}

void call_tools(const EnvArgs& a) {
  const auto specs = env::load_specs(a.file);
  DSA_CHECK(a.spec_index >= 0 && size_t(a.spec_index) < specs.size(), "--spec {}: the file has {} spec(s)", a.spec_index, specs.size());
  const env::EnvSpec& s = specs[size_t(a.spec_index)];
  DSA_CHECK(!s.tasks.empty(), "spec {} has no tasks", s.name);
  const env::TaskSpec* task = &s.tasks[0];
  if (!a.task.empty()) {
    task = nullptr;
    for (const auto& t : s.tasks)
      if (t.id == a.task) task = &t;
    if (!task) {
      DSA_CHECK(a.task.find_first_not_of("0123456789") == std::string::npos, "--task {}: no task with that id", a.task);
      const size_t i = size_t(std::stoull(a.task));
      DSA_CHECK(i < s.tasks.size(), "--task {}: the spec has {} task(s)", i, s.tasks.size());
      task = &s.tasks[i];
    }
  }
  const env::Json calls = read_calls(a.calls);
  const auto img = env::build_image(s);
  const env::GoldRun gold = env::replay(s, img, task->gold_calls);
  DSA_CHECK(gold.ok, "task {}: the gold solution fails: {}", task->id, gold.error);
  env::Sandbox sb(s, img);
  env::Json results = env::Json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    const env::Json& c = calls[i];
    const env::Json& f = c.contains("function") ? c["function"] : c;
    DSA_CHECK(f.is_object() && f.contains("name") && f["name"].is_string(), "--calls[{}]: no \"name\"", i);
    const std::string name = f["name"].get<std::string>();
    const env::Json args = f.contains("arguments") ? f["arguments"] : env::Json::object();
    const env::ToolResult r = args.is_string() ? sb.call_text(name, args.get<std::string>()) : sb.call(name, args);
    env::Json o = {{"name", name}, {"ok", r.ok}, {"content", r.content}};
    if (c.contains("id")) o["id"] = c["id"];
    results.push_back(o);
  }
  const uint64_t end = sb.state_hash();
  env::Json out = {{"spec", s.name}, {"task", task->id}, {"results", results},
                   {"end_state", fmt::format("{:016x}", end)}, {"gold_state", fmt::format("{:016x}", gold.end_state)},
                   {"db_state_matches", end == gold.end_state}};
  if (a.has_answer) {
    const env::VerifyResult v = env::verify(*task, a.answer, end, gold.end_state);
    out["verdict"] = {{"pass", v.pass}, {"failures", v.failures}};
  }
  std::printf("%s\n", text::py_json_dumps(out).c_str());
}

}  // namespace

void add_env_command(CLI::App& app) {
  auto a = std::make_shared<EnvArgs>();
  CLI::App* cmd = app.add_subcommand("env", "Agentic environments: synthesize, inspect, validate, benchmark (docs/environments.md)");
  cmd->require_subcommand(1);

  CLI::App* sy = cmd->add_subcommand("synth", "Synthesize validated environments and tasks from a seed, or by a model behind --endpoint (JSONL, one spec per line)");
  sy->add_option("--seed", a->synth.seed, "Seed (same seed, same file; with --endpoint: the sampling seed)");
  sy->add_option("-o,--out", a->out, "Output .jsonl")->required();
  CLI::Option* prog[] = {
      sy->add_option("--domains", a->synth.domains, "Tool domains (default: all)")->delimiter(','),
      sy->add_option("--envs-per-domain", a->synth.envs_per_domain, "Database instances per domain")->check(CLI::Range(0, 1000)),
      sy->add_option("--tasks-per-level", a->synth.tasks_per_level, "Task draws per level and instance")->check(CLI::Range(1, 1000)),
      sy->add_option("--scale", a->synth.scale, "Extra rows per generated database")->check(CLI::Range(int64_t(0), int64_t(100000))),
      sy->add_option("--reasoning", a->synth.reasoning, "Reasoning kinds (countdown, arithmetic, sorting, logic; default all)")->delimiter(','),
      sy->add_option("--reasoning-tasks", a->synth.reasoning_tasks, "Tasks per reasoning kind (0 = none)")->check(CLI::Range(0, 100000)),
      sy->add_flag("--no-worked", a->no_worked, "Leave out worked reasoning (gold.reasoning)"),
      sy->add_option("--heldout-percent", a->synth.heldout_percent, "Held-out share (fixed by instruction hash)")->check(CLI::Range(0, 100)),
      sy->add_option("--stats-json", a->stats_json, "Also write the statistics as JSON")};
  CLI::Option* ep = sy->add_option("--endpoint", a->endpoint, "Model-driven: an OpenAI-compatible base URL (http://host:port/v1) whose model writes the specs");
  for (CLI::Option* o : prog) o->excludes(ep);
  CLI::Option* model_opts[] = {
      sy->add_option("--api-model,--model", a->api_model, "Model name sent to the endpoint"),
      sy->add_option("--api-key-env", a->api_key_env, "Environment variable holding the API key (default: $OPENAI_API_KEY if set)"),
      sy->add_option("--rounds", a->model.rounds, "Model replies per difficulty level before giving up")->check(CLI::Range(1, 100)),
      sy->add_option("--levels", a->model.levels, "Difficulty levels, each a harder version of the last")->check(CLI::Range(1, 5)),
      sy->add_option("--start-level", a->model.start_level, "First difficulty (1..5)")->check(CLI::Range(1, 5)),
      sy->add_option("--topic", a->model.topic, "Subject of the environment (e.g. \"a hotel's bookings\")"),
      sy->add_option("--tasks-per-spec", a->model.tasks_per_spec, "Tasks each spec must have")->check(CLI::Range(1, 100)),
      sy->add_option("--temperature", a->temperature, "Sampling temperature at the endpoint")->check(CLI::Range(0.0, 2.0)),
      sy->add_option("--max-reply-tokens", a->max_reply_tokens, "max_tokens per reply (0 = the endpoint's default)")
          ->check(CLI::Range(int64_t(0), int64_t(1) << 20)),
      sy->add_option("--transcript", a->transcript, "Write the conversation with the model as JSON")};
  for (CLI::Option* o : model_opts) o->needs(ep);
  sy->callback([a] {
    reporting("synth", [&] {
      if (!a->endpoint.empty()) return synth_with_model(*a);
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

  CLI::App* ca = cmd->add_subcommand("call", "Run tool calls of a task's environment in a fresh sandbox; print results, end-state and verdict as JSON");
  ca->add_option("--env", a->file, "Spec file (.json or .jsonl)")->required();
  ca->add_option("--spec", a->spec_index, "Which spec of a .jsonl file (0-based)");
  ca->add_option("--task", a->task, "Task id, or index within the spec (default 0)");
  ca->add_option("--calls", a->calls, "JSON array (or @file) of every call so far, in order: {name, arguments} or OpenAI tool calls");
  CLI::Option* ans = ca->add_option("--answer", a->answer, "A final answer to verify (adds \"verdict\")");
  ca->callback([a, ans] {
    reporting("call", [&] {
      a->has_answer = ans->count() > 0;
      call_tools(*a);
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
