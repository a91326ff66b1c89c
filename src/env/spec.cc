// Environment spec v1: parsing with JSON-path errors, and writing back.
#include "env/spec.h"

#include <fstream>
#include <regex>
#include <set>

#include "base/error.h"
#include "base/files.h"

namespace dsa::env {
namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error(fmt::format("spec: {}: {}", path.empty() ? "(top)" : path, what));
}

const Json& need(const Json& o, const char* key, const std::string& path) {
  auto it = o.find(key);
  if (it == o.end()) bad(path, fmt::format("missing required field '{}'", key));
  return *it;
}

std::string need_string(const Json& o, const char* key, const std::string& path, bool allow_empty = false) {
  const Json& v = need(o, key, path);
  const std::string p = path.empty() ? key : path + "." + key;
  if (!v.is_string()) bad(p, "must be a string");
  std::string s = v.get<std::string>();
  if (!allow_empty && s.empty()) bad(p, "must not be empty");
  return s;
}

std::string opt_string(const Json& o, const char* key, const std::string& path) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return "";
  if (!it->is_string()) bad(path.empty() ? key : path + "." + key, "must be a string");
  return it->get<std::string>();
}

void check_keys(const Json& o, const std::string& path, std::initializer_list<const char*> allowed) {
  if (!o.is_object()) bad(path, "must be an object");
  for (auto it = o.begin(); it != o.end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok |= it.key() == a;
    if (!ok) bad(path, fmt::format("unknown field '{}'", it.key()));
  }
}

bool valid_ident(const std::string& s) {
  static const std::regex re("^[A-Za-z_][A-Za-z0-9_]{0,63}$");
  return std::regex_match(s, re);
}

ParamType parse_type(const Json& v, const std::string& path) {
  if (!v.is_string()) bad(path, "must be a string");
  const std::string t = v.get<std::string>();
  if (t == "string") return ParamType::kString;
  if (t == "integer") return ParamType::kInteger;
  if (t == "number") return ParamType::kNumber;
  if (t == "boolean") return ParamType::kBoolean;
  if (t == "array") return ParamType::kArray;
  bad(path, fmt::format("unsupported type '{}' (string, integer, number, boolean, array)", t));
}

bool value_has_type(const Json& v, ParamType t) {
  switch (t) {
    case ParamType::kString: return v.is_string();
    case ParamType::kInteger: return v.is_number_integer();
    case ParamType::kNumber: return v.is_number();
    case ParamType::kBoolean: return v.is_boolean();
    case ParamType::kArray: return v.is_array();
  }
  return false;
}

std::vector<ToolParam> parse_params(const Json& p, const std::string& path) {
  check_keys(p, path, {"type", "properties", "required", "description", "additionalProperties"});
  if (need(p, "type", path) != "object") bad(path + ".type", "must be \"object\"");
  std::vector<ToolParam> out;
  auto props = p.find("properties");
  if (props != p.end()) {
    if (!props->is_object()) bad(path + ".properties", "must be an object");
    for (auto it = props->begin(); it != props->end(); ++it) {
      const std::string pp = path + ".properties." + it.key();
      if (!valid_ident(it.key())) bad(pp, "parameter names must be identifiers ([A-Za-z_][A-Za-z0-9_]*)");
      check_keys(*it, pp, {"type", "description", "enum", "items", "minimum", "maximum"});
      ToolParam tp;
      tp.name = it.key();
      tp.type = parse_type(need(*it, "type", pp), pp + ".type");
      tp.required = false;
      if (auto e = it->find("enum"); e != it->end()) {
        if (!e->is_array() || e->empty()) bad(pp + ".enum", "must be a non-empty array");
        for (const auto& v : *e) {
          if (!value_has_type(v, tp.type)) bad(pp + ".enum", "values must have the parameter's type");
          tp.enum_values.push_back(v);
        }
      }
      out.push_back(std::move(tp));
    }
  }
  if (auto r = p.find("required"); r != p.end()) {
    if (!r->is_array()) bad(path + ".required", "must be an array of parameter names");
    for (const auto& n : *r) {
      bool found = false;
      for (auto& tp : out)
        if (n.is_string() && tp.name == n.get<std::string>()) found = tp.required = true;
      if (!found) bad(path + ".required", fmt::format("names an undeclared parameter {}", json_excerpt(n)));
    }
  }
  return out;
}

Json builtin_schema(std::initializer_list<std::pair<const char*, const char*>> props, const char* type) {
  Json p = Json::object();
  Json req = Json::array();
  for (auto& [n, d] : props) {
    Json one = {{"type", type}, {"description", d}};
    if (std::string(type) == "array") one["items"] = {{"type", "number"}};
    p[n] = one;
    req.push_back(n);
  }
  return {{"type", "object"}, {"properties", p}, {"required", req}};
}

VerifierSpec parse_verifier(const Json& v, const std::string& path) {
  check_keys(v, path, {"answer_contains", "answer_number", "answer_exact", "countdown", "db_state"});
  VerifierSpec out;
  if (auto it = v.find("answer_contains"); it != v.end()) {
    if (!it->is_array() || it->empty()) bad(path + ".answer_contains", "must be a non-empty array of strings");
    for (const auto& s : *it) {
      if (!s.is_string() || s.get<std::string>().empty()) bad(path + ".answer_contains", "must hold non-empty strings");
      out.answer_contains.push_back(s.get<std::string>());
    }
  }
  if (auto it = v.find("answer_number"); it != v.end()) {
    if (!it->is_number()) bad(path + ".answer_number", "must be a number");
    out.has_number = true;
    out.answer_number = it->get<double>();
  }
  if (auto it = v.find("answer_exact"); it != v.end()) {
    if (!it->is_string() || it->get<std::string>().empty()) bad(path + ".answer_exact", "must be a non-empty string");
    out.answer_exact = it->get<std::string>();
  }
  if (auto it = v.find("countdown"); it != v.end()) {
    const std::string cp = path + ".countdown";
    check_keys(*it, cp, {"numbers", "target"});
    const Json& nums = need(*it, "numbers", cp);
    if (!nums.is_array() || nums.size() < 2 || nums.size() > 8) bad(cp + ".numbers", "must be 2..8 integers");
    for (const auto& n : nums) {
      if (!n.is_number_integer()) bad(cp + ".numbers", "must be integers");
      out.countdown_numbers.push_back(n.get<int64_t>());
    }
    const Json& t = need(*it, "target", cp);
    if (!t.is_number_integer()) bad(cp + ".target", "must be an integer");
    out.countdown_target = t.get<int64_t>();
    out.has_countdown = true;
  }
  if (auto it = v.find("db_state"); it != v.end()) {
    if (!it->is_boolean()) bad(path + ".db_state", "must be true or false");
    out.db_state = it->get<bool>();
  }
  if (out.empty()) bad(path, "a verifier needs at least one of answer_contains, answer_number, answer_exact, countdown, db_state");
  return out;
}

}  // namespace

bool is_builtin(std::string_view b) {
  return b == "add" || b == "subtract" || b == "multiply" || b == "divide" || b == "sum" || b == "max" ||
         b == "min" || b == "calculate";
}

Json builtin_parameters(std::string_view b) {
  if (b == "add" || b == "subtract" || b == "multiply" || b == "divide")
    return builtin_schema({{"a", "first operand"}, {"b", "second operand"}}, "number");
  if (b == "sum" || b == "max" || b == "min") return builtin_schema({{"values", "list of numbers"}}, "array");
  if (b == "calculate")
    return builtin_schema({{"expression", "arithmetic expression: numbers, + - * / and parentheses"}}, "string");
  throw Error(fmt::format("unknown built-in tool '{}'", b));
}

const ToolSpec* EnvSpec::find_tool(std::string_view n) const {
  for (const auto& t : tools)
    if (t.name == n) return &t;
  return nullptr;
}

Json EnvSpec::openai_tools() const {
  Json out = Json::array();
  for (const auto& t : tools)
    out.push_back({{"type", "function"},
                   {"function", {{"name", t.name}, {"description", t.description}, {"parameters", t.parameters}}}});
  return out;
}

EnvSpec parse_spec(const Json& j) {
  check_keys(j, "", {"version", "name", "domain", "description", "system_prompt", "db", "tools", "tasks"});
  EnvSpec s;
  const Json& ver = need(j, "version", "");
  if (!ver.is_number_integer() || ver.get<int64_t>() != kSpecVersion)
    bad("version", fmt::format("unsupported version {} (this build reads version {})", json_excerpt(ver), kSpecVersion));
  s.name = need_string(j, "name", "");
  s.domain = opt_string(j, "domain", "");
  s.description = opt_string(j, "description", "");
  s.system_prompt = opt_string(j, "system_prompt", "");

  const Json& db = j.contains("db") ? j["db"] : Json::object();  // no db: an empty database (tool-less tasks)
  check_keys(db, "db", {"schema", "rows", "generator", "seed", "scale"});
  s.db.generator = opt_string(db, "generator", "db");
  if (!s.db.generator.empty()) {
    if (db.contains("schema") || db.contains("rows")) bad("db", "give either generator (+ seed) or schema + rows, not both");
    if (auto it = db.find("seed"); it != db.end()) {
      if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0))
        bad("db.seed", "must be a non-negative integer");
      s.db.seed = it->get<uint64_t>();
    }
    if (auto it = db.find("scale"); it != db.end()) {
      if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 100000)
        bad("db.scale", "must be an integer in 0..100000");
      s.db.scale = it->get<int64_t>();
    }
  } else if (db.contains("schema") || db.contains("rows")) {
    const Json& sch = need(db, "schema", "db");
    if (!sch.is_array() || sch.empty()) bad("db.schema", "must be a non-empty array of CREATE statements");
    for (size_t i = 0; i < sch.size(); ++i) {
      if (!sch[i].is_string() || sch[i].get<std::string>().empty()) bad(fmt::format("db.schema[{}]", i), "must be a non-empty string");
      s.db.schema.push_back(sch[i].get<std::string>());
    }
    if (auto it = db.find("rows"); it != db.end()) {
      if (!it->is_object()) bad("db.rows", "must be an object: table name -> array of rows");
      for (auto t = it->begin(); t != it->end(); ++t) {
        const std::string tp = "db.rows." + t.key();
        if (!valid_ident(t.key())) bad(tp, "table names must be identifiers");
        if (!t->is_array()) bad(tp, "must be an array of rows");
        std::vector<Json> rows;
        for (size_t r = 0; r < t->size(); ++r) {
          const Json& row = (*t)[r];
          if (!row.is_array() || row.empty()) bad(fmt::format("{}[{}]", tp, r), "a row must be a non-empty array of values");
          for (const auto& v : row)
            if (v.is_structured() || v.is_binary()) bad(fmt::format("{}[{}]", tp, r), "values must be strings, numbers, booleans or null");
          rows.push_back(row);
        }
        s.db.rows.emplace_back(t.key(), std::move(rows));
      }
    }
  }

  const Json& tools = need(j, "tools", "");
  if (!tools.is_array()) bad("tools", "must be an array");
  std::set<std::string> names;
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string p = fmt::format("tools[{}]", i);
    const Json& t = tools[i];
    check_keys(t, p, {"name", "description", "parameters", "sql", "write", "builtin"});
    ToolSpec ts;
    ts.name = need_string(t, "name", p);
    if (!valid_ident(ts.name)) bad(p + ".name", "tool names must be identifiers ([A-Za-z_][A-Za-z0-9_]*, at most 64)");
    if (!names.insert(ts.name).second) bad(p + ".name", fmt::format("duplicate tool name '{}'", ts.name));
    ts.description = need_string(t, "description", p);
    const bool has_sql = t.contains("sql"), has_builtin = t.contains("builtin");
    if (has_sql == has_builtin) bad(p, "a tool needs exactly one of 'sql' and 'builtin'");
    if (has_sql) {
      ts.sql = need_string(t, "sql", p);
      bool write = false;
      if (auto w = t.find("write"); w != t.end()) {
        if (!w->is_boolean()) bad(p + ".write", "must be true or false");
        write = w->get<bool>();
      }
      ts.kind = write ? ToolKind::kSqlWrite : ToolKind::kSqlRead;
      ts.parameters = t.contains("parameters") ? t["parameters"] : Json{{"type", "object"}, {"properties", Json::object()}};
    } else {
      if (t.contains("write")) bad(p + ".write", "only SQL tools can write");
      ts.builtin = need_string(t, "builtin", p);
      if (!is_builtin(ts.builtin))
        bad(p + ".builtin", fmt::format("unknown built-in '{}' (add, subtract, multiply, divide, sum, max, min, calculate)", ts.builtin));
      ts.kind = ToolKind::kBuiltin;
      if (t.contains("parameters")) bad(p + ".parameters", "built-in tools have fixed parameters; leave it out");
      ts.parameters = builtin_parameters(ts.builtin);
    }
    ts.params = parse_params(ts.parameters, p + ".parameters");
    s.tools.push_back(std::move(ts));
  }

  const Json& tasks = need(j, "tasks", "");
  if (!tasks.is_array()) bad("tasks", "must be an array");
  std::set<std::string> ids;
  for (size_t i = 0; i < tasks.size(); ++i) {
    const std::string p = fmt::format("tasks[{}]", i);
    const Json& t = tasks[i];
    check_keys(t, p, {"id", "instruction", "difficulty", "split", "gold", "verify", "tags"});
    TaskSpec ts;
    ts.id = need_string(t, "id", p);
    if (!ids.insert(ts.id).second) bad(p + ".id", fmt::format("duplicate task id '{}'", ts.id));
    ts.instruction = need_string(t, "instruction", p);
    if (auto d = t.find("difficulty"); d != t.end()) {
      if (!d->is_number_integer() || d->get<int64_t>() < 1 || d->get<int64_t>() > 5) bad(p + ".difficulty", "must be an integer in 1..5");
      ts.difficulty = int(d->get<int64_t>());
    }
    ts.split = opt_string(t, "split", p);
    if (ts.split.empty()) ts.split = "train";
    if (ts.split != "train" && ts.split != "heldout") bad(p + ".split", "must be \"train\" or \"heldout\"");
    const Json& g = need(t, "gold", p);
    check_keys(g, p + ".gold", {"calls", "answer", "reasoning"});
    if (auto c = g.find("calls"); c != g.end()) {
      if (!c->is_array()) bad(p + ".gold.calls", "must be an array");
      for (size_t k = 0; k < c->size(); ++k) {
        const std::string cp = fmt::format("{}.gold.calls[{}]", p, k);
        const Json& call = (*c)[k];
        check_keys(call, cp, {"name", "arguments"});
        ToolCallSpec tc;
        tc.name = need_string(call, "name", cp);
        if (!s.find_tool(tc.name)) bad(cp + ".name", fmt::format("no tool named '{}'", tc.name));
        if (auto a = call.find("arguments"); a != call.end()) {
          if (!a->is_object()) bad(cp + ".arguments", "must be an object");
          tc.arguments = *a;
        }
        ts.gold_calls.push_back(std::move(tc));
      }
    }
    ts.gold_answer = need_string(g, "answer", p + ".gold", true);
    ts.gold_reasoning = opt_string(g, "reasoning", p + ".gold");
    ts.verify = parse_verifier(need(t, "verify", p), p + ".verify");
    if (auto tg = t.find("tags"); tg != t.end()) {
      if (!tg->is_object()) bad(p + ".tags", "must be an object");
      ts.tags = *tg;
    }
    s.tasks.push_back(std::move(ts));
  }
  return s;
}

EnvSpec parse_spec_text(std::string_view text) {
  Json j;
  try {
    j = text::parse_json_exact(text, 64);
  } catch (const Error& e) {
    throw Error(fmt::format("spec: not valid JSON: {}", e.what()));
  }
  return parse_spec(j);
}

Json task_to_json(const TaskSpec& t) {
  Json calls = Json::array();
  for (const auto& c : t.gold_calls) calls.push_back({{"name", c.name}, {"arguments", c.arguments}});
  Json gold = {{"calls", calls}, {"answer", t.gold_answer}};
  if (!t.gold_reasoning.empty()) gold["reasoning"] = t.gold_reasoning;
  Json v = Json::object();
  const VerifierSpec& f = t.verify;
  if (!f.answer_contains.empty()) v["answer_contains"] = f.answer_contains;
  if (f.has_number) v["answer_number"] = f.answer_number;
  if (!f.answer_exact.empty()) v["answer_exact"] = f.answer_exact;
  if (f.has_countdown) v["countdown"] = {{"numbers", f.countdown_numbers}, {"target", f.countdown_target}};
  if (f.db_state) v["db_state"] = true;
  Json out = {{"id", t.id}, {"instruction", t.instruction}, {"difficulty", t.difficulty}, {"split", t.split},
              {"gold", gold}, {"verify", v}};
  if (!t.tags.empty()) out["tags"] = t.tags;
  return out;
}

Json spec_to_json(const EnvSpec& s) {
  Json db = Json::object();
  if (s.db.generator.empty() && s.db.schema.empty()) {
  } else if (!s.db.generator.empty()) {
    db["generator"] = s.db.generator;
    db["seed"] = s.db.seed;
    if (s.db.scale) db["scale"] = s.db.scale;
  } else {
    db["schema"] = s.db.schema;
    Json rows = Json::object();
    for (const auto& [t, r] : s.db.rows) rows[t] = r;
    db["rows"] = rows;
  }
  Json tools = Json::array();
  for (const auto& t : s.tools) {
    Json o = {{"name", t.name}, {"description", t.description}};
    if (t.kind == ToolKind::kBuiltin) {
      o["builtin"] = t.builtin;
    } else {
      o["parameters"] = t.parameters;
      o["sql"] = t.sql;
      if (t.kind == ToolKind::kSqlWrite) o["write"] = true;
    }
    tools.push_back(o);
  }
  Json tasks = Json::array();
  for (const auto& t : s.tasks) tasks.push_back(task_to_json(t));
  Json out = {{"version", s.version}, {"name", s.name}};
  if (!s.domain.empty()) out["domain"] = s.domain;
  if (!s.description.empty()) out["description"] = s.description;
  if (!s.system_prompt.empty()) out["system_prompt"] = s.system_prompt;
  if (!db.empty()) out["db"] = db;
  out["tools"] = tools;
  out["tasks"] = tasks;
  return out;
}

std::vector<EnvSpec> load_specs(const std::string& path) {
  std::ifstream in(path);
  DSA_CHECK(in.good(), "cannot read {}", path);
  std::vector<EnvSpec> out;
  const bool jsonl = path.size() >= 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0;
  if (!jsonl) {
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
      out.push_back(parse_spec_text(all));
    } catch (const Error& e) {
      throw Error(fmt::format("{}: {}", path, e.what()));
    }
    return out;
  }
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      out.push_back(parse_spec_text(line));
    } catch (const Error& e) {
      throw Error(fmt::format("{}:{}: {}", path, n, e.what()));
    }
  }
  DSA_CHECK(!out.empty(), "{}: no environment specs in the file", path);
  return out;
}

}  // namespace dsa::env
