// Domain vocabularies, database generators and tool sets.
#include "env/domains.h"

#include <cctype>
#include <cmath>
#include <set>

#include "base/error.h"
#include "base/hash.h"
#include "env/synth.h"

namespace dsa::env {
namespace {

const std::vector<std::string> kFirst = {"Maria", "James", "Aisha", "Chen", "Olga", "Rahul", "Sofia", "Kwame",
                                         "Elena", "Tomas", "Yuki", "Fatima", "Liam", "Priya", "Mateo", "Ingrid",
                                         "Omar", "Hana", "Lucas", "Amara", "Noah", "Zara", "Pavel", "Mei"};
const std::vector<std::string> kLast = {"Lopez", "Smith", "Okafor", "Wang", "Petrova", "Sharma", "Rossi", "Mensah",
                                        "Garcia", "Novak", "Tanaka", "Haddad", "Murphy", "Iyer", "Silva", "Berg",
                                        "Khan", "Kim", "Moreau", "Adeyemi", "Brown", "Ali", "Volkov", "Lin"};
const std::vector<std::string> kCities = {"Lisbon", "Denver", "Nairobi", "Osaka", "Krakow", "Pune", "Turin", "Accra",
                                          "Seville", "Brno", "Sapporo", "Beirut", "Cork", "Chennai", "Recife", "Bergen"};
const std::vector<std::string> kPlaces = {"Ridgeview", "Cedar Hollow", "Granite Peak", "Willow Bend", "Harbor Point",
                                          "Stone Creek", "Maple Ford", "Eagle Pass", "Silver Lake", "Fox Hill",
                                          "Birch Valley", "Iron Gate", "Red Mesa", "Clearwater", "North Cape", "Pine Bluff"};

std::vector<Domain> make_domains() {
  std::vector<Domain> d;
  {
    Domain x;
    x.name = "orders"; x.title = "an online shop's order desk";
    x.parent = "customers"; x.parent_noun = "customer"; x.child = "orders"; x.child_noun = "order"; x.rel = "placed";
    x.contact_col = "email"; x.contact_noun = "email address"; x.region_col = "city"; x.region_noun = "city";
    x.label_col = "item"; x.label_noun = "item"; x.amount_col = "total"; x.amount_noun = "order total";
    x.amount_lo = 8; x.amount_hi = 480; x.unit = "$"; x.status_col = "status";
    x.statuses = {"pending", "shipped", "delivered", "cancelled"}; x.date_col = "placed_on";
    x.labels = {"espresso machine", "desk lamp", "running shoes", "bluetooth speaker", "yoga mat", "backpack",
                "cast iron pan", "wool scarf", "monitor stand", "e-reader", "tea kettle", "board game"};
    x.regions = kCities; x.contact_domain = "mail.example";
    d.push_back(x);
  }
  {
    Domain x;
    x.name = "flights"; x.title = "an airline's reservations system";
    x.parent = "passengers"; x.parent_noun = "passenger"; x.child = "bookings"; x.child_noun = "booking"; x.rel = "holds";
    x.contact_col = "phone"; x.contact_noun = "phone number"; x.region_col = "home_airport"; x.region_noun = "home airport";
    x.label_col = "flight_no"; x.label_noun = "flight number"; x.amount_col = "fare"; x.amount_noun = "fare";
    x.amount_lo = 49; x.amount_hi = 1290; x.unit = "$"; x.status_col = "status";
    x.statuses = {"confirmed", "checked_in", "cancelled", "flown"}; x.date_col = "departs_on";
    x.labels = {"DS101", "DS214", "DS330", "DS412", "DS518", "DS607", "DS725", "DS819", "DS903", "DS947"};
    x.regions = {"LIS", "DEN", "NBO", "KIX", "KRK", "PNQ", "TRN", "ACC", "SVQ", "BRQ", "CTS", "BEY"};
    d.push_back(x);
  }
  {
    Domain x;
    x.name = "library"; x.title = "a public library's loan desk";
    x.parent = "members"; x.parent_noun = "member"; x.child = "loans"; x.child_noun = "loan"; x.rel = "has";
    x.contact_col = "email"; x.contact_noun = "email address"; x.region_col = "branch"; x.region_noun = "home branch";
    x.label_col = "title"; x.label_noun = "book title"; x.amount_col = "fine"; x.amount_noun = "late fine";
    x.amount_lo = 0; x.amount_hi = 24; x.unit = "$"; x.status_col = "status";
    x.statuses = {"on_loan", "returned", "overdue", "lost"}; x.date_col = "due_on";
    x.labels = {"The Quiet Orbit", "Salt and Stone", "A Field Guide to Moss", "Northern Lights", "The Glass Harbor",
                "Counting Rivers", "Paper Lanterns", "The Last Cartographer", "Ember Season", "Tidal Notes"};
    x.regions = {"Central", "Riverside", "Hillcrest", "Old Town", "Westgate", "Parkside"};
    x.contact_domain = "readers.example";
    d.push_back(x);
  }
  {
    Domain x;
    x.name = "payroll"; x.title = "a company's payroll office";
    x.parent = "employees"; x.parent_noun = "employee"; x.child = "payslips"; x.child_noun = "payslip"; x.rel = "received";
    x.contact_col = "email"; x.contact_noun = "work email"; x.region_col = "department"; x.region_noun = "department";
    x.label_col = "period"; x.label_noun = "pay period"; x.amount_col = "gross"; x.amount_noun = "gross pay";
    x.amount_lo = 1800; x.amount_hi = 9400; x.unit = "$"; x.status_col = "status";
    x.statuses = {"draft", "approved", "paid", "void"}; x.date_col = "pay_date";
    x.labels = {"2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06", "2026-07", "2026-08"};
    x.regions = {"Engineering", "Sales", "Finance", "Support", "Legal", "Operations"};
    x.contact_domain = "corp.example";
    d.push_back(x);
  }
  {
    Domain x;
    x.name = "stations"; x.title = "a weather-station network";
    x.parent = "stations"; x.parent_noun = "station"; x.child = "readings"; x.child_noun = "reading"; x.rel = "recorded";
    x.contact_col = "operator"; x.contact_noun = "operator"; x.region_col = "region"; x.region_noun = "region";
    x.label_col = "sensor"; x.label_noun = "sensor"; x.amount_col = "rain_mm"; x.amount_noun = "rainfall";
    x.amount_lo = 0; x.amount_hi = 60; x.unit = " mm"; x.status_col = "status";
    x.statuses = {"valid", "suspect", "rejected"}; x.date_col = "read_on";
    x.labels = {"gauge-A", "gauge-B", "tipping-bucket", "optical", "weighing"};
    x.regions = {"Coastal", "Highlands", "Valley", "Plains", "Delta"};
    x.people = false; x.places = kPlaces;
    d.push_back(x);
  }
  {
    Domain x;
    x.name = "inventory"; x.title = "a distribution company's stock system";
    x.parent = "warehouses"; x.parent_noun = "warehouse"; x.child = "stock"; x.child_noun = "stock line"; x.rel = "holds";
    x.contact_col = "manager"; x.contact_noun = "manager"; x.region_col = "city"; x.region_noun = "city";
    x.label_col = "product"; x.label_noun = "product"; x.amount_col = "quantity"; x.amount_noun = "quantity";
    x.amount_int = true; x.amount_lo = 0; x.amount_hi = 900; x.unit = " units"; x.status_col = "status";
    x.statuses = {"in_stock", "reserved", "backorder", "discontinued"}; x.date_col = "counted_on";
    x.labels = {"pallet wrap", "steel bolts M8", "LED panels", "copper wire", "safety gloves", "cardboard boxes",
                "hand trucks", "label printers", "zip ties", "floor tiles"};
    x.regions = kCities; x.people = false; x.places = kPlaces;
    d.push_back(x);
  }
  return d;
}

std::string slug(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (std::isalnum(static_cast<unsigned char>(c))) o += char(std::tolower(static_cast<unsigned char>(c)));
    else if (!o.empty() && o.back() != '.') o += '.';
  }
  return o;
}

Json amount_value(const Domain& d, Rng& r) {
  const double x = d.amount_lo + (d.amount_hi - d.amount_lo) * r.unit();
  if (d.amount_int) return Json(int64_t(std::llround(x)));
  return Json(std::round(x * (d.unit == " mm" ? 10 : 100)) / (d.unit == " mm" ? 10 : 100));
}

}  // namespace

const std::vector<Domain>& domains() {
  static const std::vector<Domain> d = make_domains();
  return d;
}

const Domain& find_domain(const std::string& name) {
  for (const auto& d : domains())
    if (d.name == name) return d;
  std::string known;
  for (const auto& d : domains()) known += (known.empty() ? "" : ", ") + d.name;
  throw Error(fmt::format("unknown domain/generator '{}' (known: {})", name, known));
}

std::vector<std::string> domain_names() {
  std::vector<std::string> out;
  for (const auto& d : domains()) out.push_back(d.name);
  return out;
}

DbSpec generate_db(const std::string& generator, uint64_t seed, int64_t scale) {
  const Domain& d = find_domain(generator);
  Rng r(splitmix64(seed ^ fnv1a_bytes(kFnv1aOffset, d.name)));
  const int64_t n_parent = 14 + scale, n_child = 3 * n_parent + 6;
  DbSpec db;
  db.schema = {
      fmt::format("CREATE TABLE {} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, {} TEXT NOT NULL, {} TEXT NOT NULL)",
                  d.parent, d.contact_col, d.region_col),
      fmt::format("CREATE TABLE {} (id INTEGER PRIMARY KEY, {}_id INTEGER NOT NULL REFERENCES {}(id), {} TEXT NOT NULL, "
                  "{} {} NOT NULL, {} TEXT NOT NULL, {} TEXT NOT NULL)",
                  d.child, d.parent_noun, d.parent, d.label_col, d.amount_col, d.amount_int ? "INTEGER" : "REAL",
                  d.status_col, d.date_col),
      fmt::format("CREATE INDEX {}_by_{} ON {}({}_id)", d.child, d.parent_noun, d.child, d.parent_noun)};
  std::vector<Json> parents, children;
  std::set<std::string> used;
  const int64_t base_id = 100 * r.uniform(1, 9);
  for (int64_t i = 0; i < n_parent; ++i) {
    std::string name;
    if (i > 0 && i % 5 == 0) {
      // A near-namesake of an earlier row: a search by the shorter name also finds this one.
      const std::string prev = parents[size_t(r.uniform(0, i - 1))][1].get<std::string>();
      name = d.people ? prev + "-" + r.pick(kLast) : prev + " " + r.pick(std::vector<std::string>{"East", "West", "Annex", "South"});
    } else {
      for (int tries = 0; tries < 50 && (name.empty() || used.count(name)); ++tries)
        name = d.people ? r.pick(kFirst) + " " + r.pick(kLast)
                        : r.pick(d.places) + (d.name == "inventory" ? " Depot" : "");
    }
    if (used.count(name)) name += " " + std::to_string(i);
    used.insert(name);
    std::string contact;
    if (d.contact_col == "email") contact = slug(name) + "@" + (d.contact_domain.empty() ? "mail.example" : d.contact_domain);
    else if (d.contact_col == "phone") contact = fmt::format("+1-555-{:04d}", r.uniform(0, 9999));
    else contact = r.pick(kFirst) + " " + r.pick(kLast);
    parents.push_back(Json::array({base_id + i, name, contact, r.pick(d.regions)}));
  }
  const int64_t child_base = 1000 * r.uniform(1, 9) + r.uniform(0, 99);
  for (int64_t i = 0; i < n_child; ++i) {
    const int64_t p = i < n_parent ? i : r.uniform(0, n_parent - 1);  // every parent has at least one
    const std::string date = fmt::format("2026-{:02d}-{:02d}", r.uniform(1, 12), r.uniform(1, 28));
    children.push_back(Json::array({child_base + i, base_id + p, r.pick(d.labels), amount_value(d, r),
                                    r.pick(d.statuses), date}));
  }
  db.rows = {{d.parent, parents}, {d.child, children}};
  return db;
}

EnvSpec domain_env(const std::string& name, uint64_t db_seed, int64_t scale) {
  const Domain& d = find_domain(name);
  EnvSpec s;
  s.name = fmt::format("{}-{:016x}", d.name, db_seed);
  s.domain = d.name;
  s.description = fmt::format("Tools over {}: {} and their {}.", d.title, d.parent, d.child);
  s.system_prompt = fmt::format(
      "You are an assistant for {}. Use the tools to look things up and to make changes; never guess "
      "values you can look up. When you are done, reply with a short final answer.", d.title);
  s.db.generator = d.name;
  s.db.seed = db_seed;
  s.db.scale = scale;
  const std::string cid = d.child_noun == "stock line" ? "line" : d.child_noun;
  const std::string pid = d.parent_noun + "_id", chid = cid + "_id";
  Json statuses = Json::array();
  for (const auto& st : d.statuses) statuses.push_back(st);
  auto obj = [](Json props, std::vector<std::string> req) {
    return Json{{"type", "object"}, {"properties", std::move(props)}, {"required", req}};
  };
  auto tool = [&](std::string n, std::string desc, Json params, std::string sql, bool write) {
    ToolSpec t;
    t.name = std::move(n);
    t.description = std::move(desc);
    t.parameters = std::move(params);
    t.sql = std::move(sql);
    t.kind = write ? ToolKind::kSqlWrite : ToolKind::kSqlRead;
    s.tools.push_back(std::move(t));
  };
  tool("get_" + cid, fmt::format("Look up one {} by its id.", d.child_noun),
       obj({{chid, {{"type", "integer"}, {"description", fmt::format("the {} id", d.child_noun)}}}}, {chid}),
       fmt::format("SELECT * FROM {} WHERE id = :{}", d.child, chid), false);
  tool("get_" + d.parent_noun, fmt::format("Look up one {} by id.", d.parent_noun),
       obj({{pid, {{"type", "integer"}, {"description", fmt::format("the {} id", d.parent_noun)}}}}, {pid}),
       fmt::format("SELECT * FROM {} WHERE id = :{}", d.parent, pid), false);
  tool("find_" + d.parent, fmt::format("Search {} whose name contains the given text (at most 20).", d.parent),
       obj({{"name", {{"type", "string"}, {"description", "part of the name"}}}}, {"name"}),
       fmt::format("SELECT id, name, {} FROM {} WHERE name LIKE '%' || :name || '%' ORDER BY id LIMIT 20", d.region_col, d.parent), false);
  tool("list_" + cid + "s", fmt::format("List the {}s of one {}, optionally only those with a given status.", d.child_noun, d.parent_noun),
       obj({{pid, {{"type", "integer"}, {"description", fmt::format("the {} id", d.parent_noun)}}},
            {"status", {{"type", "string"}, {"enum", statuses}, {"description", "only this status"}}}}, {pid}),
       fmt::format("SELECT id, {}, {}, {}, {} FROM {} WHERE {}_id = :{} AND (:status IS NULL OR {} = :status) ORDER BY id",
                   d.label_col, d.amount_col, d.status_col, d.date_col, d.child, d.parent_noun, pid, d.status_col), false);
  tool("count_" + cid + "s_by_status", fmt::format("Count all {}s with a status, across every {}.", d.child_noun, d.parent_noun),
       obj({{"status", {{"type", "string"}, {"enum", statuses}}}}, {"status"}),
       fmt::format("SELECT COUNT(*) AS count FROM {} WHERE {} = :status", d.child, d.status_col), false);
  tool("set_" + cid + "_status", fmt::format("Change the status of one {}.", d.child_noun),
       obj({{chid, {{"type", "integer"}}}, {"status", {{"type", "string"}, {"enum", statuses}}}}, {chid, "status"}),
       fmt::format("UPDATE {} SET {} = :status WHERE id = :{}", d.child, d.status_col, chid), true);
  tool("update_" + d.parent_noun + "_" + d.contact_col, fmt::format("Change the {} of one {}.", d.contact_noun, d.parent_noun),
       obj({{pid, {{"type", "integer"}}}, {"value", {{"type", "string"}, {"description", fmt::format("the new {}", d.contact_noun)}}}}, {pid, "value"}),
       fmt::format("UPDATE {} SET {} = :value WHERE id = :{}", d.parent, d.contact_col, pid), true);
  for (const char* b : {"sum", "calculate"}) {
    ToolSpec t;
    t.name = b;
    t.builtin = b;
    t.kind = ToolKind::kBuiltin;
    t.description = std::string(b) == "sum" ? "Add up a list of numbers exactly." : "Evaluate an arithmetic expression.";
    t.parameters = builtin_parameters(b);
    s.tools.push_back(std::move(t));
  }
  return parse_spec(spec_to_json(s));  // the round trip parses the parameter schemas (one code path)
}

}  // namespace dsa::env
