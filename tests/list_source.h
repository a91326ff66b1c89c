// A fixed list of batches behind train::BatchSource, for the trainer tests (kept out of
// test_util.h so that the tests that do not need the trainer do not compile its headers).
#pragma once
#include <string>
#include <vector>

#include "train/trainer.h"

namespace dsa::test {

// A fixed list of batches, cycled; its position is the index (trainer tests).
class ListSource : public train::BatchSource {
 public:
  explicit ListSource(std::vector<TrainBatch> b) : b_(std::move(b)) {}
  TrainBatch next() override { return b_[i_++ % b_.size()]; }
  std::string state() const override { return std::to_string(i_); }
  void restore(const std::string& s) override { i_ = std::stoul(s); }
  void rewind() override { i_ = 0; }

 private:
  std::vector<TrainBatch> b_;
  size_t i_ = 0;
};

}  // namespace dsa::test
