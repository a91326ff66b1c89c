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

// Prompt text under construction: template text, and message text whose bytes are recorded as plain.
struct Builder {
  RenderedPrompt p;
  void tmpl(std::string_view s) { p.text += s; }
  void data(std::string_view s) {
    if (s.empty()) return;
    if (!p.plain.empty() && p.plain.back().end == p.text.size()) {
      p.plain.back().end += s.size();
    } else {
      p.plain.push_back({p.text.size(), p.text.size() + s.size()});
    }
    p.text += s;
  }
};

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

// A text field: a string, OpenAI content parts [{"type": "text", "text": ...}] (joined with "\n",
// as vLLM flattens them in front of the official encoder), or absent/null -> "" (the official
// encoder prints "None" for a null user or tool content; dsa renders it empty).
std::string text_field(const OrderedJson& msg, const char* key, size_t index) {
  const OrderedJson* v = field(msg, key);
  if (v == nullptr || v->is_null()) return {};
  if (v->is_string()) return v->get<std::string>();
  DSA_CHECK(v->is_array(), "message {}: '{}' must be a string, a list of text parts or null, got {}", index, key,
            v->type_name());
  std::string out;
  for (size_t k = 0; k < v->size(); ++k) {
    const OrderedJson& part = (*v)[k];
    DSA_CHECK(part.is_object() && part.contains("type") && part["type"] == "text" && part.contains("text") &&
                  part["text"].is_string(),
              "message {}: content part {} is not {{\"type\": \"text\", \"text\": \"...\"}} (only text parts are "
              "supported)", index, k);
    if (k > 0) out += '\n';
    out += part["text"].get<std::string>();
  }
  return out;
}

std::string role_of(const OrderedJson& msg, size_t index) {
  DSA_CHECK(msg.is_object(), "message {} is not a JSON object", index);
  const OrderedJson* r = field(msg, "role");
  DSA_CHECK(r != nullptr && r->is_string(), "message {}: missing 'role'", index);
  return r->get<std::string>();
}

void render_response_format(const OrderedJson& rf, Builder& b) {
  b.tmpl(kResponseFormatHead);
  b.data(py_json_dumps(rf));
}

void render_tools_into(const OrderedJson& tools, Builder& b) {
  DSA_CHECK(tools.is_array(), "'tools' must be a list");
  b.tmpl(kToolsTemplateHead);
  bool first = true;
  for (const auto& t : tools) {
    DSA_CHECK(t.is_object() && t.contains("function"), "each tool must be {{\"type\": \"function\", \"function\": {{...}}}}");
    if (!first) b.tmpl("\n");
    first = false;
    b.data(py_json_dumps(t["function"]));
  }
  b.tmpl("\n</functions>\n");
}

void encode_arguments(const OrderedJson& call, size_t index, Builder& b) {
  const OrderedJson* raw = field(call, "arguments");
  DSA_CHECK(raw != nullptr, "message {}: tool call without 'arguments'", index);
  OrderedJson args;
  if (raw->is_string()) {
    try {
      args = parse_json_exact(raw->get<std::string>());
    } catch (const std::exception& e) {
      DSA_FAIL("message {}: tool call arguments are not valid JSON: {}", index, e.what());
    }
  } else {
    args = *raw;
  }
  DSA_CHECK(args.is_object(), "message {}: tool call arguments must be a JSON object", index);
  bool first = true;
  for (auto it = args.begin(); it != args.end(); ++it) {
    if (!first) b.tmpl("\n");
    first = false;
    const bool is_str = it.value().is_string();
    b.tmpl("<｜DSML｜parameter name=\"");
    b.data(it.key());
    b.tmpl(std::string("\" string=\"") + (is_str ? "true" : "false") + "\">");
    b.data(is_str ? it.value().get<std::string>() : py_json_dumps(it.value()));
    b.tmpl("</｜DSML｜parameter>");
  }
}

void render_tool_calls(const OrderedJson& calls, size_t index, Builder& b) {
  DSA_CHECK(calls.is_array(), "message {}: 'tool_calls' must be a list", index);
  b.tmpl("\n\n<｜DSML｜function_calls>\n");
  bool first = true;
  for (const auto& c : calls) {
    DSA_CHECK(c.is_object() && c.contains("function") && c["function"].is_object(),
              "message {}: tool call without a 'function' object", index);
    const OrderedJson& fn = c["function"];
    DSA_CHECK(fn.contains("name") && fn["name"].is_string(), "message {}: tool call without a name", index);
    if (!first) b.tmpl("\n");
    first = false;
    b.tmpl("<｜DSML｜invoke name=\"");
    b.data(fn["name"].get<std::string>());
    b.tmpl("\">\n");
    encode_arguments(fn, index, b);
    b.tmpl("\n</｜DSML｜invoke>");
  }
  b.tmpl("\n</｜DSML｜function_calls>");
}

int find_last_user(const OrderedJson& messages) {
  for (int i = static_cast<int>(messages.size()) - 1; i >= 0; --i) {
    const std::string r = role_of(messages[i], i);
    if (r == "user" || r == "developer") return i;
  }
  return -1;
}

void render_message(const OrderedJson& messages, int i, int last_user, const EncodeOptions& opt, Builder& b) {
  const OrderedJson& msg = messages[i];
  const std::string role = role_of(msg, i);
  const OrderedJson* tools = field(msg, "tools");
  const OrderedJson* rf = field(msg, "response_format");
  auto think_tag = [&](bool open) { return std::string(open ? kThinkStart : kThinkEnd); };

  if (role == "system") {
    b.data(text_field(msg, "content", i));
    if (truthy(tools)) {
      b.tmpl("\n\n");
      render_tools_into(*tools, b);
    }
    if (truthy(rf)) {
      b.tmpl("\n\n");
      render_response_format(*rf, b);
    }
  } else if (role == "developer" || role == "user") {
    const std::string content = text_field(msg, "content", i);
    b.tmpl(kUserTag);
    if (role == "developer") {
      DSA_CHECK(!content.empty(), "message {}: developer message needs content", i);
      if (truthy(tools)) {
        b.tmpl("\n\n");
        render_tools_into(*tools, b);
      }
      if (truthy(rf)) {
        b.tmpl("\n\n");
        render_response_format(*rf, b);
      }
      b.tmpl("\n\n# The user's message is: ");
    }
    b.data(content);
    b.tmpl(kAssistantTag);
    b.tmpl(think_tag(opt.thinking && i == last_user));
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
    if (order == 1) b.tmpl("\n\n<function_results>");
    b.tmpl("\n<result>");
    b.data(text_field(msg, "content", i));
    b.tmpl("</result>");
    if (order == n_calls) {
      b.tmpl("\n</function_results>");
      b.tmpl("\n\n" + think_tag(opt.thinking && i >= last_user));
    }
  } else if (role == "assistant") {
    const OrderedJson* calls = field(msg, "tool_calls");
    const OrderedJson* reasoning = field(msg, "reasoning");
    if (!truthy(reasoning)) reasoning = field(msg, "reasoning_content");
    if (opt.thinking && i > last_user) {
      DSA_CHECK(truthy(reasoning) || truthy(calls),
                "message {}: in thinking mode an assistant message after the last user message needs "
                "reasoning_content or tool_calls", i);
      if (truthy(reasoning)) {
        DSA_CHECK(reasoning->is_string(), "message {}: reasoning_content must be a string", i);
        b.data(reasoning->get<std::string>());
      }
      b.tmpl(kThinkEnd);
    }
    b.data(text_field(msg, "content", i));
    if (truthy(calls)) render_tool_calls(*calls, i, b);
    b.tmpl(kEos);
  } else {
    DSA_FAIL("message {}: unknown role '{}'", i, role);
  }
}

OrderedJson attach_to_system(OrderedJson messages, const char* key, const OrderedJson& value) {
  DSA_CHECK(messages.is_array(), "messages must be a JSON list");
  if (!truthy(&value)) return messages;
  for (auto& m : messages) {
    if (m.is_object() && m.contains("role") && (m["role"] == "system" || m["role"] == "developer")) {
      m[key] = value;
      return messages;
    }
  }
  OrderedJson sys = {{"role", "system"}, {"content", ""}, {key, value}};
  messages.insert(messages.begin(), sys);
  return messages;
}

}  // namespace

std::string render_tools(const OrderedJson& tools) {
  Builder b;
  render_tools_into(tools, b);
  return std::move(b.p.text);
}

OrderedJson attach_tools(OrderedJson messages, const OrderedJson& tools) {
  return attach_to_system(std::move(messages), "tools", tools);
}

OrderedJson attach_response_format(OrderedJson messages, const OrderedJson& response_format) {
  return attach_to_system(std::move(messages), "response_format", response_format);
}

RenderedPrompt render_messages(const OrderedJson& messages, const EncodeOptions& opt) {
  DSA_CHECK(messages.is_array(), "messages must be a JSON list");
  // Reasoning of earlier turns is never rendered (only turns after the last user message show
  // it), so drop_thinking needs no separate pass here.
  const int last_user = find_last_user(messages);
  Builder b;
  if (opt.add_bos) b.tmpl(kBos);
  for (int i = 0; i < static_cast<int>(messages.size()); ++i) render_message(messages, i, last_user, opt, b);
  return std::move(b.p);
}

std::string encode_messages(const OrderedJson& messages, const EncodeOptions& opt) {
  return render_messages(messages, opt).text;
}

}  // namespace dsa::text
