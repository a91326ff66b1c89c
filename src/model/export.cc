// export_checkpoint: every tensor of the table rounded as the trainer's forward uses it, written
// in table order into shards of bounded size.
#include "model/export.h"

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/make_model.h"

namespace dsa {

namespace {

Tensor to_host(Backend& be, const Tensor& t) {
  Tensor h = Tensor::empty(t.dtype, t.shape);
  be.download(t, h.data);
  return h;
}

}  // namespace

ExportInfo export_checkpoint(const Params& params, const std::string& dir, int64_t max_shard_bytes,
                             const std::map<std::string, std::string>& metadata) {
  namespace fs = std::filesystem;
  ModelConfig c = params.config();
  if (!params.has_mtp()) c.num_nextn_predict_layers = 0;
  std::error_code ec;
  fs::create_directories(dir, ec);
  DSA_CHECK(!ec, "cannot create directory {}: {}", dir, ec.message());
  for (const auto& e : fs::directory_iterator(dir))  // a previous export's shards would be stale
    if (e.path().extension() == ".safetensors") fs::remove(e.path(), ec);
  fs::remove(dir + "/model.safetensors.index.json", ec);
  write_model_config(dir, c);
  Backend& be = params.backend();
  // Tensors in table order: (name, host tensor) pairs, one shard at a time.
  std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
  std::vector<int64_t> shard_bytes(1, 0);
  auto add = [&](const std::string& name, Tensor t) {
    const int64_t b = int64_t(t.nbytes());
    if (max_shard_bytes > 0 && shard_bytes.back() > 0 && shard_bytes.back() + b > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes.push_back(0);
    }
    shards.back().emplace_back(name, std::move(t));
    shard_bytes.back() += b;
  };
  for (const TensorSpec& s : tensor_table(c, params.has_mtp())) {
    if (is_shared_mtp_tensor(c, s.name)) {
      const bool head = s.name.find("shared_head.head") != std::string::npos;
      add(s.name, to_host(be, params.stored(params.at(head ? "lm_head.weight" : "model.embed_tokens.weight")).t));
      continue;
    }
    Params::Stored st = params.stored(params.at(s.name));
    add(s.name, to_host(be, st.t));
    if (st.scale.data) add(s.scale_name(), to_host(be, st.scale));
  }
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "pt";
  ExportInfo info;
  info.shards = int(shards.size());
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file = shards.size() == 1 ? "model.safetensors"
                                                : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    write_safetensors(dir + "/" + file, shards[i], meta);
    for (auto& [n, t] : shards[i]) weight_map[n] = file;
    info.bytes += shard_bytes[i];
  }
  if (shards.size() > 1) {
    std::ofstream f(dir + "/model.safetensors.index.json");
    f << nlohmann::json{{"metadata", {{"total_size", info.bytes}}}, {"weight_map", weight_map}}.dump(2) << "\n";
    DSA_CHECK(f.good(), "cannot write {}/model.safetensors.index.json", dir);
  }
  return info;
}

}  // namespace dsa
