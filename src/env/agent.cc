// Agent loop, scripted policies and the engine policy.
#include "env/agent.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/error.h"
#include "base/hash.h"
#include "env/verify.h"
#include "text/chat_encoding.h"
#include "text/chat_input.h"
#include "text/completion_parser.h"

namespace dsa::env {

std::vector<TaskRef> prepare_tasks(const std::vector<EnvSpec>& specs) {
  std::vector<TaskRef> out;
  for (const auto& s : specs) {
    auto img = build_image(s);
    for (const auto& t : s.tasks) {
      const GoldRun g = replay(s, img, t.gold_calls);
      DSA_CHECK(g.ok, "{} task {}: the gold solution fails: {}", s.name, t.id, g.error);
      out.push_back({&s, img, &t, g.end_state});
    }
  }
  return out;
}

Json initial_messages(const EnvSpec& env, const TaskSpec& task) {
  Json sys = {{"role", "system"}, {"content", env.system_prompt}};
  if (!env.tools.empty()) sys["tools"] = env.openai_tools();
  return Json::array({sys, {{"role", "user"}, {"content", task.instruction}}});
}

Json Episode::to_json(bool with_messages) const {
  Json o = {{"task", task_id}, {"domain", domain}, {"difficulty", difficulty}, {"split", split}, {"pass", pass},
            {"end", end}, {"turns", turns}, {"tool_calls", tool_calls}, {"tool_errors", tool_errors},
            {"tokens", tokens}, {"seconds", seconds}, {"final_answer", final_answer}};
  if (!detail.empty()) o["detail"] = detail;
  if (!failures.empty()) o["failures"] = failures;
  if (with_messages) o["messages"] = messages;
  return o;
}

Json TurnRecord::to_json() const {
  Json o = {{"prompt", prompt}, {"tokens", tokens}, {"logprobs", logprobs}, {"loss_mask", loss_mask}};
  if (logprobs_kept.size() == tokens.size()) o["logprobs_kept"] = logprobs_kept;
  if (mask_offsets.size() == tokens.size() + 1) {
    Json m = Json::array();
    for (size_t i = 0; i < tokens.size(); ++i)
      m.push_back(std::vector<int32_t>(mask_ids.begin() + mask_offsets[i], mask_ids.begin() + mask_offsets[i + 1]));
    o["sampling_mask"] = std::move(m);  // [] = nothing cut
  }
  if (experts) {
    std::vector<int32_t> layers;
    for (size_t l = 0; l < experts->layers.size(); ++l)
      if (!experts->layers[l].experts.empty()) layers.push_back(int32_t(l));
    const int64_t rows = int64_t(prompt.size() + tokens.size()) - 1;
    Json ids = Json::array();
    for (int64_t t = 0; t < rows && !layers.empty(); ++t) {
      Json row = Json::array();
      for (int32_t l : layers) {
        const auto& e = experts->layers[size_t(l)].experts;
        const int64_t k = int64_t(e.size()) / rows;
        row.push_back(std::vector<int32_t>(e.begin() + t * k, e.begin() + (t + 1) * k));
      }
      ids.push_back(std::move(row));
    }
    o["experts"] = {{"layers", layers}, {"ids", std::move(ids)}};  // ids [position][layer][k]
  }
  return o;
}

Episode run_episode(const TaskRef& ref, Policy& policy, const AgentOptions& opt, const EventFn& on_event) {
  const auto t0 = std::chrono::steady_clock::now();
  const EnvSpec& env = *ref.env;
  const TaskSpec& task = *ref.task;
  auto emit = [&](const char* kind, const std::string& text) {
    if (on_event) on_event(kind, text);
  };
  Episode ep;
  ep.task_id = task.id;
  ep.domain = env.domain.empty() ? env.name : env.domain;
  ep.split = task.split;
  ep.difficulty = task.difficulty;
  ep.messages = initial_messages(env, task);
  Sandbox sb(env, ref.image, opt.limits);
  bool answered = false;
  for (ep.turns = 0; ep.turns < opt.max_turns;) {
    if (ep.tokens >= opt.max_tokens) {
      ep.end = "token_budget";
      break;
    }
    EpisodeContext ctx{env, task, opt, ep.turns, opt.max_tokens - ep.tokens};
    PolicyReply r;
    try {
      r = policy.next(ep.messages, ctx);
    } catch (const std::exception& e) {
      r.ok = false;
      r.error = e.what();
    }
    ++ep.turns;
    ep.tokens += r.tokens;
    if (!r.record.tokens.empty()) ep.records.push_back(std::move(r.record));
    if (!r.ok) {
      ep.end = "policy_error";
      ep.detail = r.error;
      emit("error", r.error);
      break;
    }
    Json msg;
    if (r.structured) {
      msg = r.message;
    } else {
      const text::ParsedCompletion pc = text::parse_completion(r.raw, opt.thinking);
      if (!pc.ok) {
        ep.end = "malformed";
        ep.detail = pc.error;
        emit("error", "malformed completion: " + pc.error);
        break;
      }
      msg = pc.to_message();
    }
    if (!msg.contains("content") || msg["content"].is_null()) msg["content"] = "";
    if (msg.contains("reasoning_content") && msg["reasoning_content"].is_string() && !msg["reasoning_content"].get<std::string>().empty())
      emit("reasoning", msg["reasoning_content"].get<std::string>());
    if (msg["content"].is_string() && !msg["content"].get<std::string>().empty()) emit("content", msg["content"].get<std::string>());
    ep.messages.push_back(msg);
    const bool has_calls = msg.contains("tool_calls") && msg["tool_calls"].is_array() && !msg["tool_calls"].empty();
    if (!has_calls) {
      ep.final_answer = msg["content"].is_string() ? msg["content"].get<std::string>() : "";
      answered = true;
      ep.end = "answer";
      break;
    }
    for (const auto& c : msg["tool_calls"]) {
      const Json& fn = c.contains("function") ? c["function"] : c;
      const std::string name = fn.contains("name") && fn["name"].is_string() ? fn["name"].get<std::string>() : "";
      const std::string args = fn.contains("arguments") && fn["arguments"].is_string() ? fn["arguments"].get<std::string>()
                               : fn.contains("arguments") ? text::py_json_dumps(fn["arguments"]) : "{}";
      emit("call", fmt::format("{}({})", name, args));
      const ToolResult res = sb.call_text(name, args);
      ++ep.tool_calls;
      if (!res.ok) ++ep.tool_errors;
      emit("result", res.content);
      Json tm = {{"role", "tool"}, {"content", res.content}};
      if (c.contains("id")) tm["tool_call_id"] = c["id"];
      ep.messages.push_back(tm);
    }
  }
  if (ep.end.empty()) ep.end = "max_turns";
  if (answered) {
    const VerifyResult v = verify(task, ep.final_answer, sb.state_hash(), ref.gold_state);
    ep.pass = v.pass;
    ep.failures = v.failures;
  } else {
    ep.failures = {"no final answer (" + ep.end + ")"};
  }
  ep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  emit("end", fmt::format("{} ({}, {} turns, {} tool calls)", ep.pass ? "PASS" : "FAIL", ep.end, ep.turns, ep.tool_calls));
  return ep;
}

std::vector<Episode> run_episodes(const std::vector<TaskRef>& tasks, int attempts, Policy& p, const AgentOptions& opt,
                                  int threads, const std::function<void(size_t, size_t)>& progress) {
  const size_t total = tasks.size() * size_t(std::max(1, attempts));
  std::vector<Episode> out(total);
  std::atomic<size_t> next{0}, done{0};
  std::mutex mu;
  auto work = [&] {
    for (size_t i; (i = next++) < total;) {
      out[i] = run_episode(tasks[i / size_t(std::max(1, attempts))], p, opt);
      const size_t d = ++done;
      if (progress) {
        std::lock_guard<std::mutex> lk(mu);
        progress(d, total);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int k = 1; k < std::max(1, threads); ++k) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return out;
}

std::string render_completion(const Json& assistant_message, bool thinking) {
  Json before = Json::array({{{"role", "user"}, {"content", "x"}}});
  Json all = before;
  all.push_back(assistant_message);
  const text::EncodeOptions eo{.thinking = thinking, .drop_thinking = true, .add_bos = false};
  const std::string prefix = text::encode_messages(before, eo), full = text::encode_messages(all, eo);
  DSA_CHECK(full.compare(0, prefix.size(), prefix) == 0, "render_completion: unexpected encoder output");
  return full.substr(prefix.size());
}

namespace {

int assistant_turns(const Json& messages) {
  int n = 0;
  for (const auto& m : messages) n += m.value("role", "") == "assistant";
  return n;
}

Json call_message(const std::vector<ToolCallSpec>& calls, const std::string& reasoning, bool thinking) {
  Json tc = Json::array();
  for (const auto& c : calls)
    tc.push_back({{"type", "function"}, {"function", {{"name", c.name}, {"arguments", text::py_json_dumps(c.arguments)}}}});
  Json m = {{"role", "assistant"}, {"content", ""}, {"tool_calls", tc}};
  if (thinking) m["reasoning_content"] = reasoning;
  return m;
}

Json answer_message(const std::string& content, const std::string& reasoning, bool thinking) {
  Json m = {{"role", "assistant"}, {"content", content}};
  if (thinking) m["reasoning_content"] = reasoning;
  return m;
}

PolicyReply raw_reply(const Json& msg, bool thinking) {
  PolicyReply r;
  r.raw = render_completion(msg, thinking);
  return r;
}

}  // namespace

PolicyReply GoldPolicy::next(const Json& messages, const EpisodeContext& ctx) {
  const TaskSpec& t = ctx.task;
  const size_t k = size_t(assistant_turns(messages));
  const bool th = ctx.opt.thinking;
  if (k < t.gold_calls.size())
    return raw_reply(call_message({t.gold_calls[k]}, fmt::format("Step {}: I call {}.", k + 1, t.gold_calls[k].name), th), th);
  return raw_reply(answer_message(t.gold_answer, t.gold_reasoning.empty() ? "I have what I need." : t.gold_reasoning, th), th);
}

PolicyReply FaultyPolicy::next(const Json& messages, const EpisodeContext& ctx) {
  const TaskSpec& t = ctx.task;
  const size_t k = size_t(assistant_turns(messages));
  const bool th = ctx.opt.thinking;
  Mode m = mode_;
  if (m == kMixed) m = Mode(fnv1a_bytes(kFnv1aOffset, t.id) % 5);
  const std::string wrong = answer_mutations(t).empty() ? "I am not sure." : answer_mutations(t).back();
  switch (m) {
    case kUnknownTool:
      if (k == 0) return raw_reply(call_message({{"drop_database", {{"really", true}}}}, "try", th), th);
      return raw_reply(answer_message(wrong, "it failed", th), th);
    case kBadArguments:
      if (k == 0 && !ctx.env.tools.empty()) {
        Json args = Json::object();
        for (const auto& p : ctx.env.tools[0].params) args[p.name] = p.type == ParamType::kString ? Json(12345) : Json("not-a-value");
        args["extra_param"] = "x";
        return raw_reply(call_message({{ctx.env.tools[0].name, args}}, "try", th), th);
      }
      return raw_reply(answer_message(wrong, "it failed", th), th);
    case kMalformed: {
      PolicyReply r;
      r.raw = std::string(th ? "hmm</think>" : "") + "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"x\">\n<｜DSML｜parameter name=\"a\"";
      return r;
    }
    case kWrongAnswer: {
      // The gold calls without the last write, then a mutated answer.
      std::vector<ToolCallSpec> calls = t.gold_calls;
      for (size_t i = calls.size(); i-- > 0;) {
        const ToolSpec* tool = ctx.env.find_tool(calls[i].name);
        if (tool && tool->kind == ToolKind::kSqlWrite) {
          calls.erase(calls.begin() + long(i));
          break;
        }
      }
      if (k < calls.size()) return raw_reply(call_message({calls[k]}, "next", th), th);
      return raw_reply(answer_message(wrong, "done", th), th);
    }
    default: {  // never stops: keeps calling a tool
      if (ctx.env.tools.empty()) {
        PolicyReply r;
        r.raw = "no end of sentence";  // content without EOS: malformed
        return r;
      }
      return raw_reply(call_message({{ctx.env.tools[0].name, Json::object()}}, "again", th), th);
    }
  }
}

EnginePolicy::EnginePolicy(Engine& engine, const text::Tokenizer& tok, int32_t eos_id, SamplingParams sampling, bool record)
    : engine_(engine), tok_(tok), eos_(eos_id), sampling_(sampling), record_(record) {}

PolicyReply EnginePolicy::next(const Json& messages, const EpisodeContext& ctx) {
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    GenResult res;
    std::vector<int32_t> tokens;  // reported ids (stop ids excluded)
    TurnRecord rec;               // every sampled id, with its log-prob and sampling mask
  };
  auto w = std::make_shared<Wait>();
  PolicyReply r;
  GenRequest req;
  req.prompt = text::encode_chat(tok_, messages, {.thinking = ctx.opt.thinking});
  req.max_tokens = std::max<int64_t>(1, std::min(ctx.opt.max_turn_tokens, ctx.tokens_left));
  req.sampling = sampling_;
  req.sampling.seed = sampling_.seed + calls_++;
  req.stop_ids = {eos_};
  if (record_) {
    req.record_mask = req.record_experts = true;
    w->rec.mask_offsets.push_back(0);
    req.on_sample = [w](const SampleInfo& si) {  // engine thread; w->rec is read after on_done
      TurnRecord& t = w->rec;
      t.tokens.push_back(si.token);
      t.logprobs.push_back(si.logprob);
      t.logprobs_kept.push_back(si.logprob_kept);
      t.mask_ids.insert(t.mask_ids.end(), si.mask->begin(), si.mask->end());
      t.mask_offsets.push_back(int64_t(t.mask_ids.size()));
    };
  }
  req.on_token = [w](int32_t t) {
    w->tokens.push_back(t);
    return true;
  };
  req.on_done = [w](const GenResult& g) {
    std::lock_guard<std::mutex> lk(w->mu);
    w->res = g;
    w->done = true;
    w->cv.notify_all();
  };
  const std::vector<int32_t> prompt = req.prompt;
  for (;;) {
    try {
      engine_.submit(std::move(req));
      break;
    } catch (const EngineBusy&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // queue full: retry
    } catch (const std::exception& e) {
      r.ok = false;
      r.error = e.what();
      return r;
    }
  }
  std::unique_lock<std::mutex> lk(w->mu);
  w->cv.wait(lk, [&] { return w->done; });
  if (w->res.reason == FinishReason::kError || w->res.reason == FinishReason::kCancelled) {
    r.ok = false;
    r.error = w->res.error.empty() ? "generation cancelled" : w->res.error;
    return r;
  }
  r.tokens = w->res.generated;
  r.raw = tok_.decode(w->tokens, false);
  if (w->res.reason == FinishReason::kStop && int64_t(w->tokens.size()) < w->res.generated)
    r.raw += text::kEos;  // the stop token is not reported; the parser wants it after plain content
  if (record_) {
    r.record = std::move(w->rec);
    DSA_CHECK(int64_t(r.record.tokens.size()) == w->res.generated, "engine policy: {} sampled ids recorded, {} generated",
              r.record.tokens.size(), w->res.generated);
    r.record.prompt = prompt;
    r.record.loss_mask.assign(r.record.tokens.size(), 1);
    r.record.experts = w->res.experts;
  }
  return r;
}

}  // namespace dsa::env
