// Trainer checkpoint save / load (train/checkpoint.h).
#include "train/checkpoint.h"

#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include "io/safetensors.h"

namespace dsa::train {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kShardBytes = 16ll << 20;
constexpr const char* kPrefix = "step-";

std::vector<std::pair<std::string, Tensor*>> all_tensors(Params& params, AdamW& opt) {
  std::vector<std::pair<std::string, Tensor*>> t;
  for (Param& p : params.all()) t.emplace_back("master." + p.spec.name, &p.master);
  for (auto& s : opt.state()) t.push_back(s);
  return t;
}

}  // namespace

std::string save_checkpoint(const std::string& out_dir, const CheckpointMeta& meta, Params& params, AdamW& opt,
                            int64_t keep) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  const std::string name = fmt::format("{}{:07d}", kPrefix, meta.step);
  const fs::path tmp = root / (".tmp-" + name), final_dir = root / name;
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  DSA_CHECK(!ec, "cannot create {}: {}", tmp.string(), ec.message());
  Backend& be = params.backend();
  std::vector<std::pair<std::string, Tensor>> shard;
  int64_t bytes = 0;
  int files = 0;
  auto flush = [&] {
    if (shard.empty()) return;
    write_safetensors((tmp / fmt::format("state-{:05d}.safetensors", files++)).string(), shard);
    shard.clear();
    bytes = 0;
  };
  for (auto& [n, t] : all_tensors(params, opt)) {
    Tensor h = Tensor::empty(DType::F32, t->shape);
    be.download(*t, h.data);
    if (bytes > 0 && bytes + int64_t(h.nbytes()) > kShardBytes) flush();
    bytes += int64_t(h.nbytes());
    shard.emplace_back(n, std::move(h));
  }
  flush();
  {
    nlohmann::json j{{"step", meta.step}, {"data_state", meta.data_state}, {"extra", meta.extra}, {"files", files}};
    std::ofstream f(tmp / "trainer.json");
    f << j.dump(2) << "\n";
    DSA_CHECK(f.good(), "cannot write {}/trainer.json", tmp.string());
  }
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  DSA_CHECK(!ec, "cannot move {} to {}: {}", tmp.string(), final_dir.string(), ec.message());
  // Keep the newest `keep`.
  std::vector<fs::path> done;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().rfind(kPrefix, 0) == 0) done.push_back(e.path());
  std::sort(done.begin(), done.end());
  for (size_t i = 0; i + size_t(keep) < done.size(); ++i) fs::remove_all(done[i], ec);
  return final_dir.string();
}

std::string latest_checkpoint(const std::string& out_dir) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return "";
  std::string best;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind(kPrefix, 0) == 0 && fs::exists(e.path() / "trainer.json") && n > best) best = n;
  }
  return best.empty() ? "" : (root / best).string();
}

CheckpointMeta load_checkpoint(const std::string& ckpt_dir, Params& params, AdamW& opt) {
  nlohmann::json j;
  {
    std::ifstream f(fs::path(ckpt_dir) / "trainer.json");
    DSA_CHECK(f.good(), "checkpoint {}: no trainer.json", ckpt_dir);
    try {
      j = nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {
      DSA_FAIL("checkpoint {}: trainer.json is not valid JSON ({})", ckpt_dir, e.what());
    }
  }
  CheckpointMeta meta;
  try {
    meta.step = j.at("step").get<int64_t>();
    meta.data_state = j.at("data_state").get<std::string>();
    meta.extra = j.at("extra");
  } catch (const nlohmann::json::exception& e) {
    DSA_FAIL("checkpoint {}: trainer.json lacks a field ({})", ckpt_dir, e.what());
  }
  std::map<std::string, Tensor> found;
  std::vector<Checkpoint> files;
  for (const auto& e : fs::directory_iterator(ckpt_dir))
    if (e.path().extension() == ".safetensors") {
      files.push_back(Checkpoint::open(e.path().string()));
      for (auto& [n, te] : files.back().tensors()) found[n] = files.back().get(n);
    }
  Backend& be = params.backend();
  for (auto& [n, t] : all_tensors(params, opt)) {
    auto it = found.find(n);
    DSA_CHECK(it != found.end(), "checkpoint {}: tensor {} is missing (other model or optimiser settings?)", ckpt_dir, n);
    DSA_CHECK(it->second.dtype == DType::F32 && it->second.shape == t->shape, "checkpoint {}: tensor {} is {} {}, expected F32 {}",
              ckpt_dir, n, dtype_name(it->second.dtype), shape_str(it->second.shape), shape_str(t->shape));
    be.ops().mem.copy(t->data, it->second.data, t->nbytes(), ops::CopyKind::kHostToDevice);
  }
  be.ops().mem.sync();
  return meta;
}

}  // namespace dsa::train
