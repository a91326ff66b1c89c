// safetensors reader (mmap + a fully validated JSON header), checkpoint directories (single file,
// sharded index, or a set of files) and an atomic writer (temp file + rename).
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "base/files.h"
#include "io/json.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxIndexBytes = 256ull << 20;  // the V3.2 index is ~9 MB
constexpr const char* kSupportedDtypes = "F32, BF16, F16, F8_E4M3, I32, I64, U8";

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses a JSON document with the project's one entry point (depth limit, duplicate keys at
// any level refused); the error names the file and what it is.
json parse_json_checked(const std::string& path, const char* what, const char* begin, const char* end) {
  try {
    return parse_json(std::string_view(begin, size_t(end - begin)));
  } catch (const Error& e) {
    DSA_FAIL("{}: {} is not valid JSON: {}", path, what, e.what());
  }
}

// A JSON integer >= 0 that fits int64 (shape dims) or uint64 (offsets).
bool json_nonneg_int(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t s = v.get<int64_t>();
    if (s < 0) return false;
    *out = uint64_t(s);
    return true;
  }
  return false;
}

// Validates one header entry (everything but overlaps, which need all entries).
TensorEntry parse_entry(const std::string& path, const std::string& name, const json& v,
                        const uint8_t* data, uint64_t data_size, uint64_t* begin_out) {
  TensorEntry e;
  e.name = name;
  e.file = path;
  DSA_CHECK(v.is_object(), "{}: tensor '{}': header entry must be a JSON object, got {}", path,
            name, v.type_name());

  auto dt = v.find("dtype");
  DSA_CHECK(dt != v.end(), "{}: tensor '{}': header entry is missing 'dtype'", path, name);
  DSA_CHECK(dt->is_string(), "{}: tensor '{}': 'dtype' must be a string, got {}", path, name,
            dt->type_name());
  const auto& dname = dt->get_ref<const std::string&>();
  DSA_CHECK(dtype_from_name(dname, &e.dtype),
            "{}: tensor '{}': unknown or unsupported dtype '{}' (supported: {})", path, name,
            dname, kSupportedDtypes);

  auto sh = v.find("shape");
  DSA_CHECK(sh != v.end(), "{}: tensor '{}': header entry is missing 'shape'", path, name);
  DSA_CHECK(sh->is_array(), "{}: tensor '{}': 'shape' must be an array, got {}", path, name,
            sh->type_name());
  int64_t numel = 1;
  bool overflow = false;
  for (const json& d : *sh) {
    DSA_CHECK(d.is_number_integer(), "{}: tensor '{}': shape entries must be integers, got {} ({})",
              path, name, json_excerpt(d), d.type_name());
    DSA_CHECK(!d.is_number_unsigned() || d.get<uint64_t>() <= uint64_t(INT64_MAX),
              "{}: tensor '{}': shape dimension {} is too large", path, name, json_excerpt(d));
    const int64_t di = d.get<int64_t>();
    DSA_CHECK(di >= 0, "{}: tensor '{}': negative dimension {} in shape {}", path, name, di,
              json_excerpt(*sh));
    e.shape.push_back(di);
    overflow = overflow || __builtin_mul_overflow(numel, di, &numel);
  }
  uint64_t expect_bytes = 0;
  overflow = overflow || __builtin_mul_overflow(uint64_t(numel), uint64_t(dtype_size(e.dtype)),
                                                &expect_bytes);
  DSA_CHECK(!overflow, "{}: tensor '{}': element count of shape {} overflows", path, name,
            json_excerpt(*sh));

  auto off = v.find("data_offsets");
  DSA_CHECK(off != v.end(), "{}: tensor '{}': header entry is missing 'data_offsets'", path, name);
  uint64_t begin = 0, end = 0;
  DSA_CHECK(off->is_array() && off->size() == 2 && json_nonneg_int((*off)[0], &begin) &&
                json_nonneg_int((*off)[1], &end),
            "{}: tensor '{}': 'data_offsets' must be [begin, end] with non-negative integers, "
            "got {}",
            path, name, json_excerpt(*off));
  DSA_CHECK(begin <= end, "{}: tensor '{}': data_offsets [{}, {}] have begin > end", path, name,
            begin, end);
  DSA_CHECK(end - begin == expect_bytes,
            "{}: tensor '{}': data_offsets [{}, {}] span {} bytes but {} {} needs {} bytes "
            "(byte size mismatch)",
            path, name, begin, end, end - begin, dname, json_excerpt(*sh), expect_bytes);
  DSA_CHECK(end <= data_size,
            "{}: tensor '{}': data_offsets end {} is past the end of the data section ({} bytes); "
            "file truncated?",
            path, name, end, data_size);

  e.data = data + begin;
  e.nbytes = size_t(expect_bytes);
  *begin_out = begin;
  return e;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void write_all(int fd, const std::string& path, const void* buf, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    const size_t chunk = std::min<size_t>(n, size_t(1) << 30);
    const ssize_t w = ::write(fd, p, chunk);
    if (w < 0 && errno == EINTR) continue;
    DSA_CHECK(w >= 0, "{}: write failed: {}", path, std::strerror(errno));
    DSA_CHECK(w > 0, "{}: write returned 0 bytes", path);
    p += w;
    n -= size_t(w);
  }
}

// Closes and deletes a temp file unless it was committed (renamed into place).
struct TempFile {
  std::string path;
  int fd = -1;
  bool committed = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!committed) ::unlink(path.c_str());
  }
};

// A shard named by an index must be a .safetensors file inside the index's directory: a relative
// path without "..", so an index cannot make us open (or quote) files elsewhere.
void check_shard_name(const std::string& index_path, const std::string& tensor, const std::string& shard) {
  const std::string shown = shard.size() > 80 ? shard.substr(0, 80) + "..." : shard;
  const fs::path p(shard);
  bool inside = p.is_relative() && !p.has_root_name() && !p.has_root_directory();
  for (const auto& part : p) inside = inside && part != "..";
  DSA_CHECK(inside, "{}: weight_map value '{}' for tensor '{}' leaves the model directory (shards must be "
            "relative paths without '..')", index_path, shown, tensor);
  DSA_CHECK(ends_with(shard, ".safetensors"), "{}: weight_map value '{}' for tensor '{}' is not a .safetensors file",
            index_path, shown, tensor);
}

}  // namespace

// ---- SafetensorsFile -------------------------------------------------------------------------

SafetensorsFile::~SafetensorsFile() = default;

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = MmapFile::open(path);
  const uint8_t* base = f->map_.data();
  const uint64_t size = f->map_.size();

  DSA_CHECK(size >= 8,
            "{}: file is {} bytes, too short for the 8-byte header length (truncated or not a "
            "safetensors file)",
            path, size);
  const uint64_t hlen = read_le64(base);
  DSA_CHECK(hlen <= kMaxSafetensorsHeader,
            "{}: header length {} is absurd (limit {} bytes); corrupt or not a safetensors file",
            path, hlen, kMaxSafetensorsHeader);
  DSA_CHECK(hlen <= size - 8,
            "{}: header length {} exceeds the {} bytes after the length field; file truncated?",
            path, hlen, size - 8);

  const char* htext = reinterpret_cast<const char*>(base + 8);
  const json header = parse_json_checked(path, "safetensors header", htext, htext + hlen);
  DSA_CHECK(header.is_object(), "{}: header must be a JSON object, got {}", path,
            header.type_name());

  const uint8_t* data = base + 8 + hlen;
  const uint64_t data_size = size - 8 - hlen;
  std::vector<std::tuple<uint64_t, uint64_t, const std::string*>> ranges;  // begin, end, name
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      DSA_CHECK(it->is_object(), "{}: __metadata__ must be an object of strings, got {}", path,
                it->type_name());
      for (auto m = it->begin(); m != it->end(); ++m) {
        DSA_CHECK(m->is_string(), "{}: __metadata__ value for '{}' must be a string, got {}",
                  path, m.key(), m->type_name());
        f->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    DSA_CHECK(!name.empty(), "{}: empty tensor name in header", path);
    uint64_t begin = 0;
    TensorEntry e = parse_entry(path, name, *it, data, data_size, &begin);
    auto [pos, inserted] = f->tensors_.emplace(name, std::move(e));
    DSA_CHECK(inserted, "{}: duplicate tensor name '{}'", path, name);
    if (pos->second.nbytes > 0) ranges.emplace_back(begin, begin + pos->second.nbytes, &pos->first);
  }

  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& [b0, e0, n0] = ranges[i - 1];
    const auto& [b1, e1, n1] = ranges[i];
    DSA_CHECK(b1 >= e0,
              "{}: tensors '{}' [{}, {}) and '{}' [{}, {}) have overlapping data ranges", path,
              *n0, b0, e0, *n1, b1, e1);
  }
  return f;
}

// ---- Checkpoint ------------------------------------------------------------------------------

Checkpoint Checkpoint::open(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  DSA_CHECK(!ec && fs::exists(st), "{}: no such file or directory", path);

  Checkpoint c;
  // Adds every tensor of `f`; the same name in two files is an error naming both.
  auto add_file = [&c](std::shared_ptr<SafetensorsFile> f) {
    for (const auto& [name, e] : f->tensors()) {
      auto [pos, inserted] = c.tensors_.emplace(name, e);
      DSA_CHECK(inserted, "tensor '{}' appears in two files: {} and {}", name, pos->second.file,
                f->path());
    }
    c.owner_of_[f->path()] = f;
    c.files_.push_back(std::move(f));
  };

  // model.safetensors.index.json: weight_map name -> shard file (relative to the index's dir).
  auto load_index = [&](const std::string& index_path) {
    const std::string text = read_text_file(index_path, kMaxIndexBytes, "index");
    const json j = parse_json_checked(index_path, "index", text.data(), text.data() + text.size());
    DSA_CHECK(j.is_object(), "{}: index must be a JSON object, got {}", index_path, j.type_name());
    auto wm = j.find("weight_map");
    DSA_CHECK(wm != j.end() && wm->is_object(), "{}: index has no 'weight_map' object",
              index_path);
    DSA_CHECK(!wm->empty(), "{}: index 'weight_map' is empty", index_path);
    const fs::path dir = fs::path(index_path).parent_path();
    std::map<std::string, std::string> shard_of;   // tensor -> shard name as written
    std::map<std::string, std::string> shard_path; // shard name -> full path
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      DSA_CHECK(it->is_string() && !it->get_ref<const std::string&>().empty(),
                "{}: weight_map value for tensor '{}' must be a shard file name, got {}",
                index_path, it.key(), json_excerpt(*it));
      const std::string& shard = it->get_ref<const std::string&>();
      check_shard_name(index_path, it.key(), shard);
      shard_of[it.key()] = shard;
      shard_path.emplace(shard, (dir / shard).string());
    }
    std::map<std::string, std::string> shard_name_of_path;
    for (const auto& [shard, full] : shard_path) {
      add_file(SafetensorsFile::open(full));  // each shard opened once
      shard_name_of_path[full] = shard;
    }
    for (const auto& [name, e] : c.tensors_) {
      const std::string& in_shard = shard_name_of_path.at(e.file);
      auto m = shard_of.find(name);
      DSA_CHECK(m != shard_of.end(), "{}: tensor '{}' is not listed in the weight_map of {}",
                e.file, name, index_path);
      DSA_CHECK(m->second == in_shard,
                "{}: tensor '{}' is mapped to shard '{}' but found in shard '{}'", index_path,
                name, m->second, in_shard);
    }
    for (const auto& [name, shard] : shard_of)
      DSA_CHECK(c.tensors_.count(name), "{}: weight_map maps tensor '{}' to shard '{}' but {} lacks it",
                index_path, name, shard, shard_path.at(shard));
  };

  if (fs::is_regular_file(st)) {
    if (ends_with(path, ".index.json")) {
      load_index(path);
    } else {
      add_file(SafetensorsFile::open(path));
    }
    return c;
  }
  DSA_CHECK(fs::is_directory(st), "{}: neither a regular file nor a directory", path);

  const fs::path dir(path);
  const fs::path index = dir / "model.safetensors.index.json";
  const fs::path single = dir / "model.safetensors";
  if (fs::is_regular_file(index, ec)) {
    load_index(index.string());
    return c;
  }
  if (fs::is_regular_file(single, ec)) {
    add_file(SafetensorsFile::open(single.string()));
    return c;
  }
  std::vector<std::string> found;
  fs::directory_iterator it(dir, ec);
  DSA_CHECK(!ec, "{}: cannot list directory: {}", path, ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    DSA_CHECK(!ec, "{}: cannot list directory: {}", path, ec.message());
    const fs::path& p = it->path();
    if (p.extension() == ".safetensors" && fs::is_regular_file(p, ec)) found.push_back(p.string());
  }
  DSA_CHECK(!ec, "{}: cannot list directory: {}", path, ec.message());
  DSA_CHECK(!found.empty(),
            "{}: no model.safetensors.index.json, model.safetensors or *.safetensors files in "
            "directory",
            path);
  std::sort(found.begin(), found.end());
  for (const auto& f : found) add_file(SafetensorsFile::open(f));
  return c;
}

const TensorEntry* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Tensor Checkpoint::get(const std::string& name) const {
  const TensorEntry* e = find(name);
  DSA_CHECK(e != nullptr, "tensor '{}' not found in checkpoint ({} tensors in {} file(s){}{})",
            name, tensors_.size(), files_.size(), files_.empty() ? "" : ", first ",
            files_.empty() ? "" : files_.front()->path());
  return Tensor::view(e->dtype, e->shape, e->data,
                      std::static_pointer_cast<void>(owner_of_.at(e->file)));
}

// ---- writer ----------------------------------------------------------------------------------

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = header["__metadata__"];
    m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    DSA_CHECK(!name.empty() && name != "__metadata__", "{}: invalid tensor name '{}'", path, name);
    DSA_CHECK(names.insert(name).second, "{}: duplicate tensor name '{}'", path, name);
    for (int64_t d : t.shape)
      DSA_CHECK(d >= 0, "{}: tensor '{}' has negative dimension in shape {}", path, name,
                shape_str(t.shape));
    const uint64_t nb = t.nbytes();
    DSA_CHECK(nb == 0 || t.data != nullptr, "{}: tensor '{}' has no data", path, name);
    nlohmann::ordered_json e;
    e["dtype"] = dtype_name(t.dtype);
    e["shape"] = t.shape;
    e["data_offsets"] = {offset, offset + nb};
    header[name] = std::move(e);
    offset += nb;
  }
  std::string htext;
  try {
    htext = header.dump();
  } catch (const nlohmann::json::exception& e) {
    DSA_FAIL("{}: cannot encode header: {}", path, e.what());
  }
  htext.append((8 - htext.size() % 8) % 8, ' ');  // data section starts 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(htext.size()) >> (8 * i));

  TempFile tmp;
  tmp.path = fmt::format("{}.tmp.{}", path, ::getpid());
  do {
    tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  } while (tmp.fd < 0 && errno == EINTR);
  if (tmp.fd < 0) {
    const int err = errno;
    tmp.committed = true;  // nothing was created
    DSA_FAIL("{}: cannot create {}: {}", path, tmp.path, std::strerror(err));
  }
  write_all(tmp.fd, tmp.path, len, sizeof(len));
  write_all(tmp.fd, tmp.path, htext.data(), htext.size());
  for (const auto& [name, t] : tensors)
    if (t.nbytes() > 0) write_all(tmp.fd, tmp.path, t.data, t.nbytes());
  DSA_CHECK(::fsync(tmp.fd) == 0, "{}: fsync failed: {}", tmp.path, std::strerror(errno));
  const int fd = tmp.fd;
  tmp.fd = -1;
  DSA_CHECK(::close(fd) == 0, "{}: close failed: {}", tmp.path, std::strerror(errno));
  DSA_CHECK(::rename(tmp.path.c_str(), path.c_str()) == 0, "cannot rename {} to {}: {}", tmp.path,
            path, std::strerror(errno));
  tmp.committed = true;
}

// ---- checks ----------------------------------------------------------------------------------

namespace {
void check_finite_bytes(const std::string& where, const std::string& name, const Shape& shape,
                        const uint8_t* data, size_t nbytes) {
  const size_t n = nbytes / sizeof(float);
  for (size_t i = 0; i < n; ++i) {
    float v;
    std::memcpy(&v, data + i * sizeof(float), sizeof(float));
    if (!std::isfinite(v))
      DSA_FAIL("{}tensor '{}' {}: non-finite value {} at flat index {}", where, name,
               shape_str(shape), v, i);
  }
}
}  // namespace

void check_finite_f32(const TensorEntry& e) {
  DSA_CHECK(e.dtype == DType::F32, "{}: tensor '{}': finiteness check needs F32, got {}", e.file,
            e.name, dtype_name(e.dtype));
  check_finite_bytes(e.file.empty() ? "" : e.file + ": ", e.name, e.shape, e.data, e.nbytes);
}

void check_finite_f32(const std::string& name, const Tensor& t) {
  DSA_CHECK(t.dtype == DType::F32, "tensor '{}': finiteness check needs F32, got {}", name,
            dtype_name(t.dtype));
  check_finite_bytes("", name, t.shape, static_cast<const uint8_t*>(t.data), t.nbytes());
}

}  // namespace dsa
