// Environment spec, schema version 1 (docs/environments.md): a SQLite database (schema + rows, or
// a named generator + seed), tools (SQL statements with bound parameters, or built-in operations)
// and tasks (instruction, gold solution as a program of tool calls plus its final answer, verifier
// on the answer and/or the database end state, difficulty). Loading validates the structure and
// names the JSON path of the first problem ("tools[2].parameters.properties.id.type: ...").
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "text/py_json.h"

namespace dsa::env {

using Json = text::OrderedJson;

inline constexpr int kSpecVersion = 1;

struct DbSpec {
  std::vector<std::string> schema;       // CREATE TABLE / CREATE INDEX statements
  std::vector<std::pair<std::string, std::vector<Json>>> rows;  // table -> rows (arrays of scalars)
  std::string generator;                 // synthesizer domain name; replaces schema/rows when set
  uint64_t seed = 0;
  int64_t scale = 0;                     // generator size knob (0 = the generator's default)
};

enum class ParamType { kString, kInteger, kNumber, kBoolean, kArray };

struct ToolParam {
  std::string name;
  ParamType type = ParamType::kString;
  bool required = true;
  std::vector<Json> enum_values;  // empty = any value of the type
};

enum class ToolKind { kSqlRead, kSqlWrite, kBuiltin };

struct ToolSpec {
  std::string name, description;
  Json parameters;               // the JSON-schema object as written in the spec (shown to the model)
  std::vector<ToolParam> params; // parsed from parameters
  ToolKind kind = ToolKind::kSqlRead;
  std::string sql;               // kSqlRead/kSqlWrite: one statement, parameters as :name
  std::string builtin;           // kBuiltin: add, subtract, multiply, divide, sum, max, min, calculate
};

struct ToolCallSpec {
  std::string name;
  Json arguments = Json::object();
};

// All parts that are present must hold for a pass.
struct VerifierSpec {
  std::vector<std::string> answer_contains;  // each must appear in the final answer (case-insensitive)
  bool has_number = false;
  double answer_number = 0;                  // the last number in the final answer equals it (1e-6 rel.)
  std::string answer_exact;                  // final answer's last line, normalised, equals it
  bool has_countdown = false;                // the answer's expression uses the numbers at most once
  std::vector<int64_t> countdown_numbers;    // each and evaluates to the target
  int64_t countdown_target = 0;
  bool db_state = false;                     // end state hash == the gold solution's end state hash
  bool empty() const {
    return answer_contains.empty() && !has_number && answer_exact.empty() && !has_countdown && !db_state;
  }
};

struct TaskSpec {
  std::string id, instruction;
  int difficulty = 1;                     // 1..5
  std::string split = "train";            // train | heldout
  std::vector<ToolCallSpec> gold_calls;   // the gold solution: tool calls in order
  std::string gold_answer;                // its final answer text
  std::string gold_reasoning;             // optional worked reasoning (cold-start SFT data)
  VerifierSpec verify;
  Json tags = Json::object();             // free-form: hops, distractors, aggregation, write...
};

struct EnvSpec {
  int version = kSpecVersion;
  std::string name, domain, description;
  std::string system_prompt;              // optional; the tools block is appended by the encoder
  DbSpec db;
  std::vector<ToolSpec> tools;
  std::vector<TaskSpec> tasks;

  const ToolSpec* find_tool(std::string_view name) const;
  // The OpenAI tool list ({"type": "function", "function": {name, description, parameters}}).
  Json openai_tools() const;
};

// Throws dsa::Error "spec: <json path>: <problem>" on the first structural problem. The SQL itself
// is checked when a Sandbox image is built (sandbox.h: build_image).
EnvSpec parse_spec(const Json& j);
EnvSpec parse_spec_text(std::string_view text);
Json spec_to_json(const EnvSpec& s);
Json task_to_json(const TaskSpec& t);

// Built-in tools: their fixed parameter schema (throws for an unknown name).
Json builtin_parameters(std::string_view builtin);
bool is_builtin(std::string_view builtin);

// Reads a .json (one spec) or .jsonl (one spec per line) file; errors name the line.
std::vector<EnvSpec> load_specs(const std::string& path);

}  // namespace dsa::env
