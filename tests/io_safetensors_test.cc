// Tests of the safetensors reader/writer: bit-exact round trips, sharded checkpoints, and one
// hand-crafted malformed file per validation rule (each must give a dsa::Error naming the problem).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>

#include "base/error.h"
#include "io/safetensors.h"

namespace dsa {
namespace {

namespace fs = std::filesystem;

// A fresh empty directory per test.
std::string temp_dir() {
  const auto* info = testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir = fs::path(testing::TempDir()) /
                 (std::string("dsa_io_") + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" +
                  info->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Writes an 8-byte little-endian header length, the header text, then `data`.
void write_raw(const std::string& path, const std::string& header, const std::string& data = "",
               uint64_t len_override = UINT64_MAX) {
  const uint64_t len = len_override == UINT64_MAX ? header.size() : len_override;
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(char(uint8_t(len >> (8 * i))));
  out << header << data;
  ASSERT_TRUE(out.good());
}

// Runs `fn`, expects a dsa::Error, and checks that its message contains every needle.
template <class Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected dsa::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

// A one-tensor header for "w" (F32 [2]) with the given entry text.
std::string header_with(const std::string& entry) { return "{\"w\":" + entry + "}"; }

void expect_bad_file(const std::string& header, const std::string& data,
                     std::initializer_list<std::string> needles) {
  const std::string path = temp_dir() + "/bad.safetensors";
  write_raw(path, header, data);
  expect_error([&] { SafetensorsFile::open(path); }, needles);
  expect_error([&] { Checkpoint::open(path); }, needles);
}

Tensor random_tensor(DType dt, Shape shape, std::mt19937& rng) {
  Tensor t = Tensor::empty(dt, std::move(shape));
  auto* p = t.ptr<uint8_t>();
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t(rng());
  return t;
}

bool same_bytes(const void* a, const void* b, size_t n) { return n == 0 || std::memcmp(a, b, n) == 0; }

// ---- round trips -----------------------------------------------------------------------------

TEST(Safetensors, RoundTripAllDtypesBitExact) {
  const std::string path = temp_dir() + "/all.safetensors";
  std::mt19937 rng(1234);
  std::vector<std::pair<std::string, Tensor>> ts = {
      {"f32", random_tensor(DType::F32, {3, 5}, rng)},  // random bits incl. NaN payloads
      {"bf16", random_tensor(DType::BF16, {7}, rng)},
      {"f16", random_tensor(DType::F16, {2, 3, 1}, rng)},
      {"layers.0.fp8", random_tensor(DType::F8_E4M3, {4, 9}, rng)},
      {"i32", random_tensor(DType::I32, {6}, rng)},
      {"i64", random_tensor(DType::I64, {1, 3}, rng)},
      {"u8", random_tensor(DType::U8, {13}, rng)},
      {"scalar", random_tensor(DType::F32, {}, rng)},
      {"empty", Tensor::empty(DType::BF16, {0, 4})},
  };
  write_safetensors(path, ts, {{"format", "pt"}, {"note", "héllo"}});
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));

  // Header length is a multiple of 8 and offsets are contiguous in the given order.
  std::ifstream in(path, std::ios::binary);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | len[i];
  EXPECT_EQ(hlen % 8, 0u);
  size_t total = 0;
  for (auto& [n, t] : ts) total += t.nbytes();
  EXPECT_EQ(fs::file_size(path), 8 + hlen + total);

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "héllo");
  ASSERT_EQ(f->tensors().size(), ts.size());
  const uint8_t* prev_end = nullptr;
  for (auto& [name, t] : ts) {
    const TensorEntry& e = f->tensors().at(name);
    EXPECT_EQ(e.name, name);
    EXPECT_EQ(e.file, path);
    EXPECT_EQ(e.dtype, t.dtype) << name;
    EXPECT_EQ(e.shape, t.shape) << name;
    ASSERT_EQ(e.nbytes, t.nbytes()) << name;
    EXPECT_TRUE(same_bytes(e.data, t.data, e.nbytes)) << name;
    if (prev_end) {
      EXPECT_EQ(e.data, prev_end) << name;
    }
    prev_end = e.data + e.nbytes;
  }

  // The Tensor from Checkpoint::get outlives the checkpoint.
  Tensor kept;
  {
    Checkpoint ck = Checkpoint::open(path);
    EXPECT_EQ(ck.tensors().size(), ts.size());
    EXPECT_EQ(ck.find("nope"), nullptr);
    ASSERT_NE(ck.find("bf16"), nullptr);
    kept = ck.get("layers.0.fp8");
    expect_error([&] { ck.get("missing.weight"); }, {"missing.weight", "not found"});
  }
  f.reset();
  EXPECT_EQ(kept.dtype, DType::F8_E4M3);
  EXPECT_EQ(kept.shape, (Shape{4, 9}));
  EXPECT_TRUE(same_bytes(kept.data, ts[3].second.data, kept.nbytes()));
}

TEST(Safetensors, WriteOverwritesAndEmptyFile) {
  const std::string path = temp_dir() + "/x.safetensors";
  std::mt19937 rng(7);
  write_safetensors(path, {{"a", random_tensor(DType::F32, {100}, rng)}});
  write_safetensors(path, {});
  auto f = SafetensorsFile::open(path);
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
}

TEST(Safetensors, WriteErrors) {
  const std::string dir = temp_dir();
  std::mt19937 rng(7);
  Tensor t = random_tensor(DType::F32, {2}, rng);
  expect_error([&] { write_safetensors(dir + "/d.safetensors", {{"a", t}, {"a", t}}); },
               {"duplicate", "'a'"});
  expect_error([&] { write_safetensors(dir + "/no/such/dir/x.safetensors", {{"a", t}}); },
               {"no/such/dir"});
  Tensor nodata;
  nodata.shape = {3};
  expect_error([&] { write_safetensors(dir + "/n.safetensors", {{"b", nodata}}); },
               {"'b'", "no data"});
  EXPECT_TRUE(fs::is_empty(dir));  // no temp files left behind
}

TEST(Safetensors, ShardedIndexDirectory) {
  const std::string dir = temp_dir();
  std::mt19937 rng(99);
  std::vector<std::pair<std::string, Tensor>> s1 = {{"embed", random_tensor(DType::BF16, {4, 8}, rng)},
                                                    {"l0.w", random_tensor(DType::F8_E4M3, {8, 8}, rng)}};
  std::vector<std::pair<std::string, Tensor>> s2 = {{"l0.w_scale", random_tensor(DType::F32, {1, 1}, rng)},
                                                    {"head", random_tensor(DType::BF16, {8, 4}, rng)}};
  write_safetensors(dir + "/model-00001-of-00002.safetensors", s1);
  write_safetensors(dir + "/model-00002-of-00002.safetensors", s2);
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"metadata": {"total_size": 0}, "weight_map": {
            "embed": "model-00001-of-00002.safetensors",
            "l0.w": "model-00001-of-00002.safetensors",
            "l0.w_scale": "model-00002-of-00002.safetensors",
            "head": "model-00002-of-00002.safetensors"}})";
  // A stray file the index does not mention must be ignored.
  write_safetensors(dir + "/extra.safetensors", {{"junk", random_tensor(DType::U8, {3}, rng)}});

  for (const std::string& p : {dir, dir + "/model.safetensors.index.json"}) {
    Checkpoint ck = Checkpoint::open(p);
    ASSERT_EQ(ck.tensors().size(), 4u);
    EXPECT_EQ(ck.find("junk"), nullptr);
    for (auto* shard : {&s1, &s2}) {
      for (auto& [name, t] : *shard) {
        Tensor r = ck.get(name);
        EXPECT_EQ(r.dtype, t.dtype);
        EXPECT_EQ(r.shape, t.shape);
        EXPECT_TRUE(same_bytes(r.data, t.data, t.nbytes())) << name;
      }
    }
    EXPECT_EQ(ck.find("head")->file, dir + "/model-00002-of-00002.safetensors");
  }
}

class ShardErrors : public testing::Test {
 protected:
  void SetUp() override {
    dir = temp_dir();
    std::mt19937 rng(5);
    write_safetensors(dir + "/a.safetensors", {{"x", random_tensor(DType::F32, {2}, rng)}});
    write_safetensors(dir + "/b.safetensors", {{"y", random_tensor(DType::F32, {2}, rng)},
                                                {"z", random_tensor(DType::F32, {2}, rng)}});
  }
  void index(const std::string& weight_map) {
    std::ofstream(dir + "/model.safetensors.index.json") << "{\"weight_map\": " << weight_map << "}";
  }
  std::string dir;
};

TEST_F(ShardErrors, NameMappedToShardThatLacksIt) {
  index(R"({"x":"a.safetensors","y":"b.safetensors","z":"b.safetensors","q":"a.safetensors"})");
  expect_error([&] { Checkpoint::open(dir); }, {"'q'", "a.safetensors", "lacks"});
}

TEST_F(ShardErrors, MappedToWrongShard) {
  index(R"({"x":"b.safetensors","y":"b.safetensors","z":"b.safetensors","w":"a.safetensors"})");
  expect_error([&] { Checkpoint::open(dir); }, {"'x'", "a.safetensors", "b.safetensors"});
}

TEST_F(ShardErrors, ShardTensorNotInMap) {
  index(R"({"x":"a.safetensors","y":"b.safetensors"})");
  expect_error([&] { Checkpoint::open(dir); }, {"'z'", "not listed", "b.safetensors"});
}

TEST_F(ShardErrors, SameNameInTwoShards) {
  std::mt19937 rng(6);
  write_safetensors(dir + "/a.safetensors", {{"x", random_tensor(DType::F32, {2}, rng)},
                                              {"y", random_tensor(DType::F32, {2}, rng)}});
  index(R"({"x":"a.safetensors","y":"b.safetensors","z":"b.safetensors"})");
  expect_error([&] { Checkpoint::open(dir); }, {"'y'", "two files", "a.safetensors", "b.safetensors"});
}

TEST_F(ShardErrors, MissingShardFile) {
  index(R"({"x":"a.safetensors","y":"nope.safetensors"})");
  expect_error([&] { Checkpoint::open(dir); }, {"nope.safetensors"});
}

TEST_F(ShardErrors, BadIndexJson) {
  index(R"({"x": )");
  expect_error([&] { Checkpoint::open(dir); }, {"model.safetensors.index.json", "not valid JSON"});
  std::ofstream(dir + "/model.safetensors.index.json") << R"({"metadata": {}})";
  expect_error([&] { Checkpoint::open(dir); }, {"weight_map"});
}

TEST_F(ShardErrors, PlainDirectoryOfFiles) {
  Checkpoint ck = Checkpoint::open(dir);  // no index, no model.safetensors: all *.safetensors
  EXPECT_EQ(ck.tensors().size(), 3u);
  EXPECT_EQ(ck.find("x")->file, dir + "/a.safetensors");
}

TEST(Safetensors, DirectoryWithSingleModelFile) {
  const std::string dir = temp_dir();
  std::mt19937 rng(8);
  write_safetensors(dir + "/model.safetensors", {{"m", random_tensor(DType::I64, {2}, rng)}});
  write_safetensors(dir + "/other.safetensors", {{"o", random_tensor(DType::I64, {2}, rng)}});
  Checkpoint ck = Checkpoint::open(dir);
  EXPECT_EQ(ck.tensors().size(), 1u);
  EXPECT_NE(ck.find("m"), nullptr);
}

TEST(Safetensors, MissingPathAndEmptyDirectory) {
  const std::string dir = temp_dir();
  expect_error([&] { Checkpoint::open(dir + "/absent"); }, {"absent", "no such file"});
  expect_error([&] { SafetensorsFile::open(dir + "/absent.safetensors"); }, {"absent.safetensors"});
  expect_error([&] { Checkpoint::open(dir); }, {dir, "no model.safetensors"});
}

// ---- malformed files -------------------------------------------------------------------------

TEST(SafetensorsBad, FileShorterThan8Bytes) {
  const std::string path = temp_dir() + "/short.safetensors";
  std::ofstream(path, std::ios::binary) << "abc";
  expect_error([&] { SafetensorsFile::open(path); }, {path, "too short", "3 bytes"});
  std::ofstream(path, std::ios::binary | std::ios::trunc);  // empty file
  expect_error([&] { SafetensorsFile::open(path); }, {path, "too short"});
}

TEST(SafetensorsBad, HeaderLengthPastFileSize) {
  const std::string path = temp_dir() + "/h.safetensors";
  write_raw(path, "{}", "", 4096);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "header length 4096", "truncated"});
}

TEST(SafetensorsBad, HeaderLengthAbsurd) {
  // A sparse file larger than the limit, so only the 100 MB check can fire.
  const std::string path = temp_dir() + "/big.safetensors";
  write_raw(path, "{}", "", 120ull << 20);
  fs::resize_file(path, 150ull << 20);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "header length", "absurd"});
  write_raw(path, "{}", "", 1ull << 62);
  expect_error([&] { SafetensorsFile::open(path); }, {path, "absurd"});
  fs::remove(path);
}

TEST(SafetensorsBad, HeaderNotJson) {
  expect_bad_file("{\"w\": {\"dtype\": ", "", {"bad.safetensors", "not valid JSON"});
  expect_bad_file("\x01\x02\x03\x04", "", {"not valid JSON"});
}

TEST(SafetensorsBad, HeaderNotObject) {
  expect_bad_file("[1, 2, 3]", "", {"bad.safetensors", "must be a JSON object", "array"});
}

TEST(SafetensorsBad, EntryNotObject) {
  expect_bad_file(header_with("17"), "", {"'w'", "must be a JSON object"});
}

TEST(SafetensorsBad, MissingDtype) {
  expect_bad_file(header_with(R"({"shape":[2],"data_offsets":[0,8]})"), std::string(8, '\0'),
                  {"bad.safetensors", "'w'", "missing 'dtype'"});
}

TEST(SafetensorsBad, MissingShape) {
  expect_bad_file(header_with(R"({"dtype":"F32","data_offsets":[0,8]})"), std::string(8, '\0'),
                  {"'w'", "missing 'shape'"});
}

TEST(SafetensorsBad, MissingDataOffsets) {
  expect_bad_file(header_with(R"({"dtype":"F32","shape":[2]})"), std::string(8, '\0'),
                  {"'w'", "missing 'data_offsets'"});
}

TEST(SafetensorsBad, WrongFieldTypes) {
  const std::string d(8, '\0');
  expect_bad_file(header_with(R"({"dtype":5,"shape":[2],"data_offsets":[0,8]})"), d,
                  {"'w'", "'dtype' must be a string"});
  expect_bad_file(header_with(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"), d,
                  {"'w'", "'shape' must be an array"});
  expect_bad_file(header_with(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})"), d,
                  {"'w'", "shape entries must be integers"});
  expect_bad_file(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":"0-8"})"), d,
                  {"'w'", "data_offsets"});
  expect_bad_file(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[0,"8"]})"), d,
                  {"'w'", "data_offsets"});
  expect_bad_file(R"({"__metadata__":{"k":1}})", "", {"__metadata__", "'k'", "string"});
  expect_bad_file(R"({"__metadata__":[1]})", "", {"__metadata__", "object"});
}

TEST(SafetensorsBad, UnknownDtype) {
  expect_bad_file(header_with(R"({"dtype":"F64","shape":[1],"data_offsets":[0,8]})"),
                  std::string(8, '\0'), {"bad.safetensors", "'w'", "dtype 'F64'"});
}

TEST(SafetensorsBad, NegativeDimension) {
  expect_bad_file(header_with(R"({"dtype":"F32","shape":[2,-3],"data_offsets":[0,8]})"),
                  std::string(8, '\0'), {"'w'", "negative dimension -3"});
}

TEST(SafetensorsBad, NumelOverflow) {
  expect_bad_file(
      header_with(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})"),
      std::string(8, '\0'), {"'w'", "overflow"});
  // Fits int64 elements but not bytes.
  expect_bad_file(header_with(R"({"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,8]})"),
                  std::string(8, '\0'), {"'w'", "overflow"});
  expect_bad_file(header_with(R"({"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]})"),
                  std::string(8, '\0'), {"'w'", "too large"});
}

TEST(SafetensorsBad, DataOffsetsNotBeginEnd) {
  const std::string d(8, '\0');
  expect_bad_file(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4,8]})"), d,
                  {"'w'", "[begin, end]"});
  expect_bad_file(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), d,
                  {"'w'", "[begin, end]"});
  expect_bad_file(header_with(R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), d,
                  {"'w'", "begin > end"});
}

TEST(SafetensorsBad, EndPastDataSectionTruncated) {
  // Header says 4 floats, only 12 data bytes present.
  expect_bad_file(header_with(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"),
                  std::string(12, '\0'), {"bad.safetensors", "'w'", "truncated"});
}

TEST(SafetensorsBad, TruncatedWrittenFile) {
  const std::string path = temp_dir() + "/t.safetensors";
  std::mt19937 rng(3);
  write_safetensors(path, {{"a", random_tensor(DType::BF16, {64}, rng)},
                           {"last.weight", random_tensor(DType::BF16, {64}, rng)}});
  fs::resize_file(path, fs::file_size(path) - 1);
  expect_error([&] { Checkpoint::open(path); }, {path, "'last.weight'", "truncated"});
}

TEST(SafetensorsBad, ByteSizeMismatch) {
  expect_bad_file(header_with(R"({"dtype":"BF16","shape":[3],"data_offsets":[0,8]})"),
                  std::string(8, '\0'), {"'w'", "BF16", "size mismatch", "needs 6 bytes"});
}

TEST(SafetensorsBad, OverlappingRanges) {
  expect_bad_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                  std::string(12, '\0'), {"bad.safetensors", "'a'", "'b'", "overlapping"});
  // Zero-size tensors may share an offset with anything.
  const std::string path = temp_dir() + "/ok.safetensors";
  write_raw(path,
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
            std::string(8, '\0'));
  EXPECT_EQ(SafetensorsFile::open(path)->tensors().size(), 2u);
}

TEST(SafetensorsBad, DuplicateNames) {
  expect_bad_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                  std::string(8, '\0'), {"bad.safetensors", "duplicate", "'w'"});
}

// ---- finiteness check ------------------------------------------------------------------------

TEST(Safetensors, CheckFiniteF32) {
  const std::string path = temp_dir() + "/s.safetensors";
  Tensor good = Tensor::zeros(DType::F32, {2, 3});
  Tensor nan = Tensor::zeros(DType::F32, {2, 3});
  nan.ptr<float>()[4] = std::numeric_limits<float>::quiet_NaN();
  Tensor inf = Tensor::zeros(DType::F32, {5});
  inf.ptr<float>()[2] = -std::numeric_limits<float>::infinity();
  write_safetensors(path, {{"good.scale", good}, {"nan.scale", nan}, {"inf.scale", inf},
                           {"bf", Tensor::zeros(DType::BF16, {2})}});
  Checkpoint ck = Checkpoint::open(path);
  check_finite_f32(*ck.find("good.scale"));
  expect_error([&] { check_finite_f32(*ck.find("nan.scale")); },
               {path, "'nan.scale'", "non-finite", "index 4"});
  expect_error([&] { check_finite_f32(*ck.find("inf.scale")); }, {"'inf.scale'", "index 2", "inf"});
  expect_error([&] { check_finite_f32(*ck.find("bf")); }, {"'bf'", "F32", "BF16"});
  check_finite_f32("good", good);
  expect_error([&] { check_finite_f32("t", nan); }, {"'t'", "index 4"});
}

}  // namespace
}  // namespace dsa
