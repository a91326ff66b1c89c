// The model-driven synthesizer: prompt, reply checking and the fix / harden conversation loop.
#include "env/model_synth.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "base/error.h"
#include "env/sandbox.h"
#include "env/verify.h"

namespace dsa::env {
namespace {

// dsa::Error texts from DSA_CHECK start with "file.cc:123: "; the model needs only the message.
std::string without_source_location(const std::string& s) {
  const size_t colon = s.find(": ");
  if (colon == std::string::npos) return s;
  const std::string head = s.substr(0, colon);
  const size_t k = head.rfind(':');
  if (k == std::string::npos || k + 1 >= head.size()) return s;
  const bool line_no = std::all_of(head.begin() + long(k) + 1, head.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  const std::string file = head.substr(0, k);
  const bool source = file.size() > 3 && (file.ends_with(".cc") || file.ends_with(".h"));
  return line_no && source ? s.substr(colon + 2) : s;
}

std::string level_guide() {
  return "Difficulty levels: 1 = one lookup; 2 = two chained calls (the second uses a value the first "
         "returned); 3 = a search with near-namesake distractors, a list and an aggregation (sum, count, "
         "maximum); 4 = a write after a search, verified on the database end state; 5 = search, filter, "
         "aggregate and a write that depends on the aggregate (answer and end state verified).";
}

std::string bullet_list(const std::string& errors) {
  std::string out;
  size_t b = 0;
  while (b < errors.size()) {
    size_t e = errors.find('\n', b);
    if (e == std::string::npos) e = errors.size();
    if (e > b) out += "- " + errors.substr(b, e - b) + "\n";
    b = e + 1;
  }
  return out;
}

}  // namespace

std::string extract_json_object(const std::string& reply) {
  std::string s = reply;
  if (const size_t f = s.find("```"); f != std::string::npos) {
    const size_t body = s.find('\n', f);
    const size_t end = body == std::string::npos ? std::string::npos : s.find("```", body);
    if (end != std::string::npos) s = s.substr(body + 1, end - body - 1);
  }
  const size_t b = s.find('{'), e = s.rfind('}');
  if (b == std::string::npos) return "";
  if (e == std::string::npos || e < b) return s.substr(b);  // unterminated: let the parser say where
  return s.substr(b, e - b + 1);
}

std::string model_synth_example_spec() {
  return R"SPEC({"version": 1, "name": "library-loans", "domain": "library",
 "description": "Books of a small library and their loans.",
 "system_prompt": "You are the library's assistant. Use the tools; never guess ids.",
 "db": {"schema": ["CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT NOT NULL, author TEXT NOT NULL)",
                   "CREATE TABLE loans (id INTEGER PRIMARY KEY, book_id INTEGER NOT NULL, member TEXT NOT NULL, status TEXT NOT NULL)"],
        "rows": {"books": [[1, "Dune", "Frank Herbert"], [2, "Dune Messiah", "Frank Herbert"], [3, "Emma", "Jane Austen"]],
                 "loans": [[7, 1, "Ada", "out"], [8, 2, "Ada", "out"], [9, 1, "Ben", "returned"]]}},
 "tools": [
  {"name": "find_books", "description": "Books whose title contains the text.",
   "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
   "sql": "SELECT id, title, author FROM books WHERE title LIKE '%' || :title || '%'"},
  {"name": "list_loans", "description": "Loans of one book.",
   "parameters": {"type": "object", "properties": {"book_id": {"type": "integer"}}, "required": ["book_id"]},
   "sql": "SELECT id, member, status FROM loans WHERE book_id = :book_id"},
  {"name": "return_loan", "description": "Mark a loan as returned.", "write": true,
   "parameters": {"type": "object", "properties": {"loan_id": {"type": "integer"}}, "required": ["loan_id"]},
   "sql": "UPDATE loans SET status = 'returned' WHERE id = :loan_id AND status = 'out'"}],
 "tasks": [
  {"id": "return-dune-ada", "difficulty": 4,
   "instruction": "Ada has returned her copy of Dune (not Dune Messiah). Record the return and tell me the loan id.",
   "gold": {"calls": [{"name": "find_books", "arguments": {"title": "Dune"}},
                      {"name": "list_loans", "arguments": {"book_id": 1}},
                      {"name": "return_loan", "arguments": {"loan_id": 7}}],
            "answer": "Loan 7 (Dune, Ada) is now marked as returned."},
   "verify": {"db_state": true, "answer_contains": ["7"]}}]})SPEC";
}

std::string model_synth_system_prompt() {
  return "You write environments for training tool-using agents. An environment is one JSON object "
         "(schema version 1): a SQLite database, tools that are parameterised SQL statements, and tasks "
         "with a gold solution (tool calls in order plus the final answer) and a verifier.\n\n"
         "Rules:\n"
         "- db.schema: CREATE TABLE / CREATE INDEX statements, one per entry; db.rows: table -> arrays of "
         "values in column order.\n"
         "- tools[]: name, description, parameters (a JSON-schema object; property types string, integer, "
         "number, boolean, array; enum; required), and sql: exactly one statement, parameters written "
         ":name, every declared parameter used. Read tools run SELECT only; a tool with \"write\": true "
         "runs one INSERT, UPDATE or DELETE. No PRAGMA, ATTACH, DDL or transactions. Built-in tools: "
         "{\"name\": ..., \"description\": ..., \"builtin\": \"sum\"} (also add, subtract, multiply, divide, "
         "max, min, calculate).\n"
         "- tasks[]: id, instruction (what a user asks; it must not reveal values the tools return), "
         "difficulty 1..5, gold {calls: [{name, arguments}], answer}, verify with any of: answer_contains "
         "(strings the answer must mention), answer_number (the answer's last number), answer_exact (the "
         "answer's last line), db_state: true (the database end state must equal the gold solution's; "
         "needs a write).\n"
         "- Validation: the database is built, every tool's SQL is checked, the gold calls are replayed "
         "(each must succeed; their results must support the gold answer), the gold answer must pass its "
         "verifier, and altered answers (and, for db_state, the end state without the last write or with "
         "its arguments changed) must fail it. A verifier that a wrong answer also passes is rejected.\n"
         "- " + level_guide() + "\n\n"
         "Reply with the JSON object only (no prose). Example:\n" + model_synth_example_spec();
}

std::string check_spec_reply(const std::string& reply, int level, int min_tasks, const std::vector<std::string>& previous,
                             EnvSpec* out) {
  const std::string text = extract_json_object(reply);
  if (text.empty()) return "the reply contains no JSON object (expected one spec object, starting with '{')";
  EnvSpec s;
  try {
    s = parse_spec_text(text);
  } catch (const Error& e) {
    return without_source_location(e.what());
  }
  std::vector<std::string> errs;
  if (int(s.tasks.size()) < min_tasks)
    errs.push_back(fmt::format("tasks: {} task(s), at least {} required", s.tasks.size(), min_tasks));
  const std::set<std::string> seen(previous.begin(), previous.end());
  for (size_t i = 0; i < s.tasks.size(); ++i) {
    const TaskSpec& t = s.tasks[i];
    if (t.difficulty < level)
      errs.push_back(fmt::format("tasks[{}] ({}): difficulty is {}, this spec must be at difficulty {} or above", i, t.id,
                                 t.difficulty, level));
    if (seen.count(t.instruction))
      errs.push_back(fmt::format("tasks[{}] ({}): the instruction repeats a task of an earlier spec; write a new task", i, t.id));
  }
  std::shared_ptr<const DbImage> img;
  try {
    img = build_image(s);
  } catch (const Error& e) {
    errs.push_back(without_source_location(e.what()));
  }
  if (img)
    for (size_t i = 0; i < s.tasks.size(); ++i) {
      const Validation v = validate_task(s, img, s.tasks[i]);
      if (!v.ok) errs.push_back(fmt::format("tasks[{}] ({}): {}", i, s.tasks[i].id, v.error));
    }
  std::string all;
  for (const auto& e : errs) all += (all.empty() ? "" : "\n") + e;
  if (all.empty() && out) *out = std::move(s);
  return all;
}

ModelSynthResult synthesize_with_model(ChatEndpoint& endpoint, const ModelSynthOptions& opt,
                                       const std::function<void(const SynthRound&)>& on_round) {
  DSA_CHECK(opt.rounds >= 1, "model synth: rounds must be at least 1 (got {})", opt.rounds);
  DSA_CHECK(opt.levels >= 1, "model synth: levels must be at least 1 (got {})", opt.levels);
  DSA_CHECK(opt.start_level >= 1 && opt.start_level + opt.levels - 1 <= 5,
            "model synth: levels {}..{} are outside the difficulty range 1..5", opt.start_level, opt.start_level + opt.levels - 1);
  DSA_CHECK(opt.tasks_per_spec >= 1, "model synth: tasks per spec must be at least 1");
  ModelSynthResult res;
  res.messages.push_back({{"role", "system"}, {"content", model_synth_system_prompt()}});
  res.messages.push_back(
      {{"role", "user"},
       {"content", fmt::format("Write a new environment at difficulty {}{} with at least {} task(s). Reply with the JSON object only.",
                               opt.start_level, opt.topic.empty() ? "" : " about " + opt.topic, opt.tasks_per_spec)}});
  std::vector<std::string> previous;
  std::set<std::string> names;
  for (int li = 0; li < opt.levels; ++li) {
    const int level = opt.start_level + li;
    bool validated = false;
    for (int r = 1; r <= opt.rounds && !validated; ++r) {
      SynthRound round;
      round.level = level;
      round.round = r;
      ChatReply reply;
      try {
        reply = endpoint.complete(res.messages);
      } catch (const std::exception& e) {
        round.error = "endpoint: " + without_source_location(e.what());
        res.rounds.push_back(round);
        if (on_round) on_round(round);
        res.stopped = round.error;
        return res;
      }
      res.messages.push_back({{"role", "assistant"}, {"content", reply.text}});
      EnvSpec spec;
      round.error = check_spec_reply(reply.text, level, opt.tasks_per_spec, previous, &spec);
      if (!round.error.empty() && reply.truncated)
        round.error = "the reply was cut off at the endpoint's token limit; write a shorter spec\n" + round.error;
      round.ok = round.error.empty();
      if (round.ok) {
        round.spec_name = spec.name;
        std::string name = spec.name;
        for (int k = 2; names.count(name); ++k) name = fmt::format("{}-{}", spec.name, k);
        spec.name = name;
        names.insert(name);
        for (const auto& t : spec.tasks) previous.push_back(t.instruction);
        res.kept.push_back(std::move(spec));
        validated = true;
      }
      res.rounds.push_back(round);
      if (on_round) on_round(round);
      if (round.ok) {
        if (li + 1 < opt.levels) {
          const EnvSpec& k = res.kept.back();
          size_t calls = 0;
          for (const auto& t : k.tasks) calls = std::max(calls, t.gold_calls.size());
          res.messages.push_back(
              {{"role", "user"},
               {"content", fmt::format("The spec validated ({} task(s), longest gold solution {} call(s)). Now write a harder "
                                       "version at difficulty {}: new task(s) whose gold solution needs more steps (more "
                                       "hops, distractors, an aggregation or a conditional write), extending the database "
                                       "and tools as needed. {} Reply with the whole spec as one JSON object only.",
                                       k.tasks.size(), calls, level + 1, level_guide())}});
        }
      } else if (r < opt.rounds) {
        res.messages.push_back(
            {{"role", "user"},
             {"content", fmt::format("The spec does not validate (difficulty {}, round {} of {}):\n{}Fix every problem and "
                                     "reply with the whole corrected spec as one JSON object only.",
                                     level, r, opt.rounds, bullet_list(round.error))}});
      }
    }
    if (!validated) {
      res.stopped = fmt::format("difficulty {}: no valid spec after {} round(s)", level, opt.rounds);
      return res;
    }
  }
  return res;
}

}  // namespace dsa::env
