// Cold-start SFT data from the environments' gold episodes (rl/sft_data.h).
#include "rl/sft_data.h"

#include <algorithm>

#include "base/error.h"
#include "text/chat_encoding.h"
#include "text/chat_input.h"
#include "train/data/corpus.h"
#include "train/data/shard.h"

namespace dsa::rl {

SftExample sft_example(const text::Tokenizer& tok, const env::Json& messages, bool thinking) {
  DSA_CHECK(messages.is_array() && !messages.empty() && messages.back().value("role", "") == "assistant",
            "sft: a conversation must end with an assistant message");
  const text::EncodeOptions eo{.thinking = thinking};
  SftExample ex;
  ex.tokens = text::encode_chat(tok, messages, eo);
  ex.weights.assign(ex.tokens.size(), 0.0f);
  env::Json before = env::Json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].value("role", "") == "assistant") {
      // What the policy saw (the history and the generation prompt) and what it then produced.
      const std::vector<int32_t> prompt = text::encode_chat(tok, before, eo);
      env::Json upto = before;
      upto.push_back(messages[i]);
      const std::vector<int32_t> turn = text::encode_chat(tok, upto, eo);
      DSA_CHECK(turn.size() > prompt.size() && std::equal(prompt.begin(), prompt.end(), turn.begin()),
                "sft: message {}: the turn's prompt is not a token prefix of prompt + completion", i);
      DSA_CHECK(turn.size() <= ex.tokens.size() && std::equal(turn.begin(), turn.end(), ex.tokens.begin()),
                "sft: message {}: the turn is not a token prefix of the whole conversation", i);
      for (size_t t = prompt.size(); t < turn.size(); ++t) ex.weights[t] = 1.0f;
      ex.assistant_tokens += int64_t(turn.size() - prompt.size());
      ++ex.turns;
    }
    before.push_back(messages[i]);
  }
  return ex;
}

SftDataStats write_sft_shard(const std::vector<env::TaskRef>& tasks, const text::Tokenizer& tok,
                             const std::string& path, const SftDataOptions& opt) {
  DSA_CHECK(!opt.modes.empty(), "sft: no mode (thinking / non-thinking) selected");
  std::vector<env::TaskRef> sel;
  for (const env::TaskRef& t : tasks)
    if (opt.split.empty() || t.task->split == opt.split) sel.push_back(t);
  DSA_CHECK(!sel.empty(), "sft: no task of split \"{}\"", opt.split);
  SftDataStats st;
  st.tasks = int64_t(sel.size());
  train::ShardWriter w(path, {uint32_t(tok.id_limit()), train::tokenizer_fingerprint(tok), train::WeightKind::kU8});
  const uint32_t src_think = w.add_source("env-gold-thinking"), src_chat = w.add_source("env-gold-chat");
  for (bool thinking : opt.modes) {
    env::AgentOptions ao = opt.agent;
    ao.thinking = thinking;
    env::GoldPolicy gold;
    const std::vector<env::Episode> eps = env::run_episodes(sel, 1, gold, ao, opt.threads);
    for (const env::Episode& e : eps) {
      ++st.episodes;
      if (!e.pass) {
        ++st.skipped;
        continue;
      }
      const SftExample ex = sft_example(tok, e.messages, thinking);
      w.add_document(ex.tokens, thinking ? src_think : src_chat, ex.weights);
      ++st.documents;
      st.tokens += int64_t(ex.tokens.size());
      st.assistant_tokens += ex.assistant_tokens;
      ++st.by_domain[e.domain];
    }
  }
  w.finish();
  return st;
}

}  // namespace dsa::rl
