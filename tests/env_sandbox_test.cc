// env/: spec validation, the SQLite sandbox's rules and limits, verifiers.
#include <gtest/gtest.h>

#include "base/error.h"
#include "env/sandbox.h"
#include "env/spec.h"
#include "env/verify.h"

namespace dsa::env {
namespace {

Json base_spec() {
  return text::parse_json_exact(R"J({
    "version": 1, "name": "shop", "domain": "orders",
    "db": {"schema": ["CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)",
                      "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, total REAL NOT NULL, status TEXT NOT NULL)"],
           "rows": {"customers": [[1, "Maria Lopez", "maria@x.example"], [2, "James Smith", "james@x.example"]],
                    "orders": [[10, 1, 25.5, "pending"], [11, 1, 4.5, "shipped"], [12, 2, 100, "pending"]]}},
    "tools": [
      {"name": "find_customer", "description": "by exact name",
       "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
       "sql": "SELECT id, name, email FROM customers WHERE name = :name"},
      {"name": "get_order", "description": "one order",
       "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]},
       "sql": "SELECT * FROM orders WHERE id = :order_id"},
      {"name": "set_status", "description": "change an order's status",
       "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"},
                      "status": {"type": "string", "enum": ["pending", "shipped", "cancelled"]}}, "required": ["order_id", "status"]},
       "sql": "UPDATE orders SET status = :status WHERE id = :order_id", "write": true},
      {"name": "set_total", "description": "change a total (may be null: fails NOT NULL)",
       "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}, "total": {"type": "number"}}, "required": ["order_id"]},
       "sql": "UPDATE orders SET total = :total WHERE id = :order_id", "write": true},
      {"name": "calc", "description": "arithmetic", "builtin": "calculate"}
    ],
    "tasks": [
      {"id": "t1", "instruction": "Cancel order 10 and say its total.", "difficulty": 2,
       "gold": {"calls": [{"name": "get_order", "arguments": {"order_id": 10}},
                          {"name": "set_status", "arguments": {"order_id": 10, "status": "cancelled"}}],
                "answer": "Order 10 (total 25.5) is cancelled."},
       "verify": {"answer_number": 25.5, "db_state": true}}
    ]})J");
}

// Expects parse_spec or build_image of the mutated spec to fail with a message containing `want`.
void expect_spec_error(const std::function<void(Json&)>& mutate, const std::string& want) {
  Json j = base_spec();
  mutate(j);
  try {
    const EnvSpec s = parse_spec(j);
    build_image(s);
    ADD_FAILURE() << "accepted a bad spec; wanted an error with: " << want;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
  }
}

Json tool(const std::string& name, const std::string& sql, Json props = Json::object(), bool write = false) {
  Json t = {{"name", name}, {"description", "x"}, {"parameters", {{"type", "object"}, {"properties", props}}}, {"sql", sql}};
  if (write) t["write"] = true;
  return t;
}

TEST(EnvSpec, RoundTripAndBasics) {
  const EnvSpec s = parse_spec(base_spec());
  EXPECT_EQ(s.tools.size(), 5u);
  EXPECT_EQ(s.tools[4].kind, ToolKind::kBuiltin);
  EXPECT_EQ(s.tools[2].kind, ToolKind::kSqlWrite);
  const EnvSpec back = parse_spec(spec_to_json(s));
  EXPECT_EQ(text::py_json_dumps(spec_to_json(back)), text::py_json_dumps(spec_to_json(s)));
  EXPECT_EQ(s.openai_tools()[0]["function"]["name"], "find_customer");
}

TEST(EnvSpec, StructuralErrorsNameThePath) {
  expect_spec_error([](Json& j) { j.erase("version"); }, "missing required field 'version'");
  expect_spec_error([](Json& j) { j["version"] = 2; }, "version: unsupported version 2");
  expect_spec_error([](Json& j) { j["extra"] = 1; }, "unknown field 'extra'");
  expect_spec_error([](Json& j) { j["tools"][1]["name"] = "get order"; }, "tools[1].name: tool names must be identifiers");
  expect_spec_error([](Json& j) { j["tools"][1]["name"] = "find_customer"; }, "tools[1].name: duplicate tool name");
  expect_spec_error([](Json& j) { j["tools"][0]["parameters"]["properties"]["name"]["type"] = "date"; },
                    "tools[0].parameters.properties.name.type: unsupported type 'date'");
  expect_spec_error([](Json& j) { j["tools"][0]["parameters"]["required"] = {"nope"}; }, "tools[0].parameters.required: names an undeclared");
  expect_spec_error([](Json& j) { j["tools"][4]["sql"] = "SELECT 1"; }, "tools[4]: a tool needs exactly one of 'sql' and 'builtin'");
  expect_spec_error([](Json& j) { j["tools"][4]["builtin"] = "exec"; }, "tools[4].builtin: unknown built-in 'exec'");
  expect_spec_error([](Json& j) { j["tasks"][0]["gold"]["calls"][0]["name"] = "drop_all"; }, "tasks[0].gold.calls[0].name: no tool named 'drop_all'");
  expect_spec_error([](Json& j) { j["tasks"][0]["verify"] = Json::object(); }, "tasks[0].verify: a verifier needs at least one");
  expect_spec_error([](Json& j) { j["tasks"][0]["difficulty"] = 9; }, "tasks[0].difficulty: must be an integer in 1..5");
  expect_spec_error([](Json& j) { j["db"]["rows"]["orders"][0] = {1, 2}; }, "db.rows.orders[0]: 2 values for 4 columns");
  expect_spec_error([](Json& j) { j["db"]["rows"]["ghosts"] = Json::array({Json::array({1})}); }, "db.rows.ghosts: no such table");
  EXPECT_THROW(parse_spec_text("{\"version\": 1,"), Error);
}

TEST(EnvSpec, ForbiddenStatementsAreRefusedAtLoad) {
  auto add = [](Json t) { return [t](Json& j) { j["tools"].push_back(t); }; };
  expect_spec_error(add(tool("a", "ATTACH DATABASE '/tmp/x.db' AS x")), "tools[5].sql: not allowed: ATTACH");
  expect_spec_error(add(tool("a", "PRAGMA writable_schema = 1")), "tools[5].sql: not allowed: PRAGMA");
  expect_spec_error(add(tool("a", "PRAGMA table_info(orders)")), "not allowed: PRAGMA");
  expect_spec_error(add(tool("a", "DROP TABLE orders", Json::object(), true)), "tools[5].sql: not allowed");
  expect_spec_error(add(tool("a", "CREATE TABLE t (x)", Json::object(), true)), "not allowed");
  expect_spec_error(add(tool("a", "SELECT load_extension('/tmp/evil.so')")), "load_extension() is not allowed");
  expect_spec_error(add(tool("a", "SELECT sql FROM sqlite_master")), "reading sqlite_master is not allowed");
  expect_spec_error(add(tool("a", "DELETE FROM orders")), "not allowed: DELETE in a read-only tool");
  expect_spec_error(add(tool("a", "SELECT * FROM orders", Json::object(), true)), "a write tool must INSERT, UPDATE or DELETE");
  expect_spec_error(add(tool("a", "SELECT 1; DELETE FROM orders")), "exactly one statement");
  expect_spec_error(add(tool("a", "BEGIN")), "not allowed: transaction control");
  expect_spec_error(add(tool("a", "SELECT * FROM orders WHERE id = ?")), "parameters must be named :name");
  expect_spec_error(add(tool("a", "SELECT * FROM orders WHERE id = :oops")), ":oops is not a declared parameter");
  expect_spec_error(add(tool("a", "SELECT * FROM orders", {{"id", {{"type", "integer"}}}})), "parameter 'id' is declared but not used");
  expect_spec_error(add(tool("a", "SELECT * FROM nowhere")), "no such table: nowhere");
  expect_spec_error([](Json& j) { j["db"]["schema"].push_back("CREATE TRIGGER t AFTER INSERT ON orders BEGIN DELETE FROM customers; END"); },
                    "db.schema[2]: not allowed: CREATE TRIGGER");
  expect_spec_error([](Json& j) { j["db"]["schema"].push_back("ATTACH DATABASE ':memory:' AS aux"); }, "db.schema[2]: not allowed: ATTACH");
  expect_spec_error([](Json& j) { j["db"]["schema"].push_back("CREATE TABLE a (x); DROP TABLE orders"); }, "db.schema[2]: one statement per entry");
}

struct Fixture : ::testing::Test {
  EnvSpec spec = parse_spec(base_spec());
  std::shared_ptr<const DbImage> img = build_image(spec);
};

TEST_F(Fixture, ToolsReadAndWriteAnEpisodeCopy) {
  const std::string before = img->bytes;
  Sandbox a(spec, img), b(spec, img);
  ToolResult r = a.call_text("find_customer", R"({"name": "Maria Lopez"})");
  ASSERT_TRUE(r.ok) << r.content;
  EXPECT_EQ(r.content, R"([{"id": 1, "name": "Maria Lopez", "email": "maria@x.example"}])");
  const uint64_t h0 = a.state_hash();
  EXPECT_EQ(h0, img->state_hash);
  r = a.call_text("set_status", R"({"order_id": 10, "status": "cancelled"})");
  ASSERT_TRUE(r.ok) << r.content;
  EXPECT_EQ(r.content, R"({"changed": 1})");
  EXPECT_NE(a.state_hash(), h0);
  EXPECT_EQ(a.call_text("get_order", R"({"order_id": 10})").value[0]["status"], "cancelled");
  EXPECT_EQ(b.call_text("get_order", R"({"order_id": 10})").value[0]["status"], "pending");  // episodes are isolated
  EXPECT_EQ(b.state_hash(), h0);
  EXPECT_EQ(img->bytes, before);  // the source database is unchanged
  EXPECT_EQ(a.call_text("calc", R"({"expression": "2 * (3 + 4) - 1.5"})").content, "12.5");
}

TEST_F(Fixture, MalformedCallsBecomeErrorResults) {
  Sandbox sb(spec, img);
  auto expect_err = [&](std::string_view name, std::string_view args, const std::string& want) {
    const ToolResult r = sb.call_text(name, args);
    EXPECT_FALSE(r.ok) << name << " " << args;
    EXPECT_EQ(r.content.rfind("error: ", 0), 0u) << r.content;
    EXPECT_NE(r.content.find(want), std::string::npos) << r.content;
  };
  expect_err("rm_rf", "{}", "unknown tool 'rm_rf' (tools: find_customer, get_order");
  expect_err("get_order", "{\"order_id\": ", "arguments are not valid JSON");
  expect_err("get_order", "[10]", "arguments must be a JSON object");
  expect_err("get_order", R"({"order_id": "10"})", "parameter 'order_id' must be an integer");
  expect_err("get_order", R"({"order_id": 10, "and": 1})", "unknown parameter 'and'");
  expect_err("get_order", "{}", "missing required parameter 'order_id'");
  expect_err("set_status", R"({"order_id": 10, "status": "gone"})", "must be one of \"pending\", \"shipped\", \"cancelled\"");
  expect_err("calc", R"({"expression": "1/0"})", "division by zero");
  expect_err("calc", R"({"expression": "2 +"})", "bad expression");
  expect_err("calc", R"J({"expression": "system('ls')"})J", "bad expression");
  std::string deep(200, '[');
  expect_err("get_order", deep, "arguments are not valid JSON");
  expect_err("get_order", std::string(10000, ' '), "arguments longer than");
  // A failing write (NOT NULL) is rolled back and reported.
  const uint64_t h = sb.state_hash();
  expect_err("set_total", R"({"order_id": 10})", "NOT NULL constraint failed");
  EXPECT_EQ(sb.state_hash(), h);
  EXPECT_TRUE(sb.call_text("get_order", R"({"order_id": 10})").ok);  // still usable
}

TEST_F(Fixture, InjectionThroughArgumentsIsInert) {
  Sandbox sb(spec, img);
  for (const char* evil : {"x' OR '1'='1", "Maria Lopez'; DROP TABLE orders; --", "\" OR 1=1 --", "%", "Maria%"}) {
    Json args = {{"name", evil}};
    const ToolResult r = sb.call("find_customer", args);
    ASSERT_TRUE(r.ok) << r.content;
    EXPECT_EQ(r.content, "[]") << evil;
  }
  Json args = {{"order_id", 10}, {"status", "pending"}};
  EXPECT_TRUE(sb.call("set_status", args).ok);
  EXPECT_EQ(sb.state_hash(), img->state_hash);
  EXPECT_EQ(sb.call_text("get_order", R"({"order_id": 12})").value.size(), 1u);  // orders table intact
}

TEST(EnvSandbox, RunawayAndHugeResultsAreStopped) {
  Json j = base_spec();
  j["tools"].push_back(tool("forever", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) AS n FROM c"));
  j["tools"].push_back(tool("blob", "SELECT zeroblob(:n) AS b, printf('%.*c', :n, 'x') AS s", {{"n", {{"type", "integer"}}}}));
  j["tools"].push_back(tool("many", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT :n) SELECT x FROM c",
                            {{"n", {{"type", "integer"}}}}));
  const EnvSpec s = parse_spec(j);
  const auto img = build_image(s);
  SandboxLimits lim;
  lim.time_ms = 100;
  Sandbox sb(s, img, lim);
  ToolResult r = sb.call_text("forever", "{}");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.content.find("ran past the limit"), std::string::npos) << r.content;
  r = sb.call_text("blob", R"({"n": 100000000})");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.content.find("too big"), std::string::npos) << r.content;
  r = sb.call_text("blob", R"({"n": 100000})");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.content.find("larger than 16384 bytes"), std::string::npos) << r.content;
  r = sb.call_text("many", R"({"n": 5000})");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.content.find("more than 200 rows"), std::string::npos) << r.content;
  r = sb.call_text("many", R"({"n": 3})");
  ASSERT_TRUE(r.ok) << r.content;
  EXPECT_EQ(r.content, R"([{"x": 1}, {"x": 2}, {"x": 3}])");
  EXPECT_EQ(sb.state_hash(), img->state_hash);
}

TEST_F(Fixture, VerifierAndMutations) {
  const TaskSpec& t = spec.tasks[0];
  const Validation v = validate_task(spec, img, t);
  ASSERT_TRUE(v.ok) << v.error;
  EXPECT_GE(v.mutations, 5);
  const GoldRun g = replay(spec, img, t.gold_calls);
  EXPECT_TRUE(verify(t, "It was 25.50 and now it is cancelled.", g.end_state, g.end_state).pass);
  EXPECT_FALSE(verify(t, "It was 25.50.", img->state_hash, g.end_state).pass);  // answer right, state wrong
  EXPECT_FALSE(verify(t, "It was 26.", g.end_state, g.end_state).pass);
  for (const auto& m : answer_mutations(t)) EXPECT_FALSE(verify(t, m, g.end_state, g.end_state).pass) << m;
  // A verifier that cannot tell wrong end states apart is caught: db_state on a task whose gold
  // solution writes nothing.
  TaskSpec weak = t;
  weak.gold_calls.pop_back();
  EXPECT_FALSE(validate_task(spec, img, weak).ok);
  // A wrong gold answer is caught.
  TaskSpec wrong = t;
  wrong.gold_answer = "It was 4.5.";
  EXPECT_NE(validate_task(spec, img, wrong).error.find("gold answer fails"), std::string::npos);
  TaskSpec exact = t;
  exact.verify = {};
  exact.verify.answer_exact = "Maria Lopez";
  exact.gold_answer = "Thinking...\n**Answer:** maria  lopez.";
  EXPECT_TRUE(validate_task(spec, img, exact).ok);
  TaskSpec cd = t;
  cd.verify = {};
  cd.gold_calls.clear();
  cd.verify.has_countdown = true;
  cd.verify.countdown_numbers = {3, 5, 7};
  cd.verify.countdown_target = 22;
  cd.gold_answer = "Answer: 3 * 5 + 7 = 22";
  EXPECT_TRUE(validate_task(spec, img, cd).ok) << validate_task(spec, img, cd).error;
  EXPECT_FALSE(verify(cd, "Answer: 7 * 3 + 1", 0, 0).pass);
  EXPECT_FALSE(verify(cd, "Answer: 7 + 7 + 7 + 1", 0, 0).pass);
  double x = 0;
  ASSERT_TRUE(last_number("total $1,234.50.", &x));
  EXPECT_DOUBLE_EQ(x, 1234.5);
}

}  // namespace
}  // namespace dsa::env
