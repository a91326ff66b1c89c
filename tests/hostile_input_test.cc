// Hostile inputs (issue 19): JSON nested far too deep or with many keys anywhere we parse it
// (classes 1-2), and checkpoints that lie (class 9): absurd counts, shards outside the model
// directory, FIFOs, non-finite weights, floats for integers. Each must fail fast with a clear
// error, never crash, hang or build huge tables.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "base/files.h"
#include "io/json.h"
#include "model/make_model.h"
#include "test_util.h"
#include "text/chat_input.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string deep(int levels, const char* open = "[", const char* close = "]") {
  std::string s;
  for (int i = 0; i < levels; ++i) s += open;
  s += "0";
  for (int i = 0; i < levels; ++i) s += close;
  return s;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(Json, DepthIsLimitedAtParseTime) {
  EXPECT_NO_THROW(parse_json_ordered(deep(kJsonMaxDepth)));
  EXPECT_NE(error_of([] { parse_json_ordered(deep(kJsonMaxDepth + 1)); }).find("nesting deeper than"), std::string::npos);
  const auto t0 = Clock::now();
  for (const char* o : {"[", "{\"a\":"}) {
    std::string s(200000 * std::strlen(o), ' ');
    for (size_t i = 0; i < 200000; ++i) std::memcpy(s.data() + i * std::strlen(o), o, std::strlen(o));
    EXPECT_NE(error_of([&] { parse_json_ordered(s); }).find("nesting"), std::string::npos);
    EXPECT_NE(error_of([&] { parse_json(s); }).find("nesting"), std::string::npos);
    // Deep inside an unknown field of an otherwise fine object.
    EXPECT_NE(error_of([&] { parse_json_ordered("{\"messages\": [], \"x\": " + s); }).find("nesting"), std::string::npos);
  }
  EXPECT_LT(seconds_since(t0), 5.0);
}

TEST(Json, WideObjectsParseInLinearTime) {
  // 300K keys (~4.5 MB): the duplicate search of ordered_json made this minutes.
  std::string s = "{";
  for (int i = 0; i < 300000; ++i) s += fmt::format("{}\"key{}\": {}", i ? "," : "", i, i);
  s += "}";
  const auto t0 = Clock::now();
  const auto j = parse_json_ordered(s);
  EXPECT_LT(seconds_since(t0), 5.0);
  ASSERT_EQ(j.size(), 300000u);
  EXPECT_EQ(j.begin().key(), "key0");  // order kept
  EXPECT_EQ(j.at("key299999"), 299999);
  // Wide arrays and long strings too.
  std::string a = "[";
  for (int i = 0; i < 1000000; ++i) a += "1,";
  a += "\"" + std::string(3000000, 'x') + "\"]";
  EXPECT_EQ(parse_json_ordered(a).size(), 1000001u);
  // A 3-million-digit number is refused without quoting it.
  const std::string e = error_of([] { parse_json("[" + std::string(3000000, '7') + "]"); });
  EXPECT_NE(e.find("number overflow"), std::string::npos) << e.substr(0, 100);
  EXPECT_EQ(e.find("777"), std::string::npos) << e.substr(0, 100);
}

TEST(Json, DuplicateKeysAreRefusedAtAnyLevel) {
  EXPECT_NE(error_of([] { parse_json_ordered(R"({"a": 1, "b": 2, "a": 3})"); }).find("duplicate key 'a'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_json(R"({"x": [{"k": 1, "k": 2}]})"); }).find("duplicate key 'k'"), std::string::npos);
  EXPECT_NO_THROW(parse_json_ordered(R"({"a": {"a": {"a": 1}}})"));
}

TEST(Json, ErrorsNameThePlaceButNeverQuoteTheInput) {
  const std::string e = error_of([] { parse_json("root:x:0:0:secret-password:/root:/bin/bash"); });
  EXPECT_NE(e.find("line 1"), std::string::npos) << e;
  EXPECT_EQ(e.find("secret"), std::string::npos) << e;
  EXPECT_EQ(e.find("root:x"), std::string::npos) << e;
}

// ---- checkpoints ------------------------------------------------------------------------------

std::string tmpdir(const std::string& name) {
  std::string d = testing::TempDir() + "dsa_hostile_" + std::to_string(::getpid()) + "_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

json tiny_config() { return parse_json(read_text_file(test::tiny_model_dir() + "/config.json", 1 << 20)); }

// The tiny checkpoint with an edited config and/or tensor list, written into a fresh directory.
std::string variant(const std::string& name, const std::function<void(json&)>& cfg_edit,
                    const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& ts_edit = nullptr) {
  const std::string d = tmpdir(name);
  Checkpoint ck = Checkpoint::open(test::tiny_model_dir());
  std::vector<std::pair<std::string, Tensor>> ts;
  for (auto& [n, e] : ck.tensors()) {
    Tensor v = ck.get(n);
    Tensor copy = Tensor::empty(v.dtype, v.shape);
    std::memcpy(copy.data, v.data, v.nbytes());
    ts.emplace_back(n, copy);
  }
  if (ts_edit) ts_edit(ts);
  write_safetensors(d + "/model.safetensors", ts);
  json cfg = tiny_config();
  if (cfg_edit) cfg_edit(cfg);
  std::ofstream(d + "/config.json") << cfg.dump(1);
  return d;
}

std::string load_error(const std::string& dir) {
  return error_of([&] { Model::load(dir, ops::ref_ops(), [](const std::string&) {}); });
}

TEST(HostileCheckpoint, AbsurdCountsFailBeforeAnyTableIsBuilt) {
  const std::pair<const char*, int64_t> cases[] = {
      {"n_routed_experts", int64_t(1) << 40}, {"num_hidden_layers", int64_t(1) << 40},
      {"num_nextn_predict_layers", int64_t(1) << 40}, {"n_routed_experts", 60000},
      {"num_hidden_layers", 4000}, {"hidden_size", int64_t(1) << 40}, {"vocab_size", int64_t(1) << 50}};
  for (const auto& [key, v] : cases) {
    const std::string d = variant(std::string("count_") + key, [&](json& c) {
      c[key] = v;
      if (std::string(key) == "n_routed_experts") c["n_group"] = 1, c["topk_group"] = 1;
    });
    const auto t0 = Clock::now();
    const std::string e = load_error(d);
    EXPECT_LT(seconds_since(t0), 2.0) << key;
    EXPECT_FALSE(e.empty()) << key;
    EXPECT_TRUE(e.find(key) != std::string::npos || e.find("describes") != std::string::npos) << key << ": " << e;
  }
}

TEST(HostileCheckpoint, FloatsAreNotIntegers) {
  for (const char* key : {"num_hidden_layers", "hidden_size", "n_routed_experts", "index_topk"}) {
    const std::string d = variant(std::string("float_") + key, [&](json& c) { c[key] = c[key].get<double>() + 0.5; });
    EXPECT_NE(load_error(d).find("must be an integer"), std::string::npos) << key;
    const std::string d2 = variant(std::string("float2_") + key, [&](json& c) { c[key] = c[key].get<double>(); });
    EXPECT_NE(load_error(d2).find("must be an integer"), std::string::npos) << key << " (2.0 is a float)";
  }
}

TEST(HostileCheckpoint, DeepJsonInConfigIndexAndHeaders) {
  const std::string d = tmpdir("deep_cfg");
  std::ofstream(d + "/config.json") << "{\"model_type\": " << deep(100000) << "}";
  EXPECT_NE(load_error(d).find("nesting"), std::string::npos);
  // Index file.
  const std::string d2 = variant("deep_index", nullptr);
  std::ofstream(d2 + "/model.safetensors.index.json") << "{\"weight_map\": " << deep(100000, "{\"a\":", "}") << "}";
  EXPECT_NE(load_error(d2).find("nesting"), std::string::npos);
  // Safetensors header.
  const std::string d3 = variant("deep_header", nullptr);
  {
    const std::string h = "{\"__metadata__\": " + deep(100000) + "}";
    std::ofstream f(d3 + "/model.safetensors", std::ios::binary | std::ios::trunc);
    const uint64_t n = h.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << h;
  }
  EXPECT_NE(load_error(d3).find("nesting"), std::string::npos);
  // Messages file text.
  EXPECT_NE(error_of([] { text::messages_json_to_prompt(deep(100000), false); }).find("nesting"), std::string::npos);
}

std::string index_for(const std::string& shard) {
  json wm = json::object();
  const Checkpoint ck = Checkpoint::open(test::tiny_model_dir());
  for (auto& [n, e] : ck.tensors()) wm[n] = shard;
  return json{{"weight_map", wm}}.dump();
}

TEST(HostileCheckpoint, ShardsMustStayInTheModelDirectory) {
  const std::string outside = tmpdir("outside_shard");
  fs::copy_file(test::tiny_model_dir() + "/model.safetensors", outside + "/model.safetensors");
  { std::ofstream(outside + "/secret.safetensors") << "root:x:0:0:secret-password"; }
  for (const std::string& shard : {"../" + fs::path(outside).filename().string() + "/model.safetensors",
                                   outside + "/model.safetensors", outside + "/secret.safetensors",
                                   std::string("/etc/passwd"), std::string("config.json")}) {
    const std::string d = tmpdir("escape");
    fs::copy_file(test::tiny_model_dir() + "/config.json", d + "/config.json");
    std::ofstream(d + "/model.safetensors.index.json") << index_for(shard);
    const std::string e = load_error(d);
    EXPECT_TRUE(e.find("leaves the model directory") != std::string::npos ||
                e.find("is not a .safetensors file") != std::string::npos)
        << shard << ": " << e;
    EXPECT_EQ(e.find("secret-password"), std::string::npos) << e;
    EXPECT_EQ(e.find("root:x"), std::string::npos) << e;
  }
}

TEST(HostileCheckpoint, FifosAreRefusedNotWaitedOn) {
  const auto t0 = Clock::now();
  const std::string d = tmpdir("fifo_cfg");
  ASSERT_EQ(::mkfifo((d + "/config.json").c_str(), 0600), 0);
  EXPECT_NE(load_error(d).find("not a regular file"), std::string::npos);
  const std::string d2 = tmpdir("fifo_shard");  // a shard named by the index
  fs::copy_file(test::tiny_model_dir() + "/config.json", d2 + "/config.json");
  std::ofstream(d2 + "/model.safetensors.index.json") << index_for("fifo.safetensors");
  ASSERT_EQ(::mkfifo((d2 + "/fifo.safetensors").c_str(), 0600), 0);
  EXPECT_NE(load_error(d2).find("not a regular file"), std::string::npos);
  const std::string d4 = tmpdir("fifo_single");
  fs::copy_file(test::tiny_model_dir() + "/config.json", d4 + "/config.json");
  ASSERT_EQ(::mkfifo((d4 + "/model.safetensors").c_str(), 0600), 0);
  EXPECT_FALSE(load_error(d4).empty());
  const std::string d3 = tmpdir("fifo_index");
  fs::copy_file(test::tiny_model_dir() + "/config.json", d3 + "/config.json");
  ASSERT_EQ(::mkfifo((d3 + "/model.safetensors.index.json").c_str(), 0600), 0);
  const std::string e3 = load_error(d3);
  EXPECT_FALSE(e3.empty());
  ASSERT_EQ(::mkfifo((d3 + "/messages.json").c_str(), 0600), 0);
  EXPECT_NE(error_of([&] { read_text_file(d3 + "/messages.json", 1 << 20, "messages file"); }).find("not a regular file"),
            std::string::npos);
  EXPECT_LT(seconds_since(t0), 10.0);
}

TEST(HostileCheckpoint, NonFiniteWeightsAreRefused) {
  auto poison = [](const std::string& name, size_t at, const std::vector<uint8_t>& bytes) {
    return [=](std::vector<std::pair<std::string, Tensor>>& ts) {
      for (auto& [n, t] : ts)
        if (n == name) std::memcpy(static_cast<uint8_t*>(t.data) + at, bytes.data(), bytes.size());
    };
  };
  const std::string fp8 = variant("nan_fp8", nullptr, poison("model.layers.1.mlp.experts.3.up_proj.weight", 77, {0x7f}));
  EXPECT_NE(load_error(fp8).find("model.layers.1.mlp.experts.3.up_proj.weight"), std::string::npos);
  EXPECT_NE(load_error(fp8).find("not finite"), std::string::npos);
  const std::string fp8n = variant("nan_fp8_neg", nullptr, poison("model.layers.0.self_attn.q_b_proj.weight", 5, {0xff}));
  EXPECT_NE(load_error(fp8n).find("element 5 is not finite"), std::string::npos);
  const std::string inf = variant("inf_bf16", nullptr, poison("model.embed_tokens.weight", 20, {0x80, 0x7f}));  // +inf
  EXPECT_NE(load_error(inf).find("model.embed_tokens.weight"), std::string::npos);
  const std::string nan = variant("nan_bf16", nullptr, poison("lm_head.weight", 0, {0xc1, 0xff}));
  EXPECT_NE(load_error(nan).find("lm_head.weight"), std::string::npos);
}

}  // namespace
}  // namespace dsa
