// safetensors reading (mmap, single file or sharded via model.safetensors.index.json) and writing.
// Every malformed input (truncation, bad offsets, overlaps, absurd header, unknown dtype) is a
// dsa::Error naming the file and tensor, never a crash.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/mmap_file.h"
#include "base/tensor.h"

namespace dsa {

struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  const uint8_t* data = nullptr;  // inside the mapping
  size_t nbytes = 0;
  std::string file;               // which file holds it
};

// Largest JSON header accepted (bytes); a larger length field means a corrupt file.
inline constexpr uint64_t kMaxSafetensorsHeader = 100ull << 20;

// One mapped .safetensors file.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  const std::map<std::string, TensorEntry>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  ~SafetensorsFile();

 private:
  SafetensorsFile() = default;
  std::string path_;
  MmapFile map_;
  std::map<std::string, TensorEntry> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory (model.safetensors, or the shards listed in
// model.safetensors.index.json), or of a single .safetensors file path.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& path);
  const TensorEntry* find(const std::string& name) const;
  const std::map<std::string, TensorEntry>& tensors() const { return tensors_; }
  // A Tensor borrowing the mapped bytes (kept alive by the returned Tensor).
  Tensor get(const std::string& name) const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorEntry> tensors_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> owner_of_;
};

// Write tensors (in the given order) to one .safetensors file; metadata goes in "__metadata__".
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Throws a dsa::Error naming the tensor and the first flat index holding NaN or ±inf.
// The tensor must be F32 (e.g. the fp32 block scales of FP8 weights).
void check_finite_f32(const TensorEntry& e);
void check_finite_f32(const std::string& name, const Tensor& t);

}  // namespace dsa
