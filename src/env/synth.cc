// Task templates of the tool domains, the synthesis pipeline (validation, dedup, splits) and stats.
#include "env/synth.h"

#include <cmath>
#include <functional>
#include <optional>
#include <set>

#include "base/error.h"
#include "base/hash.h"
#include "env/domains.h"
#include "env/sandbox.h"
#include "env/verify.h"

namespace dsa::env {

uint64_t Rng::next() {
  s += 0x9E3779B97F4A7C15ULL;
  uint64_t z = s;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
int64_t Rng::uniform(int64_t lo, int64_t hi) { return lo + int64_t(next() % uint64_t(hi - lo + 1)); }
double Rng::unit() { return double(next() >> 11) * 0x1.0p-53; }

std::string split_of(const std::string& domain, const std::string& instruction, int heldout_percent) {
  const uint64_t h = splitmix64(fnv1a_bytes(fnv1a_bytes(kFnv1aOffset, domain), instruction));
  return int(h % 100) < heldout_percent ? "heldout" : "train";
}

namespace {

// A gold program under construction: every call runs in a sandbox as it is added.
struct Prog {
  Sandbox sb;
  std::vector<ToolCallSpec> calls;
  Prog(const EnvSpec& s, std::shared_ptr<const DbImage> img) : sb(s, std::move(img)) {}
  Json call(const std::string& n, Json args) {
    ToolResult r = sb.call(n, args);
    DSA_CHECK(r.ok, "gold call {} failed: {}", n, r.content);
    calls.push_back({n, std::move(args)});
    return r.value;
  }
};

struct Ctx {
  const Domain& d;
  const EnvSpec& env;
  std::shared_ptr<const DbImage> img;
  const std::vector<Json>& parents;   // [id, name, contact, region]
  const std::vector<Json>& children;  // [id, parent_id, label, amount, status, date]
  Rng& r;
  std::string cid() const { return d.child_noun == "stock line" ? "line" : d.child_noun; }
  std::string pid() const { return d.parent_noun + "_id"; }
};

std::string fmt_amount(const Domain& d, double x) {
  std::string n = d.amount_int ? fmt::format("{}", int64_t(std::llround(x)))
                               : (d.unit == " mm" ? fmt::format("{:.1f}", x) : fmt::format("{:.2f}", x));
  if (d.unit == "$") return "$" + n;
  return n + d.unit;
}

std::string cap(std::string s) {
  if (!s.empty()) s[0] = char(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

struct Draft {
  TaskSpec t;
  std::vector<ToolCallSpec> calls;
};

// The parent row whose exact name is `name` among search results (the others are distractors).
int64_t exact_match(const Json& rows, const std::string& name, int* distractors) {
  int64_t id = -1;
  *distractors = int(rows.size()) - 1;
  for (const auto& row : rows)
    if (row["name"] == name) id = row["id"].get<int64_t>();
  DSA_CHECK(id >= 0, "no exact match for {}", name);
  return id;
}

// Level 1: one lookup.
std::optional<Draft> level1(Ctx& c, int variant) {
  const Json& ch = c.r.pick(c.children);
  const int64_t id = ch[0].get<int64_t>();
  Prog p(c.env, c.img);
  const Json row = p.call("get_" + c.cid(), {{c.cid() + "_id", id}})[0];
  Draft dr;
  if (variant % 2 == 0) {
    const std::string st = row[c.d.status_col].get<std::string>();
    dr.t.instruction = fmt::format("What is the current status of {} #{}?", c.d.child_noun, id);
    dr.t.gold_answer = fmt::format("{} #{} is {}.", cap(c.d.child_noun), id, st);
    dr.t.verify.answer_contains = {st};
  } else {
    const double a = row[c.d.amount_col].get<double>();
    dr.t.instruction = fmt::format("What is the {} of {} #{}?", c.d.amount_noun, c.d.child_noun, id);
    dr.t.gold_answer = fmt::format("The {} of {} #{} is {}.", c.d.amount_noun, c.d.child_noun, id, fmt_amount(c.d, a));
    if (c.d.unit != "$" && c.d.unit != "") dr.t.gold_answer = fmt::format("{} #{}: {}", cap(c.d.child_noun), id, fmt_amount(c.d, a));
    dr.t.verify.has_number = true;
    dr.t.verify.answer_number = a;
  }
  dr.calls = p.calls;
  return dr;
}

// Level 2: a chained lookup (the record names its parent; the question is about the parent).
std::optional<Draft> level2(Ctx& c, int variant) {
  const Json& ch = c.r.pick(c.children);
  const int64_t id = ch[0].get<int64_t>();
  Prog p(c.env, c.img);
  const Json row = p.call("get_" + c.cid(), {{c.cid() + "_id", id}})[0];
  const Json par = p.call("get_" + c.d.parent_noun, {{c.pid(), row[c.pid()]}})[0];
  Draft dr;
  const bool contact = variant % 2 == 0;
  const std::string col = contact ? c.d.contact_col : c.d.region_col;
  const std::string noun = contact ? c.d.contact_noun : c.d.region_noun;
  const std::string v = par[col].get<std::string>();
  dr.t.instruction = fmt::format("What is the {} of the {} that {} {} #{}?", noun, c.d.parent_noun, c.d.rel, c.d.child_noun, id);
  dr.t.gold_answer = fmt::format("{} #{} belongs to {}; their {} is {}.", cap(c.d.child_noun), id,
                                 par["name"].get<std::string>(), noun, v);
  dr.t.verify.answer_contains = {v};
  dr.calls = p.calls;
  return dr;
}

// A parent chosen preferring names that have near-namesakes (search distractors).
const Json& pick_parent(Ctx& c) {
  std::vector<const Json*> shadowed;
  for (const auto& a : c.parents)
    for (const auto& b : c.parents)
      if (&a != &b && b[1].get<std::string>().find(a[1].get<std::string>()) != std::string::npos) shadowed.push_back(&a);
  if (!shadowed.empty() && c.r.uniform(0, 1) == 0) return *c.r.pick(shadowed);
  return c.r.pick(c.parents);
}

// Level 3: search (with distractors), list, aggregate.
std::optional<Draft> level3(Ctx& c, int variant) {
  const Json& par = pick_parent(c);
  const std::string name = par[1].get<std::string>();
  Prog p(c.env, c.img);
  int distractors = 0;
  const int64_t pid = exact_match(p.call("find_" + c.d.parent, {{"name", name}}), name, &distractors);
  Draft dr;
  const int kind = variant % 3;
  if (kind == 0) {
    const std::string st = c.r.pick(c.d.statuses);
    const Json rows = p.call("list_" + c.cid() + "s", {{c.pid(), pid}, {"status", st}});
    if (rows.empty()) return std::nullopt;
    Json vals = Json::array();
    for (const auto& row : rows) vals.push_back(row[c.d.amount_col]);
    const double total = p.call("sum", {{"values", vals}}).get<double>();
    dr.t.instruction = fmt::format("What is the total {} of {}'s {} {}s?", c.d.amount_noun, name, st, c.d.child_noun);
    dr.t.gold_answer = fmt::format("{} has {} {} {}(s); the total {} is {}.", name, rows.size(), st, c.d.child_noun,
                                   c.d.amount_noun, fmt_amount(c.d, total));
    dr.t.verify.has_number = true;
    dr.t.verify.answer_number = total;
  } else if (kind == 1) {
    const Json rows = p.call("list_" + c.cid() + "s", {{c.pid(), pid}});
    dr.t.instruction = fmt::format("How many {}s does {} have in total?", c.d.child_noun, name);
    dr.t.gold_answer = fmt::format("{} has {} {}(s).", name, rows.size(), c.d.child_noun);
    dr.t.verify.has_number = true;
    dr.t.verify.answer_number = double(rows.size());
  } else {
    const Json rows = p.call("list_" + c.cid() + "s", {{c.pid(), pid}});
    if (rows.size() < 2) return std::nullopt;
    const Json* best = nullptr;
    int ties = 0;
    for (const auto& row : rows) {
      if (!best || row[c.d.amount_col].get<double>() > (*best)[c.d.amount_col].get<double>()) best = &row, ties = 0;
      else if (row[c.d.amount_col].get<double>() == (*best)[c.d.amount_col].get<double>()) ++ties;
    }
    if (ties) return std::nullopt;
    const int64_t id = (*best)["id"].get<int64_t>();
    dr.t.instruction = fmt::format("Which of {}'s {}s has the largest {}? Give its id.", name, c.d.child_noun, c.d.amount_noun);
    dr.t.gold_answer = fmt::format("{} #{} ({}) has the largest {}, {}.", cap(c.d.child_noun), id,
                                   (*best)[c.d.label_col].get<std::string>(), c.d.amount_noun,
                                   fmt_amount(c.d, (*best)[c.d.amount_col].get<double>()));
    dr.t.verify.answer_contains = {"#" + std::to_string(id)};
  }
  dr.t.tags["distractors"] = distractors;
  dr.t.tags["aggregation"] = true;
  dr.calls = p.calls;
  return dr;
}

// Level 4: writes after a search, verified on the database end state.
std::optional<Draft> level4(Ctx& c, int variant) {
  const Json& par = pick_parent(c);
  const std::string name = par[1].get<std::string>();
  Prog p(c.env, c.img);
  int distractors = 0;
  const int64_t pid = exact_match(p.call("find_" + c.d.parent, {{"name", name}}), name, &distractors);
  Draft dr;
  if (variant % 2 == 0) {
    const Json rows = p.call("list_" + c.cid() + "s", {{c.pid(), pid}});
    const Json& last = rows.back();
    std::string st;
    for (int k = 0; k < 8 && (st.empty() || st == last[c.d.status_col].get<std::string>()); ++k) st = c.r.pick(c.d.statuses);
    if (st == last[c.d.status_col].get<std::string>()) return std::nullopt;
    const int64_t id = last["id"].get<int64_t>();
    p.call("set_" + c.cid() + "_status", {{c.cid() + "_id", id}, {"status", st}});
    dr.t.instruction = fmt::format("Set the status of {}'s most recent {} (the one with the highest id) to {}.", name, c.d.child_noun, st);
    dr.t.gold_answer = fmt::format("Done: {} #{} is now {}.", c.d.child_noun, id, st);
  } else {
    std::string v;
    if (c.d.contact_col == "email") v = fmt::format("{}.{}@newmail.example", std::string(1, char('a' + c.r.uniform(0, 25))), c.r.uniform(100, 999));
    else if (c.d.contact_col == "phone") v = fmt::format("+1-555-{:04d}", c.r.uniform(0, 9999));
    else v = fmt::format("{} {}", std::vector<std::string>{"Dana", "Ivo", "Rosa", "Femi"}[size_t(c.r.uniform(0, 3))],
                         std::vector<std::string>{"Quinn", "Hale", "Ortiz", "Baker"}[size_t(c.r.uniform(0, 3))]);
    p.call("update_" + c.d.parent_noun + "_" + c.d.contact_col, {{c.pid(), pid}, {"value", v}});
    dr.t.instruction = fmt::format("The {} of {} has changed to {}. Please update the record.", c.d.contact_noun, name, v);
    dr.t.gold_answer = fmt::format("Updated: {}'s {} is now {}.", name, c.d.contact_noun, v);
  }
  dr.t.verify.db_state = true;
  dr.t.tags["distractors"] = distractors;
  dr.t.tags["write"] = true;
  dr.calls = p.calls;
  return dr;
}

// Level 5: search, filter, aggregate, then a write that depends on the aggregate.
std::optional<Draft> level5(Ctx& c, int) {
  const Json& par = pick_parent(c);
  const std::string name = par[1].get<std::string>();
  Prog p(c.env, c.img);
  int distractors = 0;
  const int64_t pid = exact_match(p.call("find_" + c.d.parent, {{"name", name}}), name, &distractors);
  const Json all = p.call("list_" + c.cid() + "s", {{c.pid(), pid}});
  if (all.size() < 2) return std::nullopt;
  const std::string st = all[size_t(c.r.uniform(0, int64_t(all.size()) - 1))][c.d.status_col].get<std::string>();
  const Json rows = p.call("list_" + c.cid() + "s", {{c.pid(), pid}, {"status", st}});
  Json vals = Json::array();
  for (const auto& row : rows) vals.push_back(row[c.d.amount_col]);
  const double total = p.call("sum", {{"values", vals}}).get<double>();
  const double thr = std::round((c.d.amount_lo + (c.d.amount_hi - c.d.amount_lo) * c.r.unit()) * double(rows.size()) * 0.6);
  const bool above = total > thr;
  const Json* pick = nullptr;
  for (const auto& row : rows) {
    if (!pick) { pick = &row; continue; }
    const double a = row[c.d.amount_col].get<double>(), b = (*pick)[c.d.amount_col].get<double>();
    if (above ? a > b : a < b) pick = &row;
  }
  std::string target;
  for (const auto& s : c.d.statuses)
    if (s != st) target = s;
  const int64_t id = (*pick)["id"].get<int64_t>();
  p.call("set_" + c.cid() + "_status", {{c.cid() + "_id", id}, {"status", target}});
  Draft dr;
  dr.t.instruction = fmt::format(
      "For {}: add up the {} of their {} {}s. If the total is above {}, mark the {} with the largest {} as {}; "
      "otherwise mark the one with the smallest {} as {}. Tell me the total.",
      name, c.d.amount_noun, st, c.d.child_noun, fmt_amount(c.d, thr), c.d.child_noun, c.d.amount_noun, target,
      c.d.amount_noun, target);
  dr.t.gold_answer = fmt::format("The total is {} ({} the threshold), so {} #{} is now {}. Total: {}", fmt_amount(c.d, total),
                                 above ? "above" : "not above", c.d.child_noun, id, target, fmt_amount(c.d, total));
  dr.t.verify.has_number = true;
  dr.t.verify.answer_number = total;
  dr.t.verify.db_state = true;
  dr.t.tags["distractors"] = distractors;
  dr.t.tags["aggregation"] = true;
  dr.t.tags["write"] = true;
  dr.calls = p.calls;
  return dr;
}

std::string norm_key(const std::string& s) {
  std::string o;
  for (char ch : s)
    if (!std::isspace(static_cast<unsigned char>(ch))) o += char(std::tolower(static_cast<unsigned char>(ch)));
  return o;
}

// Validates, dedups and keeps a task; updates the stats.
bool admit(EnvSpec& env, const std::shared_ptr<const DbImage>& img, TaskSpec t, std::set<std::string>& seen,
           LevelStats& ls, SynthStats* st) {
  if (!seen.insert(norm_key(t.instruction)).second) {
    ++ls.duplicate;
    return false;
  }
  const Validation v = validate_task(env, img, t);
  if (!v.ok) {
    ++ls.invalid;
    if (st && st->rejected.size() < 20) st->rejected.push_back(fmt::format("{}: {}", t.id, v.error));
    return false;
  }
  ++ls.kept;
  ls.gold_calls += int64_t(t.gold_calls.size());
  ls.mutations += v.mutations;
  env.tasks.push_back(std::move(t));
  return true;
}

}  // namespace

std::vector<EnvSpec> synthesize(const SynthOptions& opt, SynthStats* stats) {
  SynthStats local;
  SynthStats& st = stats ? *stats : local;
  std::vector<EnvSpec> out;
  const std::vector<std::string> doms = opt.domains.empty() ? domain_names() : opt.domains;
  using Tmpl = std::function<std::optional<Draft>(Ctx&, int)>;
  const Tmpl levels[5] = {level1, level2, level3, level4, level5};
  for (const auto& dn : doms) {
    const Domain& d = find_domain(dn);
    for (int k = 0; k < opt.envs_per_domain; ++k) {
      const uint64_t db_seed = splitmix64(opt.seed * 0x100000001b3ULL + fnv1a_bytes(kFnv1aOffset, dn) + uint64_t(k));
      EnvSpec env = domain_env(dn, db_seed, opt.scale);
      const auto img = build_image(env);
      const DbSpec data = generate_db(dn, db_seed, opt.scale);
      Rng r(splitmix64(db_seed ^ 0x7461736b73ULL));
      Ctx c{d, env, img, data.rows[0].second, data.rows[1].second, r};
      std::set<std::string> seen;
      for (int lv = 1; lv <= 5; ++lv) {
        LevelStats& ls = st.by_domain[dn][lv];
        for (int a = 0; a < opt.tasks_per_level; ++a) {
          ++ls.generated;
          std::optional<Draft> dr;
          try {
            dr = levels[lv - 1](c, a);
          } catch (const Error& e) {
            ++ls.invalid;
            if (st.rejected.size() < 20) st.rejected.push_back(fmt::format("{} level {}: {}", env.name, lv, e.what()));
            continue;
          }
          if (!dr) {
            ++ls.invalid;
            continue;
          }
          TaskSpec t = std::move(dr->t);
          t.id = fmt::format("{}-L{}-{}", env.name, lv, a);
          t.difficulty = lv;
          t.gold_calls = std::move(dr->calls);
          t.split = split_of(dn, t.instruction, opt.heldout_percent);
          t.tags["hops"] = int(t.gold_calls.size());
          admit(env, img, std::move(t), seen, ls, &st);
        }
      }
      if (!env.tasks.empty()) out.push_back(std::move(env));
    }
  }
  if (opt.reasoning_tasks > 0) {
    const std::vector<std::string> kinds = opt.reasoning.empty() ? reasoning_kinds() : opt.reasoning;
    for (const auto& kind : kinds) {
      EnvSpec raw = reasoning_env(kind, splitmix64(opt.seed ^ fnv1a_bytes(kFnv1aOffset, kind)), opt.reasoning_tasks,
                                  opt.worked_reasoning);
      EnvSpec env = raw;
      env.tasks.clear();
      const auto img = build_image(env);
      std::set<std::string> seen;
      for (auto& t : raw.tasks) {
        LevelStats& ls = st.by_domain[env.domain][t.difficulty];
        ++ls.generated;
        t.split = split_of(env.domain, t.instruction, opt.heldout_percent);
        admit(env, img, std::move(t), seen, ls, &st);
      }
      if (!env.tasks.empty()) out.push_back(std::move(env));
    }
  }
  return out;
}

SynthStats spec_stats(const std::vector<EnvSpec>& specs) {
  SynthStats st;
  for (const auto& s : specs)
    for (const auto& t : s.tasks) {
      LevelStats& ls = st.by_domain[s.domain.empty() ? s.name : s.domain][t.difficulty];
      ++ls.generated;
      ++ls.kept;
      ls.gold_calls += int64_t(t.gold_calls.size());
    }
  return st;
}

Json SynthStats::to_json() const {
  Json o = Json::object();
  for (const auto& [d, lv] : by_domain) {
    Json levels = Json::object();
    for (const auto& [l, s] : lv)
      levels[std::to_string(l)] = {{"generated", s.generated}, {"kept", s.kept}, {"invalid", s.invalid},
                                   {"duplicate", s.duplicate}, {"gold_calls", s.gold_calls}, {"mutations", s.mutations}};
    o[d] = levels;
  }
  return o;
}

std::string SynthStats::table() const {
  std::string t = fmt::format("{:<12} {:>5} {:>9} {:>6} {:>8} {:>10} {:>14}\n", "domain", "level", "generated", "kept",
                              "invalid", "duplicate", "calls/task");
  LevelStats tot;
  for (const auto& [d, lv] : by_domain)
    for (const auto& [l, s] : lv) {
      t += fmt::format("{:<12} {:>5} {:>9} {:>6} {:>8} {:>10} {:>14.1f}\n", d, l, s.generated, s.kept, s.invalid, s.duplicate,
                       s.kept ? double(s.gold_calls) / double(s.kept) : 0.0);
      tot.generated += s.generated, tot.kept += s.kept, tot.invalid += s.invalid, tot.duplicate += s.duplicate;
      tot.gold_calls += s.gold_calls;
    }
  t += fmt::format("{:<12} {:>5} {:>9} {:>6} {:>8} {:>10} {:>14.1f}\n", "total", "", tot.generated, tot.kept, tot.invalid,
                   tot.duplicate, tot.kept ? double(tot.gold_calls) / double(tot.kept) : 0.0);
  return t;
}

}  // namespace dsa::env
