// Programmatic task synthesis, deterministic from a seed: six tool domains (orders, flights,
// library, payroll, stations, inventory) whose databases come from generators, tasks at five
// levels (1: one lookup; 2: two chained calls; 3: aggregation over a search with near-namesake
// distractors; 4: writes verified on the end state; 5: hops + aggregation + a conditional write),
// and tool-less reasoning environments (countdown, arithmetic, sorting, ordering logic) with
// optional worked reasoning. Every task is validated by gold replay and verifier mutation
// (verify.h); duplicates are removed; statistics are kept per domain and level.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "env/spec.h"

namespace dsa::env {

// Deterministic 64-bit generator (splitmix64): the same stream on every platform.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next();
  int64_t uniform(int64_t lo, int64_t hi);  // inclusive
  double unit();                             // [0, 1)
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[size_t(uniform(0, int64_t(v.size()) - 1))]; }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(uniform(0, int64_t(i) - 1))]);
  }
};

// The database of a tool domain (spec "db": {"generator": name, "seed": s, "scale": n}).
// Throws dsa::Error naming the known generators for an unknown name.
DbSpec generate_db(const std::string& generator, uint64_t seed, int64_t scale);
std::vector<std::string> domain_names();
std::vector<std::string> reasoning_kinds();

// The environment (tools, system prompt, db generator) of a domain, without tasks.
EnvSpec domain_env(const std::string& domain, uint64_t db_seed, int64_t scale);

struct SynthOptions {
  uint64_t seed = 1;
  std::vector<std::string> domains;  // tool domains; empty = all
  int envs_per_domain = 2;           // database instances per domain
  int tasks_per_level = 3;           // attempts per level and instance
  int64_t scale = 0;                 // generator size knob
  std::vector<std::string> reasoning;  // reasoning kinds; empty = all (none when reasoning_tasks == 0)
  int reasoning_tasks = 12;          // per kind
  bool worked_reasoning = true;      // gold.reasoning for reasoning tasks
  int heldout_percent = 20;          // fixed split by instruction hash
};

struct LevelStats {
  int64_t generated = 0, kept = 0, invalid = 0, duplicate = 0, gold_calls = 0, mutations = 0;
};

struct SynthStats {
  std::map<std::string, std::map<int, LevelStats>> by_domain;
  std::vector<std::string> rejected;  // the first few reasons a task was dropped
  Json to_json() const;
  std::string table() const;
};

std::vector<EnvSpec> synthesize(const SynthOptions& opt, SynthStats* stats = nullptr);
// Counts of an existing set of specs (kept = tasks, by domain and difficulty).
SynthStats spec_stats(const std::vector<EnvSpec>& specs);
// Which split a task falls in, from its instruction (stable across runs).
std::string split_of(const std::string& domain, const std::string& instruction, int heldout_percent);

// Tool-less reasoning environment of one kind with n tasks (validated like the others).
EnvSpec reasoning_env(const std::string& kind, uint64_t seed, int n, bool worked);

}  // namespace dsa::env
