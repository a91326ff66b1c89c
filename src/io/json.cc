// Depth-limited JSON building on nlohmann's iterative SAX parser: keys go straight into the
// object (no per-insert duplicate search, which is linear in ordered_json and made wide objects
// quadratic); duplicates are found once per object by sorting the key indices.
#include "io/json.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "base/error.h"

namespace dsa {
namespace {

template <class J>
class Builder {
 public:
  using number_integer_t = typename J::number_integer_t;
  using number_unsigned_t = typename J::number_unsigned_t;
  using number_float_t = typename J::number_float_t;
  using string_t = typename J::string_t;
  using binary_t = typename J::binary_t;
  using object_t = typename J::object_t;
  using array_t = typename J::array_t;

  explicit Builder(const JsonOptions& opt) : opt_(opt) {}

  bool null() { return put(J(nullptr)) != nullptr; }
  bool boolean(bool v) { return put(J(v)) != nullptr; }
  bool number_integer(number_integer_t v) { return put(J(v)) != nullptr; }
  bool number_unsigned(number_unsigned_t v) { return put(J(v)) != nullptr; }
  bool number_float(number_float_t v, const string_t& s) {
    if (opt_.exact_integers && s.find_first_of(".eE") == std::string::npos) {  // an integer beyond 64 bits
      std::string digits = s;
      if (digits[0] == '-' && digits.find_first_not_of('0', 1) == std::string::npos) digits = "0";
      return put(J::binary(std::vector<uint8_t>(digits.begin(), digits.end()), kJsonBigIntSubtype)) != nullptr;
    }
    return put(J(v)) != nullptr;
  }
  bool string(string_t& v) { return put(J(std::move(v))) != nullptr; }
  bool binary(binary_t&) { return fail("binary values are not JSON"); }

  bool start_object(std::size_t) { return open(J(nlohmann::detail::value_t::object)); }
  bool key(string_t& k) {
    key_ = std::move(k);
    return true;
  }
  bool end_object() {
    J* obj = stack_.back();
    stack_.pop_back();
    if constexpr (kOrdered) {
      // Sorting indices instead of hashing: n log n even for crafted keys.
      auto& items = obj->template get_ref<object_t&>();
      if (items.size() > 1) {
        std::vector<uint32_t> idx(items.size());
        std::iota(idx.begin(), idx.end(), 0u);
        auto key_of = [&](uint32_t i) -> const string_t& { return (items.begin() + i)->first; };
        std::sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return key_of(a) < key_of(b); });
        for (size_t i = 1; i < idx.size(); ++i)
          if (key_of(idx[i - 1]) == key_of(idx[i])) return fail(dup_message(key_of(idx[i])));
      }
    }
    return true;
  }
  bool start_array(std::size_t) { return open(J(nlohmann::detail::value_t::array)); }
  bool end_array() {
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    // nlohmann quotes the input ("; last read: '<token>'", "number overflow parsing '<digits>'"):
    // keep only the position and the reason.
    std::string w = ex.what();
    if (const size_t p = w.find("] "); w.rfind("[json.exception", 0) == 0 && p != std::string::npos) w.erase(0, p + 2);
    if (const size_t p = w.find("; last read"); p != std::string::npos) w.resize(p);
    if (const size_t p = w.find(" parsing '"); p != std::string::npos) w.resize(p + 8);  // number overflow
    while (!w.empty() && (w.back() == ' ' || w.back() == ':' || w.back() == ';')) w.pop_back();
    if (w.size() > 200) w.resize(200);
    return fail(w);
  }

  J root;
  std::string error;

 private:
  static constexpr bool kOrdered = requires { typename object_t::Container; };  // ordered_map

  bool fail(std::string msg) {
    if (error.empty()) error = std::move(msg);
    return false;
  }
  std::string dup_message(const string_t& k) const {
    std::string shown = k.size() > 60 ? k.substr(0, 60) + "..." : k;
    return fmt::format("duplicate key '{}' in an object", shown);
  }

  // Places a value in the current container (or as the root); returns where it lives.
  J* put(J&& v) {
    if (stack_.empty()) {
      root = std::move(v);
      return &root;
    }
    J* top = stack_.back();
    if (top->is_array()) {
      auto& a = top->template get_ref<array_t&>();
      a.push_back(std::move(v));
      return &a.back();
    }
    auto& o = top->template get_ref<object_t&>();
    if constexpr (kOrdered) {
      auto& c = static_cast<typename object_t::Container&>(o);
      c.emplace_back(std::move(key_), std::move(v));
      return &c.back().second;
    } else {
      auto [it, inserted] = o.try_emplace(std::move(key_));
      if (!inserted) {
        fail(dup_message(it->first));
        return nullptr;
      }
      it->second = std::move(v);
      return &it->second;
    }
  }
  bool open(J&& v) {
    if (int(stack_.size()) >= opt_.max_depth)
      return fail(fmt::format("nesting deeper than {} levels", opt_.max_depth));
    J* p = put(std::move(v));
    if (p == nullptr) return false;
    stack_.push_back(p);
    return true;
  }

  const JsonOptions& opt_;
  std::vector<J*> stack_;  // open containers, outermost first (parents are not modified while open)
  string_t key_;
};

template <class J>
J parse_impl(std::string_view text, const JsonOptions& opt) {
  Builder<J> b(opt);
  const bool ok = J::sax_parse(text.begin(), text.end(), &b, nlohmann::detail::input_format_t::json, /*strict=*/true,
                               /*ignore_comments=*/false);
  // No throw site in the text: callers embed it ("<file>: config.json is not valid JSON: <this>").
  if (!ok) throw Error(b.error.empty() ? std::string("parse error") : b.error);
  return std::move(b.root);
}

template <class J>
std::string excerpt_impl(const J& v, size_t max_chars) {
  std::string s;
  switch (v.type()) {
    case nlohmann::detail::value_t::object: s = v.empty() ? "{}" : fmt::format("an object of {} keys", v.size()); break;
    case nlohmann::detail::value_t::array: s = v.empty() ? "[]" : fmt::format("an array of {} values", v.size()); break;
    default: s = v.dump(-1, ' ', false, J::error_handler_t::replace);
  }
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

}  // namespace

nlohmann::ordered_json parse_json_ordered(std::string_view text, const JsonOptions& opt) {
  return parse_impl<nlohmann::ordered_json>(text, opt);
}

nlohmann::json parse_json(std::string_view text, const JsonOptions& opt) {
  return parse_impl<nlohmann::json>(text, opt);
}

std::string json_excerpt(const nlohmann::ordered_json& v, size_t max_chars) { return excerpt_impl(v, max_chars); }
std::string json_excerpt(const nlohmann::json& v, size_t max_chars) { return excerpt_impl(v, max_chars); }

}  // namespace dsa
