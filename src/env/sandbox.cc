// SQLite sandbox: image building and checking, per-episode copies, authorizer, limits, tools.
#include "env/sandbox.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "base/hash.h"
#include "env/synth.h"
#include "io/json.h"

namespace dsa::env {

struct Sandbox::Guard {
  enum Mode { kTrusted, kBuild, kTool } mode = kTrusted;
  bool write_allowed = false;
  std::chrono::steady_clock::time_point deadline;
  int64_t steps = 0, max_steps = 0;
  bool interrupted = false;
  std::string denied;  // why the authorizer refused, for the error message
};

namespace {

using Guard = Sandbox::Guard;
using Clock = std::chrono::steady_clock;

bool is_internal_table(const char* t) { return t && std::strncmp(t, "sqlite_", 7) == 0; }

const char* action_name(int a) {
  switch (a) {
    case SQLITE_ATTACH: return "ATTACH";
    case SQLITE_DETACH: return "DETACH";
    case SQLITE_PRAGMA: return "PRAGMA";
    case SQLITE_TRANSACTION: return "transaction control";
    case SQLITE_SAVEPOINT: return "SAVEPOINT";
    case SQLITE_INSERT: return "INSERT";
    case SQLITE_UPDATE: return "UPDATE";
    case SQLITE_DELETE: return "DELETE";
    case SQLITE_ALTER_TABLE: return "ALTER TABLE";
    case SQLITE_CREATE_TRIGGER: case SQLITE_CREATE_TEMP_TRIGGER: return "CREATE TRIGGER";
    case SQLITE_CREATE_VIEW: case SQLITE_CREATE_TEMP_VIEW: return "CREATE VIEW";
    case SQLITE_CREATE_VTABLE: return "CREATE VIRTUAL TABLE";
    case SQLITE_REINDEX: return "REINDEX";
    case SQLITE_ANALYZE: return "ANALYZE";
    default: return (a >= SQLITE_CREATE_INDEX && a <= SQLITE_DROP_VIEW) ? "CREATE/DROP" : "this operation";
  }
}

bool forbidden_function(const char* f) {
  if (!f) return false;
  static const char* bad[] = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "sqlite_offset"};
  for (const char* b : bad)
    if (sqlite3_stricmp(f, b) == 0) return true;
  return false;
}

int authorize(void* p, int action, const char* a1, const char* a2, const char* dbname, const char*) {
  auto* g = static_cast<Guard*>(p);
  if (g->mode == Guard::kTrusted) return SQLITE_OK;
  auto deny = [&](std::string why) {
    if (g->denied.empty()) g->denied = std::move(why);
    return SQLITE_DENY;
  };
  if (dbname && std::strcmp(dbname, "main") != 0 && action != SQLITE_FUNCTION)
    return deny(fmt::format("only the episode's own database may be used (not '{}')", dbname));
  if (action == SQLITE_FUNCTION) {
    if (forbidden_function(a2)) return deny(fmt::format("function {}() is not allowed", a2));
    return SQLITE_OK;
  }
  if (g->mode == Guard::kBuild) {
    switch (action) {
      case SQLITE_CREATE_TABLE: case SQLITE_CREATE_INDEX: case SQLITE_READ: case SQLITE_SELECT:
      case SQLITE_REINDEX:  // CREATE INDEX fills the new index
        return SQLITE_OK;
      case SQLITE_INSERT: case SQLITE_UPDATE:  // CREATE writes the schema table
        if (a1 && (std::strcmp(a1, "sqlite_master") == 0 || std::strcmp(a1, "sqlite_schema") == 0)) return SQLITE_OK;
        return deny("schema statements may only create tables and indexes");
      default:
        return deny(fmt::format("{} is not allowed in the schema (CREATE TABLE / CREATE INDEX only)", action_name(action)));
    }
  }
  switch (action) {
    case SQLITE_SELECT: case SQLITE_RECURSIVE:
      return SQLITE_OK;
    case SQLITE_READ:
      if (is_internal_table(a1)) return deny(fmt::format("reading {} is not allowed", a1));
      return SQLITE_OK;
    case SQLITE_INSERT: case SQLITE_UPDATE: case SQLITE_DELETE:
      if (!g->write_allowed) return deny(fmt::format("{} in a read-only tool", action_name(action)));
      if (is_internal_table(a1)) return deny(fmt::format("writing {} is not allowed", a1));
      return SQLITE_OK;
    default:
      return deny(fmt::format("{} is not allowed in a tool statement", action_name(action)));
  }
}

int progress(void* p) {
  auto* g = static_cast<Guard*>(p);
  if (g->mode != Guard::kTool) return 0;
  g->steps += 1000;
  if (g->steps > g->max_steps || Clock::now() > g->deadline) {
    g->interrupted = true;
    return 1;
  }
  return 0;
}

struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

void configure(sqlite3* db, Guard* g, const SandboxLimits& lim) {
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_VIEW, 0, nullptr);
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, nullptr);
  sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 0);
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, int(lim.max_value_bytes));
  sqlite3_limit(db, SQLITE_LIMIT_SQL_LENGTH, 100000);
  sqlite3_set_authorizer(db, authorize, g);
  sqlite3_progress_handler(db, 1000, progress, g);
}

sqlite3* open_memory() {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    throw Error("sqlite: cannot open an in-memory database");
  }
  return db;
}

void exec_trusted(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "?";
    sqlite3_free(err);
    throw Error(fmt::format("sqlite: {}: {}", sql, m));
  }
}

bool only_space(const char* s) {
  for (; s && *s; ++s)
    if (!std::isspace(static_cast<unsigned char>(*s)) && *s != ';') return false;
  return true;
}

std::string quote_ident(const std::string& s) { return "\"" + s + "\""; }  // identifiers are checked

// A value's bytes tagged by type, for hashing.
std::string value_key(sqlite3_stmt* s, int c) {
  switch (sqlite3_column_type(s, c)) {
    case SQLITE_INTEGER: return "i" + std::to_string(sqlite3_column_int64(s, c));
    case SQLITE_FLOAT: return fmt::format("f{:.17g}", sqlite3_column_double(s, c));
    case SQLITE_NULL: return "n";
    default: {
      const char* p = static_cast<const char*>(sqlite3_column_blob(s, c));
      return "t" + std::to_string(sqlite3_column_bytes(s, c)) + ":" + std::string(p ? p : "", size_t(sqlite3_column_bytes(s, c)));
    }
  }
}

uint64_t hash_db(sqlite3* db) {
  std::vector<std::string> tables;
  {
    Stmt st;
    sqlite3_prepare_v2(db, "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name", -1, &st.s, nullptr);
    while (sqlite3_step(st.s) == SQLITE_ROW) tables.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st.s, 0)));
  }
  uint64_t h = kFnv1aOffset;
  for (const auto& t : tables) {
    h = fnv1a_bytes(h, t);
    h = fnv1a_byte(h, 0);
    Stmt st;
    if (sqlite3_prepare_v2(db, ("SELECT * FROM " + quote_ident(t)).c_str(), -1, &st.s, nullptr) != SQLITE_OK)
      throw Error(fmt::format("sqlite: cannot read table {}: {}", t, sqlite3_errmsg(db)));
    std::vector<std::string> rows;  // content order, not rowid: a deleted and re-inserted row is the same state
    const int n = sqlite3_column_count(st.s);
    while (sqlite3_step(st.s) == SQLITE_ROW) {
      std::string r;
      for (int c = 0; c < n; ++c) r += value_key(st.s, c) + "\x1f";
      rows.push_back(std::move(r));
    }
    std::sort(rows.begin(), rows.end());
    for (const auto& r : rows) h = fnv1a_byte(fnv1a_bytes(h, r), 0x1e);
  }
  return h;
}

Json column_json(sqlite3_stmt* s, int c) {
  switch (sqlite3_column_type(s, c)) {
    case SQLITE_INTEGER: return Json(int64_t(sqlite3_column_int64(s, c)));
    case SQLITE_FLOAT: return Json(sqlite3_column_double(s, c));
    case SQLITE_NULL: return Json(nullptr);
    case SQLITE_BLOB: return Json(fmt::format("<blob of {} bytes>", sqlite3_column_bytes(s, c)));
    default: return Json(std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, c)), size_t(sqlite3_column_bytes(s, c))));
  }
}

void bind_value(sqlite3_stmt* s, int i, const Json& v) {
  if (v.is_null()) sqlite3_bind_null(s, i);
  else if (v.is_boolean()) sqlite3_bind_int(s, i, v.get<bool>() ? 1 : 0);
  else if (v.is_number_integer()) sqlite3_bind_int64(s, i, v.get<int64_t>());
  else if (v.is_number()) sqlite3_bind_double(s, i, v.get<double>());
  else if (v.is_string()) {
    const auto& str = v.get_ref<const std::string&>();
    sqlite3_bind_text64(s, i, str.data(), str.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  } else {
    const std::string t = text::py_json_dumps(v);
    sqlite3_bind_text64(s, i, t.data(), t.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  }
}

ToolResult err(std::string m) { return {false, "error: " + m, Json()}; }

Json number_json(double x) {
  if (std::isfinite(x) && std::fabs(x) < 1e15 && x == std::floor(x)) return Json(int64_t(x));
  if (std::isfinite(x) && std::fabs(x) < 1e9) x = std::round(x * 1e6) / 1e6;
  return Json(x);
}

class ExprParser {
 public:
  ExprParser(std::string_view s, std::vector<double>* lits) : s_(s), lits_(lits) {}
  double parse() {
    DSA_CHECK(s_.size() <= 2000, "expression longer than 2000 characters");
    const double v = sum(0);
    skip();
    DSA_CHECK(i_ == s_.size(), "unexpected '{}' at offset {}", s_[i_], i_);
    return v;
  }

 private:
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  double sum(int d) {
    double v = product(d);
    for (;;) {
      skip();
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) {
        const char op = s_[i_++];
        const double r = product(d);
        v = op == '+' ? v + r : v - r;
      } else {
        return v;
      }
    }
  }
  double product(int d) {
    double v = unary(d);
    for (;;) {
      skip();
      if (i_ < s_.size() && (s_[i_] == '*' || s_[i_] == '/' || s_[i_] == 'x' || s_[i_] == 'X')) {
        const char op = s_[i_++];
        const double r = unary(d);
        if (op == '/') {
          DSA_CHECK(r != 0, "division by zero");
          v /= r;
        } else {
          v *= r;
        }
      } else {
        return v;
      }
    }
  }
  double unary(int d) {
    skip();
    DSA_CHECK(d < 64, "expression nested too deeply");
    if (i_ < s_.size() && s_[i_] == '-') {
      ++i_;
      return -unary(d + 1);
    }
    if (i_ < s_.size() && s_[i_] == '(') {
      ++i_;
      const double v = sum(d + 1);
      skip();
      DSA_CHECK(i_ < s_.size() && s_[i_] == ')', "missing ')' at offset {}", i_);
      ++i_;
      return v;
    }
    const size_t b = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.')) ++i_;
    DSA_CHECK(i_ > b, "expected a number at offset {}", b);
    const std::string num(s_.substr(b, i_ - b));
    char* end = nullptr;
    const double v = std::strtod(num.c_str(), &end);
    DSA_CHECK(end && *end == 0, "bad number '{}'", num);
    if (lits_) lits_->push_back(v);
    return v;
  }
  std::string_view s_;
  std::vector<double>* lits_;
  size_t i_ = 0;
};

std::string type_name(ParamType t) {
  switch (t) {
    case ParamType::kString: return "a string";
    case ParamType::kInteger: return "an integer";
    case ParamType::kNumber: return "a number";
    case ParamType::kBoolean: return "true or false";
    case ParamType::kArray: return "an array";
  }
  return "?";
}

ToolResult run_builtin(const ToolSpec& t, const Json& a) {
  const std::string& b = t.builtin;
  double r = 0;
  if (b == "add" || b == "subtract" || b == "multiply" || b == "divide") {
    const double x = a["a"].get<double>(), y = a["b"].get<double>();
    if (b == "divide" && y == 0) return err("division by zero");
    r = b == "add" ? x + y : b == "subtract" ? x - y : b == "multiply" ? x * y : x / y;
  } else if (b == "sum" || b == "max" || b == "min") {
    const Json& v = a["values"];
    if (v.size() > 10000) return err("at most 10000 values");
    if (v.empty() && b != "sum") return err("values must not be empty");
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_number()) return err(fmt::format("values[{}] is not a number", i));
      const double x = v[i].get<double>();
      if (i == 0 && b != "sum") r = x;
      else if (b == "sum") r += x;
      else if (b == "max") r = std::max(r, x);
      else r = std::min(r, x);
    }
  } else {
    try {
      r = eval_expression(a["expression"].get<std::string>());
    } catch (const Error& e) {
      std::string m = e.what();
      if (auto p = m.find(": "); p != std::string::npos && m.find(".cc:") < p) m = m.substr(p + 2);
      return err("bad expression: " + m);
    }
  }
  if (!std::isfinite(r)) return err("the result is not a finite number");
  Json v = number_json(r);
  return {true, text::py_json_dumps(v), v};
}

}  // namespace

double eval_expression(std::string_view expr, std::vector<double>* literals) {
  return ExprParser(expr, literals).parse();
}

std::string check_arguments(const ToolSpec& t, const Json& args) {
  if (!args.is_object()) return "arguments must be a JSON object";
  for (auto it = args.begin(); it != args.end(); ++it) {
    bool known = false;
    for (const auto& p : t.params) known |= p.name == it.key();
    if (!known) return fmt::format("unknown parameter '{}' for {}", it.key(), t.name);
  }
  for (const auto& p : t.params) {
    auto it = args.find(p.name);
    if (it == args.end() || it->is_null()) {
      if (p.required) return fmt::format("missing required parameter '{}'", p.name);
      continue;
    }
    bool ok = false;
    switch (p.type) {
      case ParamType::kString: ok = it->is_string(); break;
      case ParamType::kInteger: ok = it->is_number_integer() || (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>() && std::fabs(it->get<double>()) < 9e15); break;
      case ParamType::kNumber: ok = it->is_number(); break;
      case ParamType::kBoolean: ok = it->is_boolean(); break;
      case ParamType::kArray: ok = it->is_array(); break;
    }
    if (!ok) return fmt::format("parameter '{}' must be {}", p.name, type_name(p.type));
    if (!p.enum_values.empty() && std::find(p.enum_values.begin(), p.enum_values.end(), *it) == p.enum_values.end()) {
      std::string allowed;
      for (const auto& e : p.enum_values) allowed += (allowed.empty() ? "" : ", ") + text::py_json_dumps(e);
      return fmt::format("parameter '{}' must be one of {}", p.name, allowed);
    }
  }
  return "";
}

std::shared_ptr<const DbImage> build_image(const EnvSpec& spec) {
  DbSpec db = spec.db;
  if (!db.generator.empty()) db = generate_db(db.generator, db.seed, db.scale);
  sqlite3* raw = open_memory();
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> h(raw, sqlite3_close_v2);
  Guard g;
  SandboxLimits lim;
  configure(raw, &g, lim);
  auto sqlmsg = [&](const std::string& path) {
    std::string m = g.denied.empty() ? sqlite3_errmsg(raw) : "not allowed: " + g.denied;
    g.denied.clear();
    return fmt::format("spec: {}: {}", path, m);
  };
  // Schema: CREATE TABLE / CREATE INDEX only, one statement each.
  for (size_t i = 0; i < db.schema.size(); ++i) {
    const std::string path = db.generator.empty() ? fmt::format("db.schema[{}]", i) : fmt::format("db.generator {}: schema[{}]", db.generator, i);
    g.mode = Guard::kBuild;
    Stmt st;
    const char* tail = nullptr;
    if (sqlite3_prepare_v2(raw, db.schema[i].c_str(), -1, &st.s, &tail) != SQLITE_OK || !st.s) throw Error(sqlmsg(path));
    if (!only_space(tail)) throw Error(fmt::format("spec: {}: one statement per entry", path));
    if (sqlite3_step(st.s) != SQLITE_DONE) throw Error(sqlmsg(path));
  }
  g.mode = Guard::kTrusted;
  exec_trusted(raw, "BEGIN");
  for (const auto& [table, rows] : db.rows) {
    const std::string path = "db.rows." + table;
    int ncol = -1;
    {
      Stmt st;
      if (sqlite3_prepare_v2(raw, ("SELECT * FROM main." + quote_ident(table) + " LIMIT 0").c_str(), -1, &st.s, nullptr) != SQLITE_OK ||
          table.rfind("sqlite_", 0) == 0)
        throw Error(fmt::format("spec: {}: no such table in the schema", path));
      ncol = sqlite3_column_count(st.s);
    }
    std::string sql = "INSERT INTO main." + quote_ident(table) + " VALUES (";
    for (int c = 0; c < ncol; ++c) sql += c ? ",?" : "?";
    sql += ")";
    Stmt ins;
    if (sqlite3_prepare_v2(raw, sql.c_str(), -1, &ins.s, nullptr) != SQLITE_OK) throw Error(sqlmsg(path));
    for (size_t r = 0; r < rows.size(); ++r) {
      if (int(rows[r].size()) != ncol)
        throw Error(fmt::format("spec: {}[{}]: {} values for {} columns", path, r, rows[r].size(), ncol));
      sqlite3_reset(ins.s);
      for (int c = 0; c < ncol; ++c) bind_value(ins.s, c + 1, rows[r][size_t(c)]);
      if (sqlite3_step(ins.s) != SQLITE_DONE) throw Error(sqlmsg(fmt::format("{}[{}]", path, r)));
    }
  }
  exec_trusted(raw, "COMMIT");
  // Tools: one statement each, allowed by the tool authorizer, parameters exactly the declared ones.
  for (size_t i = 0; i < spec.tools.size(); ++i) {
    const ToolSpec& t = spec.tools[i];
    if (t.kind == ToolKind::kBuiltin) continue;
    const std::string path = fmt::format("tools[{}].sql", i);
    g.mode = Guard::kTool;
    g.write_allowed = t.kind == ToolKind::kSqlWrite;
    Stmt st;
    const char* tail = nullptr;
    const int rc = sqlite3_prepare_v2(raw, t.sql.c_str(), -1, &st.s, &tail);
    g.mode = Guard::kTrusted;
    if (rc != SQLITE_OK || !st.s) throw Error(sqlmsg(path));
    if (!only_space(tail)) throw Error(fmt::format("spec: {}: a tool runs exactly one statement", path));
    const bool ro = sqlite3_stmt_readonly(st.s);
    if (t.kind == ToolKind::kSqlRead && !ro) throw Error(fmt::format("spec: {}: the statement writes; mark the tool \"write\": true", path));
    if (t.kind == ToolKind::kSqlWrite && ro) throw Error(fmt::format("spec: {}: a write tool must INSERT, UPDATE or DELETE", path));
    std::vector<std::string> bound;
    for (int k = 1; k <= sqlite3_bind_parameter_count(st.s); ++k) {
      const char* n = sqlite3_bind_parameter_name(st.s, k);
      if (!n || n[0] != ':') throw Error(fmt::format("spec: {}: parameters must be named :name (no ?, @ or $)", path));
      const std::string name(n + 1);
      bool declared = false;
      for (const auto& p : t.params) declared |= p.name == name;
      if (!declared) throw Error(fmt::format("spec: {}: :{} is not a declared parameter", path, name));
      bound.push_back(name);
    }
    for (const auto& p : t.params)
      if (std::find(bound.begin(), bound.end(), p.name) == bound.end())
        throw Error(fmt::format("spec: {}: parameter '{}' is declared but not used by the statement", path, p.name));
  }
  auto img = std::make_shared<DbImage>();
  img->state_hash = hash_db(raw);
  sqlite3_int64 size = 0;
  unsigned char* bytes = sqlite3_serialize(raw, "main", &size, 0);
  DSA_CHECK(bytes != nullptr || db.schema.empty(), "sqlite: cannot serialize the database");
  if (bytes) img->bytes.assign(reinterpret_cast<const char*>(bytes), size_t(size));
  sqlite3_free(bytes);
  return img;
}

Sandbox::Sandbox(const EnvSpec& spec, std::shared_ptr<const DbImage> image, const SandboxLimits& lim)
    : spec_(spec), image_(std::move(image)), lim_(lim), guard_(std::make_unique<Guard>()) {
  DSA_CHECK(image_ != nullptr, "sandbox: no database image");
  db_ = open_memory();
  const size_t n = image_->bytes.size();
  if (n == 0) {  // an empty database (tool-less environments)
    configure(db_, guard_.get(), lim_);
    return;
  }
  auto* buf = static_cast<unsigned char*>(sqlite3_malloc64(n));
  if (!buf) {
    sqlite3_close(db_);
    throw Error("sandbox: out of memory");
  }
  std::memcpy(buf, image_->bytes.data(), n);
  const int rc = sqlite3_deserialize(db_, "main", buf, sqlite3_int64(n), sqlite3_int64(n),
                                     SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE);
  if (rc != SQLITE_OK) {
    std::string m = sqlite3_errmsg(db_);
    sqlite3_close(db_);
    throw Error("sandbox: cannot load the database copy: " + m);
  }
  configure(db_, guard_.get(), lim_);
}

Sandbox::~Sandbox() {
  for (auto& [n, s] : stmts_) sqlite3_finalize(s);
  sqlite3_close_v2(db_);
}

sqlite3_stmt* Sandbox::statement(const ToolSpec& t) {
  auto it = stmts_.find(t.name);
  if (it != stmts_.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  guard_->mode = Guard::kTool;
  guard_->write_allowed = t.kind == ToolKind::kSqlWrite;
  guard_->denied.clear();
  const int rc = sqlite3_prepare_v3(db_, t.sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
  guard_->mode = Guard::kTrusted;
  if (rc != SQLITE_OK) {
    sqlite3_finalize(s);
    return nullptr;
  }
  stmts_.emplace(t.name, s);
  return s;
}

ToolResult Sandbox::call_text(std::string_view name, std::string_view arguments_json) {
  if (int64_t(arguments_json.size()) > lim_.max_argument_bytes)
    return err(fmt::format("arguments longer than {} bytes", lim_.max_argument_bytes));
  Json args;
  try {
    args = text::parse_json_exact(arguments_json.empty() ? std::string_view("{}") : arguments_json, 16);
  } catch (const std::exception&) {
    ++calls_;
    return err("arguments are not valid JSON");
  }
  return call(name, args);
}

ToolResult Sandbox::call(std::string_view name, const Json& args) {
  ++calls_;
  try {
    const ToolSpec* t = spec_.find_tool(name);
    if (!t) {
      std::string known;
      for (const auto& x : spec_.tools) known += (known.empty() ? "" : ", ") + x.name;
      return err(fmt::format("unknown tool '{}' (tools: {})", std::string(name).substr(0, 64), known));
    }
    if (std::string m = check_arguments(*t, args); !m.empty()) return err(m);
    if (t->kind == ToolKind::kBuiltin) return run_builtin(*t, args);
    return run_sql(*t, args);
  } catch (const std::exception& e) {
    guard_->mode = Guard::kTrusted;
    return err(fmt::format("tool failed: {}", e.what()));
  }
}

ToolResult Sandbox::run_sql(const ToolSpec& t, const Json& args) {
  sqlite3_stmt* s = statement(t);
  if (!s) return err(fmt::format("{}: {}", t.name, guard_->denied.empty() ? sqlite3_errmsg(db_) : guard_->denied));
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  for (int k = 1; k <= sqlite3_bind_parameter_count(s); ++k) {
    const std::string pname(sqlite3_bind_parameter_name(s, k) + 1);
    auto it = args.find(pname);
    bind_value(s, k, it == args.end() ? Json(nullptr) : *it);
  }
  const bool write = t.kind == ToolKind::kSqlWrite;
  guard_->mode = Guard::kTrusted;
  if (write) exec_trusted(db_, "SAVEPOINT tool_call");
  guard_->mode = Guard::kTool;
  guard_->write_allowed = write;
  guard_->denied.clear();
  guard_->steps = 0;
  guard_->max_steps = lim_.max_vm_steps;
  guard_->interrupted = false;
  guard_->deadline = Clock::now() + std::chrono::microseconds(int64_t(lim_.time_ms * 1000));
  Json rows = Json::array();
  int64_t bytes = 2;
  std::string failure;
  const int ncol = sqlite3_column_count(s);
  for (;;) {
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) {
      failure = guard_->interrupted ? fmt::format("the query ran past the limit ({} ms / {} steps) and was stopped", lim_.time_ms, lim_.max_vm_steps)
                : !guard_->denied.empty() ? "not allowed: " + guard_->denied
                                          : std::string(sqlite3_errmsg(db_));
      break;
    }
    if (write) continue;
    if (int64_t(rows.size()) >= lim_.max_rows) {
      failure = fmt::format("the result has more than {} rows; ask for less", lim_.max_rows);
      break;
    }
    Json row = Json::object();
    for (int c = 0; c < ncol; ++c) {
      bytes += sqlite3_column_bytes(s, c) + int64_t(std::strlen(sqlite3_column_name(s, c))) + 8;
      row[sqlite3_column_name(s, c)] = column_json(s, c);
    }
    if (bytes > lim_.max_output_bytes) {
      failure = fmt::format("the result is larger than {} bytes; ask for less", lim_.max_output_bytes);
      break;
    }
    rows.push_back(std::move(row));
  }
  const int64_t changed = write ? sqlite3_changes64(db_) : 0;
  sqlite3_reset(s);
  guard_->mode = Guard::kTrusted;
  if (write) {
    if (!failure.empty()) exec_trusted(db_, "ROLLBACK TO tool_call");
    exec_trusted(db_, "RELEASE tool_call");
  }
  if (!failure.empty()) return err(fmt::format("{}: {}", t.name, failure));
  if (write) {
    Json v = {{"changed", changed}};
    return {true, text::py_json_dumps(v), v};
  }
  std::string content = text::py_json_dumps(rows);
  if (int64_t(content.size()) > lim_.max_output_bytes)
    return err(fmt::format("{}: the result is larger than {} bytes; ask for less", t.name, lim_.max_output_bytes));
  return {true, std::move(content), std::move(rows)};
}

uint64_t Sandbox::state_hash() {
  guard_->mode = Guard::kTrusted;
  return hash_db(db_);
}

}  // namespace dsa::env
