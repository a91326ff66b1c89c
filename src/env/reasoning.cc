// Tool-less reasoning environments: countdown, multi-step arithmetic, sorting, ordering logic.
// Each task carries a verifier and, optionally, worked reasoning for cold-start SFT data.
#include <algorithm>
#include <cmath>
#include <set>

#include "base/error.h"
#include "env/synth.h"

namespace dsa::env {

std::vector<std::string> reasoning_kinds() { return {"countdown", "arithmetic", "sorting", "logic"}; }

namespace {

const std::vector<std::string> kNames = {"Ana", "Ben", "Cleo", "Dev", "Eli", "Farah", "Gus", "Hiro", "Ines", "Jon"};
const std::vector<std::string> kWords = {"amber", "basil", "cobalt", "delta", "ember", "fjord", "garnet", "harbor",
                                         "indigo", "juniper", "kestrel", "lagoon", "meadow", "nectar", "onyx", "prairie"};

struct Step {
  std::string expr;
  int64_t value;
  std::string line;  // worked reasoning line
};

// Combines the numbers left to right with random operations; every intermediate stays a positive
// integer. Returns false when no operation fits.
bool combine(Rng& r, const std::vector<int64_t>& nums, bool allow_div, Step* out) {
  std::string expr = std::to_string(nums[0]);
  int64_t v = nums[0];
  std::string work;
  for (size_t i = 1; i < nums.size(); ++i) {
    const int64_t n = nums[i];
    std::vector<char> ops = {'+', '*'};
    if (v - n > 0) ops.push_back('-');
    if (allow_div && n > 1 && v % n == 0) ops.push_back('/');
    const char op = r.pick(ops);
    const int64_t nv = op == '+' ? v + n : op == '-' ? v - n : op == '*' ? v * n : v / n;
    work += fmt::format("{} {} {} = {}. ", v, op, n, nv);
    expr = (i == 1 ? expr : "(" + expr + ")") + " " + op + " " + std::to_string(n);
    v = nv;
  }
  *out = {expr, v, work};
  return true;
}

TaskSpec countdown(Rng& r, int level, bool worked) {
  for (;;) {
    const int n = level <= 2 ? 3 : 4;
    std::vector<int64_t> nums;
    for (int i = 0; i < n; ++i) nums.push_back(i == 0 && level >= 4 ? 25 * r.uniform(1, 4) : r.uniform(1, 12));
    Step s;
    combine(r, nums, level >= 3, &s);
    if (s.value < 10 || s.value > 999 || std::count(nums.begin(), nums.end(), s.value)) continue;
    std::vector<int64_t> shown = nums;
    r.shuffle(shown);
    std::string list;
    for (auto x : shown) list += (list.empty() ? "" : ", ") + std::to_string(x);
    TaskSpec t;
    t.instruction = fmt::format("Using the numbers {} (each at most once) and + - * / with parentheses, make {}. "
                                "End with a line 'Answer: <expression>'.", list, s.value);
    t.gold_answer = fmt::format("Answer: {} = {}", s.expr, s.value);
    if (worked) t.gold_reasoning = fmt::format("I need {} from {}. {}That reaches {}.", s.value, list, s.line, s.value);
    t.verify.has_countdown = true;
    t.verify.countdown_numbers = shown;
    t.verify.countdown_target = s.value;
    t.difficulty = level;
    return t;
  }
}

TaskSpec arithmetic(Rng& r, int level, bool worked) {
  std::vector<int64_t> nums;
  for (int i = 0; i < level + 2; ++i) nums.push_back(r.uniform(2, level >= 3 ? 99 : 30));
  Step s;
  combine(r, nums, false, &s);
  TaskSpec t;
  t.instruction = fmt::format("Compute {}. End with a line 'Answer: <number>'.", s.expr);
  t.gold_answer = fmt::format("Answer: {}", s.value);
  if (worked) t.gold_reasoning = fmt::format("Step by step: {}So the result is {}.", s.line, s.value);
  t.verify.has_number = true;
  t.verify.answer_number = double(s.value);
  t.difficulty = level;
  return t;
}

TaskSpec sorting(Rng& r, int level, bool worked) {
  const int n = 3 + level;
  const bool words = level % 2 == 0;
  const bool desc = level >= 4;
  std::vector<std::string> items;
  std::set<std::string> used;
  std::vector<int64_t> nums;
  while (int(items.size()) < n) {
    if (words) {
      const std::string w = r.pick(kWords);
      if (used.insert(w).second) items.push_back(w);
    } else {
      const int64_t x = r.uniform(-50, level * 200);
      if (used.insert(std::to_string(x)).second) items.push_back(std::to_string(x)), nums.push_back(x);
    }
  }
  std::vector<std::string> sorted = items;
  if (words) std::sort(sorted.begin(), sorted.end());
  else std::sort(sorted.begin(), sorted.end(), [](const std::string& a, const std::string& b) { return std::stoll(a) < std::stoll(b); });
  if (desc) std::reverse(sorted.begin(), sorted.end());
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  TaskSpec t;
  t.instruction = fmt::format("Sort {} {}: {}. End with a line 'Answer: <comma-separated list>'.",
                              words ? "these words" : "these numbers",
                              words ? (desc ? "in reverse alphabetical order" : "alphabetically") : (desc ? "from largest to smallest" : "from smallest to largest"),
                              join(items));
  t.gold_answer = "Answer: " + join(sorted);
  if (worked) {
    std::string w = "Taking the " + std::string(desc ? "largest" : "smallest") + " remaining item each time: ";
    for (size_t i = 0; i < sorted.size(); ++i) w += (i ? ", then " : "") + sorted[i];
    t.gold_reasoning = w + ".";
  }
  t.verify.answer_exact = join(sorted);
  t.difficulty = level;
  return t;
}

TaskSpec logic(Rng& r, int level, bool worked) {
  const int n = 2 + level;
  std::vector<std::string> people = kNames;
  r.shuffle(people);
  people.resize(size_t(n));  // people[0] is the tallest
  std::vector<std::string> facts;
  for (int i = 0; i + 1 < n; ++i)
    facts.push_back(r.uniform(0, 1) ? fmt::format("{} is taller than {}.", people[size_t(i)], people[size_t(i + 1)])
                                    : fmt::format("{} is shorter than {}.", people[size_t(i + 1)], people[size_t(i)]));
  r.shuffle(facts);
  const int q = int(r.uniform(0, 2));
  const size_t idx = q == 0 ? 0 : q == 1 ? size_t(n - 1) : size_t(1);
  const std::string question = q == 0 ? "Who is the tallest?" : q == 1 ? "Who is the shortest?" : "Who is the second tallest?";
  std::string all;
  for (const auto& f : facts) all += (all.empty() ? "" : " ") + f;
  TaskSpec t;
  t.instruction = fmt::format("{} {} End with a line 'Answer: <name>'.", all, question);
  t.gold_answer = "Answer: " + people[idx];
  if (worked) {
    std::string order;
    for (const auto& p : people) order += (order.empty() ? "" : " > ") + p;
    t.gold_reasoning = fmt::format("Chaining the comparisons gives the order from tallest: {}. So the answer is {}.", order, people[idx]);
  }
  t.verify.answer_exact = people[idx];
  t.difficulty = level;
  return t;
}

}  // namespace

EnvSpec reasoning_env(const std::string& kind, uint64_t seed, int n, bool worked) {
  EnvSpec s;
  s.domain = kind;
  s.name = "reasoning-" + kind;
  s.description = "Tool-less reasoning tasks with exact verifiers.";
  s.system_prompt = "Solve the problem. Finish with the line the task asks for.";
  Rng r(seed);
  for (int i = 0; i < n; ++i) {
    const int level = 1 + i % 5;
    TaskSpec t = kind == "countdown"    ? countdown(r, level, worked)
                 : kind == "arithmetic" ? arithmetic(r, level, worked)
                 : kind == "sorting"    ? sorting(r, level, worked)
                 : kind == "logic"      ? logic(r, level, worked)
                                        : throw Error(fmt::format("unknown reasoning kind '{}' (countdown, arithmetic, sorting, logic)", kind));
    t.id = fmt::format("{}-{}", s.name, i);
    s.tasks.push_back(std::move(t));
  }
  return s;
}

}  // namespace dsa::env
