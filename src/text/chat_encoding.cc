// DeepSeek-V3.2 chat template: system/user/developer/assistant/tool rendering, tools block,
// DSML tool calls, response-format block.
#include "text/chat_encoding.h"

#include "base/error.h"
#include "io/json.h"

namespace dsa::text {

namespace {

const char* const kToolsTemplateHead =
    "## Tools\n\n"
    "You have access to a set of tools you can use to answer the user's question.\n"
    "You can invoke functions by writing a \"<｜DSML｜function_calls>\" block like the following as part of "
    "your reply to the user:\n"
    "<｜DSML｜function_calls>\n"
    "<｜DSML｜invoke name=\"$FUNCTION_NAME\">\n"
    "<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "<｜DSML｜invoke name=\"$FUNCTION_NAME2\">\n"
    "...\n"
    "</｜DSML｜invoke>\n"
    "</｜DSML｜function_calls>\n\n"
    "String and scalar parameters should be specified as is without any escaping or quotes, while lists and "
    "objects should use JSON format. The \"string\" attribute should be set to \"true\" for string type "
    "parameters and \"false\" for other types (numbers, booleans, arrays, objects).\n\n"
    "If the thinking_mode is enabled, then after function results you should strongly consider outputting a "
    "thinking block. Here is an example:\n\n"
    "<｜DSML｜function_calls>\n"
    "...\n"
    "</｜DSML｜function_calls>\n\n"
    "<function_results>\n"
    "...\n"
    "</function_results>\n\n"
    "<think>...thinking about results</think>\n\n"
    "Here are the functions available in JSONSchema format:\n"
    "<functions>\n";

const char* const kResponseFormatHead =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

// Truthiness as Python's `or`/`if`: null, "", [], {} and false are false.
bool truthy(const OrderedJson* v) {
  if (v == nullptr || v->is_null()) return false;
  if (v->is_string()) return !v->get_ref<const std::string&>().empty();
  if (v->is_array() || v->is_object()) return !v->empty();
  if (v->is_boolean()) return v->get<bool>();
  return true;
}

const OrderedJson* field(const OrderedJson& msg, const char* key) {
  auto it = msg.find(key);
  return it == msg.end() ? nullptr : &*it;
}

// A text field: absent/null -> "" only when allowed; otherwise it must be a string.
std::string text_field(const OrderedJson& msg, const char* key, size_t index, bool null_ok) {
  const OrderedJson* v = field(msg, key);
  if (v == nullptr || v->is_null()) {
    DSA_CHECK(null_ok, "message {}: '{}' is required", index, key);
    return {};
  }
  DSA_CHECK(v->is_string(), "message {}: '{}' must be a string, got {}", index, key, v->type_name());
  return v->get<std::string>();
}

std::string role_of(const OrderedJson& msg, size_t index) {
  DSA_CHECK(msg.is_object(), "message {} is not a JSON object", index);
  const OrderedJson* r = field(msg, "role");
  DSA_CHECK(r != nullptr && r->is_string(), "message {}: missing 'role'", index);
  return r->get<std::string>();
}

std::string render_response_format(const OrderedJson& rf) {
  return std::string(kResponseFormatHead) + py_json_dumps(rf);
}

std::string encode_arguments(const OrderedJson& call, size_t index) {
  const OrderedJson* raw = field(call, "arguments");
  DSA_CHECK(raw != nullptr, "message {}: tool call without 'arguments'", index);
  OrderedJson args;
  if (raw->is_string()) {
    try {
      args = parse_json_ordered(raw->get<std::string>());
    } catch (const std::exception& e) {
      DSA_FAIL("message {}: tool call arguments are not valid JSON: {}", index, e.what());
    }
  } else {
    args = *raw;
  }
  DSA_CHECK(args.is_object(), "message {}: tool call arguments must be a JSON object", index);
  std::string out;
  bool first = true;
  for (auto it = args.begin(); it != args.end(); ++it) {
    if (!first) out += '\n';
    first = false;
    const bool is_str = it.value().is_string();
    out += "<｜DSML｜parameter name=\"" + it.key() + "\" string=\"" + (is_str ? "true" : "false") + "\">";
    out += is_str ? it.value().get<std::string>() : py_json_dumps(it.value());
    out += "</｜DSML｜parameter>";
  }
  return out;
}

std::string render_tool_calls(const OrderedJson& calls, size_t index) {
  DSA_CHECK(calls.is_array(), "message {}: 'tool_calls' must be a list", index);
  std::string out = "\n\n<｜DSML｜function_calls>\n";
  bool first = true;
  for (const auto& c : calls) {
    DSA_CHECK(c.is_object() && c.contains("function") && c["function"].is_object(),
              "message {}: tool call without a 'function' object", index);
    const OrderedJson& fn = c["function"];
    DSA_CHECK(fn.contains("name") && fn["name"].is_string(), "message {}: tool call without a name", index);
    if (!first) out += '\n';
    first = false;
    out += "<｜DSML｜invoke name=\"" + fn["name"].get<std::string>() + "\">\n";
    out += encode_arguments(fn, index);
    out += "\n</｜DSML｜invoke>";
  }
  out += "\n</｜DSML｜function_calls>";
  return out;
}

int find_last_user(const OrderedJson& messages) {
  for (int i = static_cast<int>(messages.size()) - 1; i >= 0; --i) {
    const std::string r = role_of(messages[i], i);
    if (r == "user" || r == "developer") return i;
  }
  return -1;
}

std::string render_message(const OrderedJson& messages, int i, int last_user, const EncodeOptions& opt) {
  const OrderedJson& msg = messages[i];
  const std::string role = role_of(msg, i);
  const OrderedJson* tools = field(msg, "tools");
  const OrderedJson* rf = field(msg, "response_format");
  std::string out;
  auto think_tag = [&](bool open) { return std::string(open ? kThinkStart : kThinkEnd); };

  if (role == "system") {
    out += text_field(msg, "content", i, true);
    if (truthy(tools)) out += "\n\n" + render_tools(*tools);
    if (truthy(rf)) out += "\n\n" + render_response_format(*rf);
  } else if (role == "developer" || role == "user") {
    std::string content = text_field(msg, "content", i, false);
    if (role == "developer") {
      DSA_CHECK(!content.empty(), "message {}: developer message needs content", i);
      std::string dev;
      if (truthy(tools)) dev += "\n\n" + render_tools(*tools);
      if (truthy(rf)) dev += "\n\n" + render_response_format(*rf);
      dev += "\n\n# The user's message is: " + content;
      content = std::move(dev);
    }
    out += std::string(kUserTag) + content + kAssistantTag;
    out += think_tag(opt.thinking && i == last_user);
  } else if (role == "tool") {
    int prev = i - 1;
    while (prev >= 0 && role_of(messages[prev], prev) == "tool") --prev;
    DSA_CHECK(prev >= 0 && role_of(messages[prev], prev) == "assistant",
              "message {}: tool result does not follow an assistant message", i);
    const OrderedJson* calls = field(messages[prev], "tool_calls");
    const int order = i - prev;
    const int n_calls = truthy(calls) && calls->is_array() ? static_cast<int>(calls->size()) : 0;
    DSA_CHECK(n_calls >= order, "message {}: tool result #{} but the assistant message {} made {} tool call(s)",
              i, order, prev, n_calls);
    if (order == 1) out += "\n\n<function_results>";
    out += "\n<result>" + text_field(msg, "content", i, false) + "</result>";
    if (order == n_calls) {
      out += "\n</function_results>";
      out += "\n\n" + think_tag(opt.thinking && i >= last_user);
    }
  } else if (role == "assistant") {
    const OrderedJson* calls = field(msg, "tool_calls");
    std::string tool_calls;
    if (truthy(calls)) tool_calls = render_tool_calls(*calls, i);
    const OrderedJson* reasoning = field(msg, "reasoning");
    if (!truthy(reasoning)) reasoning = field(msg, "reasoning_content");
    std::string thinking_part;
    if (opt.thinking && i > last_user) {
      DSA_CHECK(truthy(reasoning) || truthy(calls),
                "message {}: in thinking mode an assistant message after the last user message needs "
                "reasoning_content or tool_calls", i);
      if (truthy(reasoning)) {
        DSA_CHECK(reasoning->is_string(), "message {}: reasoning_content must be a string", i);
        thinking_part = reasoning->get<std::string>();
      }
      thinking_part += kThinkEnd;
    }
    out += thinking_part + text_field(msg, "content", i, true) + tool_calls + kEos;
  } else {
    DSA_FAIL("message {}: unknown role '{}'", i, role);
  }
  return out;
}

}  // namespace

std::string render_tools(const OrderedJson& tools) {
  DSA_CHECK(tools.is_array(), "'tools' must be a list");
  std::string out = kToolsTemplateHead;
  bool first = true;
  for (const auto& t : tools) {
    DSA_CHECK(t.is_object() && t.contains("function"), "each tool must be {{\"type\": \"function\", \"function\": {{...}}}}");
    if (!first) out += '\n';
    first = false;
    out += py_json_dumps(t["function"]);
  }
  out += "\n</functions>\n";
  return out;
}

OrderedJson attach_tools(OrderedJson messages, const OrderedJson& tools) {
  DSA_CHECK(messages.is_array(), "messages must be a JSON list");
  if (!truthy(&tools)) return messages;
  for (auto& m : messages) {
    if (m.is_object() && m.value("role", "") != "" &&
        (m["role"] == "system" || m["role"] == "developer")) {
      m["tools"] = tools;
      return messages;
    }
  }
  OrderedJson sys = {{"role", "system"}, {"content", ""}, {"tools", tools}};
  messages.insert(messages.begin(), sys);
  return messages;
}

std::string encode_messages(const OrderedJson& messages, const EncodeOptions& opt) {
  DSA_CHECK(messages.is_array(), "messages must be a JSON list");
  // Reasoning of earlier turns is never rendered (only turns after the last user message show
  // it), so drop_thinking needs no separate pass here.
  const int last_user = find_last_user(messages);
  std::string prompt = opt.add_bos ? kBos : "";
  for (int i = 0; i < static_cast<int>(messages.size()); ++i) {
    prompt += render_message(messages, i, last_user, opt);
  }
  return prompt;
}

}  // namespace dsa::text
