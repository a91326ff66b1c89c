// Verifiers, gold replay and mutation validation.
#include "env/verify.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "base/error.h"

namespace dsa::env {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string last_line(const std::string& s) {
  size_t e = s.size();
  while (e > 0) {
    const size_t b = s.rfind('\n', e - 1);
    const std::string line = trim(s.substr(b == std::string::npos ? 0 : b + 1, e - (b == std::string::npos ? 0 : b + 1)));
    if (!line.empty()) return line;
    if (b == std::string::npos) break;
    e = b;
  }
  return "";
}

// Last line, without an "answer:" style prefix, markdown emphasis or a final period; lower case,
// whitespace collapsed.
std::string normalise_exact(const std::string& s) {
  std::string l = lower(last_line(s));
  for (const char* p : {"final answer:", "answer:"})
    if (auto k = l.find(p); k != std::string::npos) l = l.substr(k + std::strlen(p));
  std::string out;
  for (char c : l) {
    if (c == '*' || c == '`') continue;
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '.')) out.pop_back();
  while (!out.empty() && out.front() == ' ') out.erase(out.begin());
  return out;
}

std::string fmt_number(double x) {
  if (x == std::floor(x) && std::fabs(x) < 1e15) return std::to_string(int64_t(x));
  return fmt::format("{:.2f}", x);
}

bool countdown_ok(const VerifierSpec& v, const std::string& answer, std::string* why) {
  std::string l = last_line(answer);
  if (auto k = l.rfind(':'); k != std::string::npos) l = l.substr(k + 1);
  if (auto k = l.find('='); k != std::string::npos) l = l.substr(0, k);
  std::vector<double> lits;
  double val = 0;
  try {
    val = eval_expression(l, &lits);
  } catch (const Error&) {
    *why = "countdown: the last line is not an arithmetic expression";
    return false;
  }
  std::vector<int64_t> pool = v.countdown_numbers;
  for (double x : lits) {
    auto it = std::find(pool.begin(), pool.end(), int64_t(x));
    if (x != std::floor(x) || it == pool.end()) {
      *why = fmt::format("countdown: {} is not one of the given numbers (or used twice)", fmt_number(x));
      return false;
    }
    pool.erase(it);
  }
  if (std::fabs(val - double(v.countdown_target)) > 1e-9) {
    *why = fmt::format("countdown: the expression is {} not {}", fmt_number(val), v.countdown_target);
    return false;
  }
  return true;
}

void replace_all_ci(std::string& s, const std::string& what, const std::string& with) {
  const std::string lw = lower(what);
  for (size_t pos = 0;;) {
    const size_t k = lower(s).find(lw, pos);
    if (k == std::string::npos) return;
    s.replace(k, what.size(), with);
    pos = k + with.size();
  }
}

std::string alter(const std::string& s) {
  std::string m = s;
  for (size_t i = m.size(); i-- > 0;)
    if (std::isdigit(static_cast<unsigned char>(m[i]))) {
      m[i] = char('0' + (m[i] - '0' + 1) % 10);
      return m;
    }
  for (auto& c : m)
    if (std::isalpha(static_cast<unsigned char>(c))) {
      c = std::tolower(static_cast<unsigned char>(c)) == 'q' ? 'z' : 'q';
      return m;
    }
  return m + "#";
}

}  // namespace

bool last_number(const std::string& text, double* out) {
  // Scan back to the last digit, then take the whole token around it (digits, commas, one point).
  size_t e = text.size();
  while (e > 0 && !std::isdigit(static_cast<unsigned char>(text[e - 1]))) --e;
  if (e == 0) return false;
  size_t b = e;
  while (b > 0 && (std::isdigit(static_cast<unsigned char>(text[b - 1])) || text[b - 1] == ',' || text[b - 1] == '.')) --b;
  while (b < e && !std::isdigit(static_cast<unsigned char>(text[b]))) ++b;
  std::string tok;
  for (size_t i = b; i < e; ++i)
    if (text[i] != ',') tok += text[i];
  if (std::count(tok.begin(), tok.end(), '.') > 1) tok = tok.substr(tok.rfind('.') + 1);
  char* end = nullptr;
  double v = std::strtod(tok.c_str(), &end);
  if (b > 0 && text[b - 1] == '-') v = -v;
  *out = v;
  return true;
}

VerifyResult verify(const TaskSpec& t, const std::string& answer, uint64_t end_state, uint64_t gold_state) {
  VerifyResult r;
  const VerifierSpec& v = t.verify;
  const std::string la = lower(answer);
  for (const auto& s : v.answer_contains)
    if (la.find(lower(s)) == std::string::npos) r.failures.push_back(fmt::format("the answer does not mention '{}'", s));
  if (v.has_number) {
    double x = 0;
    if (!last_number(answer, &x)) r.failures.push_back("the answer has no number");
    else if (std::fabs(x - v.answer_number) > 1e-6 * std::max(1.0, std::fabs(v.answer_number)))
      r.failures.push_back(fmt::format("the answer's number is {} not {}", fmt_number(x), fmt_number(v.answer_number)));
  }
  if (!v.answer_exact.empty() && normalise_exact(answer) != normalise_exact(v.answer_exact))
    r.failures.push_back(fmt::format("the answer is not '{}'", v.answer_exact));
  if (v.has_countdown) {
    std::string why;
    if (!countdown_ok(v, answer, &why)) r.failures.push_back(why);
  }
  if (v.db_state && end_state != gold_state) r.failures.push_back("the database end state differs from the gold solution's");
  r.pass = r.failures.empty();
  return r;
}

GoldRun replay(const EnvSpec& s, const std::shared_ptr<const DbImage>& img, const std::vector<ToolCallSpec>& calls) {
  GoldRun g;
  Sandbox sb(s, img);
  g.ok = true;
  for (size_t i = 0; i < calls.size(); ++i) {
    ToolResult r = sb.call(calls[i].name, calls[i].arguments);
    if (!r.ok && g.ok) {
      g.ok = false;
      g.error = fmt::format("call {} ({}): {}", i, calls[i].name, r.content);
    }
    g.results.push_back(std::move(r));
  }
  g.end_state = sb.state_hash();
  return g;
}

std::vector<std::string> answer_mutations(const TaskSpec& t) {
  const VerifierSpec& v = t.verify;
  std::vector<std::string> out;
  if (v.answer_contains.empty() && !v.has_number && v.answer_exact.empty() && !v.has_countdown) return out;
  out.push_back("");
  out.push_back("I could not find the answer.");
  for (const auto& s : v.answer_contains) {
    std::string m = t.gold_answer;
    replace_all_ci(m, s, alter(s));
    out.push_back(m);
  }
  if (v.has_number) {
    const double x = v.answer_number;
    out.push_back(t.gold_answer + "\nAnswer: " + fmt_number(x + 1));
    if (x != 0) out.push_back(t.gold_answer + "\nAnswer: " + fmt_number(x * 2));
  }
  if (!v.answer_exact.empty()) {
    out.push_back("Answer: " + alter(v.answer_exact));
    out.push_back(t.gold_answer + "\nAnswer: none");
  }
  if (v.has_countdown) {
    const auto& n = v.countdown_numbers;
    int64_t sum = 0;
    std::string e;
    for (size_t i = 0; i < n.size(); ++i) {
      sum += n[i];
      e += (i ? " + " : "") + std::to_string(n[i]);
    }
    if (sum != v.countdown_target) out.push_back("Answer: " + e);
    out.push_back("Answer: " + std::to_string(v.countdown_target));  // the target itself is not a given number
    std::string gl = last_line(t.gold_answer);
    if (auto k = gl.rfind(':'); k != std::string::npos) gl = gl.substr(k + 1);
    if (auto k = gl.find('='); k != std::string::npos) gl = gl.substr(0, k);
    out.push_back(fmt::format("Answer: {} - {} + {}", n[0], n[0], trim(gl)));  // a number used twice
  }
  return out;
}

Validation validate_task(const EnvSpec& s, const std::shared_ptr<const DbImage>& img, const TaskSpec& t) {
  Validation val;
  const GoldRun g = replay(s, img, t.gold_calls);
  val.gold_state = g.end_state;
  if (!g.ok) {
    val.error = "the gold solution fails: " + g.error;
    return val;
  }
  const VerifyResult gv = verify(t, t.gold_answer, g.end_state, g.end_state);
  if (!gv.pass) {
    val.error = "the gold answer fails its verifier: " + gv.failures[0];
    return val;
  }
  for (const auto& m : answer_mutations(t)) {
    ++val.mutations;
    if (verify(t, m, g.end_state, g.end_state).pass) {
      val.error = fmt::format("a wrong answer passes the verifier: '{}'", m.substr(0, 200));
      return val;
    }
  }
  if (t.verify.db_state) {
    int last_write = -1;
    for (size_t i = 0; i < t.gold_calls.size(); ++i) {
      const ToolSpec* tool = s.find_tool(t.gold_calls[i].name);
      if (tool && tool->kind == ToolKind::kSqlWrite) last_write = int(i);
    }
    if (last_write < 0) {
      val.error = "db_state is checked but the gold solution makes no write";
      return val;
    }
    std::vector<std::vector<ToolCallSpec>> wrong;
    wrong.push_back({});  // nothing done
    auto without = t.gold_calls;
    without.erase(without.begin() + last_write);
    wrong.push_back(without);
    const ToolCallSpec& w = t.gold_calls[size_t(last_write)];
    const ToolSpec* tool = s.find_tool(w.name);
    for (auto it = w.arguments.begin(); it != w.arguments.end(); ++it) {
      Json changed = *it;
      const ToolParam* p = nullptr;
      for (const auto& q : tool->params)
        if (q.name == it.key()) p = &q;
      if (p && !p->enum_values.empty()) {
        for (const auto& e : p->enum_values)
          if (e != *it) changed = e;
      } else if (it->is_number_integer()) {
        changed = it->get<int64_t>() + 1;
      } else if (it->is_number()) {
        changed = it->get<double>() + 1;
      } else if (it->is_string()) {
        changed = alter(it->get<std::string>());
      } else {
        continue;
      }
      auto calls = t.gold_calls;
      calls[size_t(last_write)].arguments[it.key()] = changed;
      wrong.push_back(calls);
    }
    for (const auto& calls : wrong) {
      ++val.mutations;
      const GoldRun r = replay(s, img, calls);
      if (verify(t, t.gold_answer, r.end_state, g.end_state).pass) {
        val.error = fmt::format("a wrong end state passes the verifier ({} calls)", calls.size());
        return val;
      }
    }
  }
  val.ok = true;
  return val;
}

}  // namespace dsa::env
