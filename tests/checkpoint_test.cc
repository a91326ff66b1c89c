// Loading a V3.2 checkpoint: config.json invariants and the tensor table (missing, unexpected,
// mis-typed, mis-shaped tensors; bad scales), sharded checkpoints, make-model determinism.
#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/make_model.h"
#include "model/tensor_table.h"
#include "test_util.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string tmpdir(const std::string& name) {
  std::string d = testing::TempDir() + "dsa_ckpt_" + std::to_string(::getpid()) + "_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Copies the tiny checkpoint's tensors into `dir`, letting `edit` change the list first.
void rewrite(const std::string& dir, const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit,
             const std::function<void(json&)>& edit_cfg = nullptr) {
  const std::string src = test::tiny_model_dir();
  Checkpoint ck = Checkpoint::open(src);
  std::vector<std::pair<std::string, Tensor>> ts;
  for (auto& [n, e] : ck.tensors()) {
    Tensor v = ck.get(n);
    Tensor copy = Tensor::empty(v.dtype, v.shape);
    std::memcpy(copy.data, v.data, v.nbytes());
    ts.emplace_back(n, copy);
  }
  edit(ts);
  write_safetensors(dir + "/model.safetensors", ts);
  std::ifstream f(src + "/config.json");
  json cfg = json::parse(f);
  if (edit_cfg) edit_cfg(cfg);
  std::ofstream(dir + "/config.json") << cfg.dump(2);
}

std::string load_error(const std::string& dir) {
  try {
    Model::load(dir, ops::ref_ops(), [](const std::string&) {});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Checkpoint, TinyLoadsAndSkipsMtpWithANote) {
  std::vector<std::string> notes;
  auto m = Model::load(test::tiny_model_dir(), ops::ref_ops(), [&](const std::string& s) { notes.push_back(s); });
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("MTP"), std::string::npos);
  EXPECT_EQ(m->config().num_hidden_layers, 3);
}

TEST(Checkpoint, MissingTensorIsNamed) {
  const auto d = tmpdir("missing");
  rewrite(d, [](auto& ts) {
    std::erase_if(ts, [](auto& p) { return p.first == "model.layers.1.self_attn.indexer.wk.weight"; });
  });
  const std::string e = load_error(d);
  EXPECT_NE(e.find("missing tensor model.layers.1.self_attn.indexer.wk.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[128, 256]"), std::string::npos) << e;
}

TEST(Checkpoint, MissingScaleIsNamed) {
  const auto d = tmpdir("missing_scale");
  rewrite(d, [](auto& ts) {
    std::erase_if(ts, [](auto& p) { return p.first == "model.layers.0.self_attn.o_proj.weight_scale_inv"; });
  });
  EXPECT_NE(load_error(d).find("missing tensor model.layers.0.self_attn.o_proj.weight_scale_inv"), std::string::npos);
}

TEST(Checkpoint, UnexpectedTensorIsNamed) {
  const auto d = tmpdir("unexpected");
  rewrite(d, [](auto& ts) { ts.emplace_back("model.layers.0.self_attn.bogus.weight", Tensor::zeros(DType::BF16, {4})); });
  const std::string e = load_error(d);
  EXPECT_NE(e.find("unexpected tensor model.layers.0.self_attn.bogus.weight"), std::string::npos) << e;
}

TEST(Checkpoint, MisshapedTensorNamesBothShapes) {
  const auto d = tmpdir("misshaped");
  rewrite(d, [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.layers.2.mlp.experts.3.down_proj.weight") t = Tensor::zeros(DType::F8_E4M3, {256, 128});
  });
  const std::string e = load_error(d);
  EXPECT_NE(e.find("model.layers.2.mlp.experts.3.down_proj.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[256, 128]"), std::string::npos) << e;
  EXPECT_NE(e.find("[256, 192]"), std::string::npos) << e;
}

TEST(Checkpoint, WrongDtypeIsNamed) {
  const auto d = tmpdir("dtype");
  rewrite(d, [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.layers.0.self_attn.q_a_proj.weight") t = Tensor::zeros(DType::BF16, t.shape);
  });
  const std::string e = load_error(d);
  EXPECT_NE(e.find("q_a_proj.weight has dtype BF16, expected F8_E4M3"), std::string::npos) << e;
}

TEST(Checkpoint, NonFiniteOrZeroScaleIsRejected) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), 0.0f, -1.0f}) {
    const auto d = tmpdir("scale");
    rewrite(d, [bad](auto& ts) {
      for (auto& [n, t] : ts)
        if (n == "model.layers.1.mlp.gate_proj.weight_scale_inv" || n == "model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv")
          t.template ptr<float>()[1] = bad;
    });
    const std::string e = load_error(d);
    EXPECT_NE(e.find("experts.0.gate_proj.weight_scale_inv: scale element 1"), std::string::npos) << e;
  }
}

TEST(Checkpoint, NonFiniteNormIsRejected) {
  const auto d = tmpdir("norm");
  rewrite(d, [](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.norm.weight") t.template ptr<uint16_t>()[5] = 0x7fc0;
  });
  EXPECT_NE(load_error(d).find("model.norm.weight: element 5 is not finite"), std::string::npos);
}

TEST(Checkpoint, ConfigInvariantsAreChecked) {
  struct Case { const char* key; json value; const char* msg; };
  const Case cases[] = {
      {"model_type", "deepseek_v3", "is not deepseek_v32"},
      {"hidden_size", 0, "hidden_size must be positive"},
      {"hidden_size", "256", "wrong type"},
      {"n_group", 3, "multiple of n_group"},
      {"index_head_dim", 96, "power of two"},
      {"num_key_value_heads", 2, "num_key_value_heads"},
      {"scoring_func", "softmax", "scoring_func"},
      {"num_experts_per_tok", 9, "exceeds the experts of the kept groups"},
  };
  for (const Case& c : cases) {
    const auto d = tmpdir("cfg");
    rewrite(d, [](auto&) {}, [&](json& j) { j[c.key] = c.value; });
    const std::string e = load_error(d);
    EXPECT_NE(e.find(c.msg), std::string::npos) << c.key << ": " << e;
  }
  const auto d = tmpdir("cfg_missing");
  rewrite(d, [](auto&) {}, [](json& j) { j.erase("kv_lora_rank"); });
  EXPECT_NE(load_error(d).find("missing required key \"kv_lora_rank\""), std::string::npos);
  const auto d2 = tmpdir("cfg_badjson");
  rewrite(d2, [](auto&) {});
  std::ofstream(d2 + "/config.json") << "{\"model_type\": ";
  EXPECT_NE(load_error(d2).find("invalid JSON"), std::string::npos);
}

TEST(Checkpoint, ShardedCheckpointGivesTheSameLogits) {
  const auto d = tmpdir("sharded");
  MakeModelOptions o;
  o.preset = "tiny";
  o.out_dir = d;
  o.shards = 3;
  make_model(o);
  ASSERT_TRUE(fs::exists(d + "/model.safetensors.index.json"));
  ASSERT_TRUE(fs::exists(d + "/model-00003-of-00003.safetensors"));
  auto a = Model::load(d, ops::ref_ops(), [](const std::string&) {});
  auto b = Model::load(test::tiny_model_dir(), ops::ref_ops(), [](const std::string&) {});
  auto sa = a->new_sequence(), sb = b->new_sequence();
  EXPECT_EQ(a->forward(sa, {1, 2, 3, 4}), b->forward(sb, {1, 2, 3, 4}));
}

TEST(Checkpoint, MakeModelIsDeterministicAndHasTheExactLayout) {
  const auto d = tmpdir("det");
  MakeModelOptions o;
  o.preset = "tiny";
  o.out_dir = d;
  make_model(o);
  auto read = [](const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  EXPECT_EQ(read(d + "/model.safetensors"), read(test::tiny_model_dir() + "/model.safetensors"));
  // Spot-check names, dtypes and block-scale shapes of the V3.2 layout.
  Checkpoint ck = Checkpoint::open(d);
  const TensorEntry* q = ck.find("model.layers.1.self_attn.q_b_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, DType::F8_E4M3);
  EXPECT_EQ(q->shape, (Shape{4 * 192, 192}));
  const TensorEntry* qs = ck.find("model.layers.1.self_attn.q_b_proj.weight_scale_inv");
  ASSERT_NE(qs, nullptr);
  EXPECT_EQ(qs->shape, (Shape{6, 2}));  // ceil(768/128), ceil(192/128): a partial block
  EXPECT_EQ(ck.find("model.layers.0.self_attn.indexer.k_norm.bias")->dtype, DType::F32);
  EXPECT_EQ(ck.find("model.layers.2.mlp.gate.e_score_correction_bias")->dtype, DType::F32);
  EXPECT_EQ(ck.find("model.layers.0.mlp.gate_proj.weight")->shape, (Shape{384, 256}));
  EXPECT_NE(ck.find("model.layers.3.eh_proj.weight"), nullptr);  // MTP layer
  EXPECT_EQ(ck.find("model.layers.0.mlp.gate.weight"), nullptr); // layer 0 is dense
}

TEST(Checkpoint, RealV32TableHasTheSpecShapes) {
  const ModelConfig c = preset_config("v32-layer");
  std::map<std::string, TensorSpec> t;
  for (auto& s : tensor_table(c, false)) t[s.name] = s;
  EXPECT_EQ(t.at("model.layers.0.self_attn.kv_b_proj.weight").shape, (Shape{32768, 512}));
  EXPECT_EQ(t.at("model.layers.0.self_attn.kv_b_proj.weight").scale_shape(), (Shape{256, 4}));
  EXPECT_EQ(t.at("model.layers.0.self_attn.o_proj.weight").scale_shape(), (Shape{56, 128}));
  EXPECT_EQ(t.at("model.layers.0.self_attn.indexer.wq_b.weight").shape, (Shape{8192, 1536}));
  EXPECT_EQ(t.at("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").scale_shape(), (Shape{5, 56}));
  EXPECT_EQ(t.at("model.layers.1.mlp.experts.255.down_proj.weight").scale_shape(), (Shape{56, 16}));
  EXPECT_EQ(t.at("model.layers.0.mlp.down_proj.weight").scale_shape(), (Shape{56, 144}));
  EXPECT_NEAR(c.softmax_scale(), 0.13523377886, 1e-10);
  const auto f = yarn_inv_freq(c);
  EXPECT_NEAR(f[16], 5.5e-3, 1e-4);
  EXPECT_NEAR(f[23], 3.3338e-5, 1e-8);
  EXPECT_NEAR(f[31], 3.3338e-6, 1e-9);
  EXPECT_FLOAT_EQ(f[10], float(1.0 / std::pow(10000.0, 20.0 / 64)));  // i <= low: unchanged
}

}  // namespace
}  // namespace dsa
