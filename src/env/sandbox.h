// The sandbox: an environment's database built once into an immutable image (sqlite3_serialize),
// and per episode a private in-memory copy (sqlite3_deserialize) on which tool calls run.
// Rules (docs/environments.md): SQL runs under an authorizer that admits only what the tool's own
// statement needs (reads of the data tables, and writes to them for write tools; no ATTACH,
// PRAGMA, DDL, transactions or load_extension); arguments are validated against the tool's
// JSON-schema parameters and bound, never spliced; a progress handler stops statements past the
// time/step limit; results beyond the row or byte limit are refused. Any failing call (unknown
// tool, malformed arguments, SQL error, limit) comes back as an error result, never an exception.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "env/spec.h"

struct sqlite3;
struct sqlite3_stmt;

namespace dsa::env {

struct SandboxLimits {
  double time_ms = 250;            // per tool call (progress handler)
  int64_t max_vm_steps = 20'000'000;
  int64_t max_rows = 200;          // rows a read tool may return
  int64_t max_output_bytes = 16384;// result text a tool may return
  int64_t max_value_bytes = 1 << 20;  // SQLITE_LIMIT_LENGTH: strings/blobs made by SQL
  int64_t max_argument_bytes = 8192;  // the raw arguments JSON
};

// The built database of one spec: the serialized bytes, and the spec's tools checked against it.
struct DbImage {
  std::string bytes;
  uint64_t state_hash = 0;  // content hash of the data tables (see Sandbox::state_hash)
};

// Builds the database of a spec (schema + rows, or its generator), checks every tool's SQL
// (one statement, allowed by the authorizer, read tools read-only, write tools INSERT/UPDATE/
// DELETE, the :names bound are exactly the declared parameters), and serializes it. Throws
// dsa::Error "spec: tools[i].sql: ..." / "spec: db.schema[i]: ..." naming the problem.
std::shared_ptr<const DbImage> build_image(const EnvSpec& spec);

struct ToolResult {
  bool ok = false;
  std::string content;  // what the model sees: JSON rows / {"changed": n} / a value, or "error: ..."
  Json value;           // structured result when ok (rows array, object or number)
};

class Sandbox {
 public:
  Sandbox(const EnvSpec& spec, std::shared_ptr<const DbImage> image, const SandboxLimits& lim = {});
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  // Never throws: every failure is an error result.
  ToolResult call_text(std::string_view name, std::string_view arguments_json);  // arguments as JSON text
  ToolResult call(std::string_view name, const Json& arguments);

  // FNV-1a over every data table (by name), every row (by rowid), every value with its type.
  uint64_t state_hash();
  const EnvSpec& spec() const { return spec_; }
  int64_t calls() const { return calls_; }

 private:
  ToolResult run_sql(const ToolSpec& t, const Json& args);
  sqlite3_stmt* statement(const ToolSpec& t);

  const EnvSpec& spec_;
  std::shared_ptr<const DbImage> image_;
  SandboxLimits lim_;
  sqlite3* db_ = nullptr;
  std::map<std::string, sqlite3_stmt*, std::less<>> stmts_;
  int64_t calls_ = 0;

 public:
  struct Guard;  // authorizer / progress-handler state (sandbox.cc)

 private:
  std::unique_ptr<Guard> guard_;
};

// Validates arguments against a tool's parameters: an object, no unknown keys, required present,
// types and enums respected. Returns "" or the problem.
std::string check_arguments(const ToolSpec& t, const Json& args);

// Evaluates an arithmetic expression (numbers, + - * /, unary minus, parentheses). Throws
// dsa::Error on syntax errors, division by zero or nesting beyond 64. Collects the literals.
double eval_expression(std::string_view expr, std::vector<double>* literals = nullptr);

}  // namespace dsa::env
