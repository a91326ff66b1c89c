// Batching and chunking invariance on every backend (issue 19, class 8): a row's result never
// depends on the other rows of a call, so 1..64 concurrent seeded requests, any prefill chunking
// (every row tile of the FP8 GEMM: 4/2/1-row passes, 1..n rows per expert) and prefix-cache hits
// give exactly the tokens of each request alone.
#include <gtest/gtest.h>

#include <future>
#include <memory>

#include "ops/backends.h"
#include "runtime/engine.h"
#include "runtime/session.h"
#include "test_util.h"
#ifdef DSA_BATCHING_CUDA  // batching_cuda_test (tests/CMakeLists.txt, label cuda): the same on the GPU
#include "ops/cuda/cuda_ops.h"
#endif

namespace dsa {
namespace {

class Batching : public testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<Model> load() {
#ifdef DSA_BATCHING_CUDA
    ops::cuda::register_cuda_backend();
#endif
    return Model::load(test::tiny_model_dir(), ops::select_backend(GetParam()), [](const std::string&) {});
  }
};

std::vector<int32_t> prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(int32_t((uint64_t(i) * 2654435761u + uint64_t(salt) * 7919u) % 1000));
  return p;
}

std::future<std::vector<int32_t>> submit(Engine& e, std::vector<int32_t> p, int64_t max_tokens, uint64_t seed) {
  auto toks = std::make_shared<std::vector<int32_t>>();
  auto prom = std::make_shared<std::promise<std::vector<int32_t>>>();
  GenRequest r;
  r.prompt = std::move(p);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.9f;
  r.sampling.top_p = 0.95f;
  r.sampling.seed = seed;
  r.on_token = [toks](int32_t t) {
    toks->push_back(t);
    return true;
  };
  r.on_done = [toks, prom](const GenResult& g) {
    if (g.reason == FinishReason::kError) toks->assign(1, -1000);  // never equal to real tokens
    prom->set_value(*toks);
  };
  e.submit(std::move(r));
  return prom->get_future();
}

EngineOptions options(int64_t max_batch, int64_t chunk, int64_t cache) {
  EngineOptions o;
  o.page_size = 16;
  o.kv_pages = 1024;
  o.max_batch = max_batch;
  o.prefill_chunk = chunk;
  o.prefix_cache_entries = cache;
  return o;
}

// Lengths 3..83 so that prefill pieces, decode batches and per-expert row counts take every
// value the kernels tile on.
int length_of(int i) { return 3 + (i * 37) % 81; }

TEST_P(Batching, ConcurrentSeededRequestsEqualEachAlone) {
  auto m = load();
  // The scalar reference is ~100x slower: fewer sizes there (its kernels have no tiling anyway).
  const bool slow = GetParam() == "ref";
  const int kMax = slow ? 17 : 64, kTokens = 5;
  std::vector<std::vector<int32_t>> solo(kMax);
  {
    Engine e(*m, options(1, 256, 0));
    for (int i = 0; i < kMax; ++i) {
      solo[size_t(i)] = submit(e, prompt(length_of(i), i), kTokens, 1000 + i).get();
      ASSERT_EQ(solo[size_t(i)].size(), size_t(kTokens)) << "request " << i << " alone";
    }
  }
  for (int n : {2, 3, 5, 8, 13, 16, 17, 31, 33, 64}) {
    if (n > kMax) break;
    Engine e(*m, options(64, 7 + n % 5, 0));  // small chunks: prefill pieces interleave with decode
    std::vector<std::future<std::vector<int32_t>>> fs;
    for (int i = 0; i < n; ++i) fs.push_back(submit(e, prompt(length_of(i), i), kTokens, 1000 + i));
    int differ = 0;
    for (int i = 0; i < n; ++i) {
      const auto got = fs[size_t(i)].get();
      differ += got != solo[size_t(i)];
      EXPECT_EQ(got, solo[size_t(i)]) << GetParam() << ": " << n << " concurrent, request " << i;
    }
    ASSERT_EQ(differ, 0) << n << " concurrent requests";
  }
}

TEST_P(Batching, PrefixCacheHitGivesTheSameTokens) {
  auto m = load();
  const std::vector<int32_t> base = prompt(150, 5);
  std::vector<int32_t> other = base;
  other.resize(120);
  for (int i = 0; i < 20; ++i) other.push_back(int32_t(500 + i));
  std::vector<int32_t> want_base, want_other;
  {
    Engine e(*m, options(4, 256, 0));
    want_base = submit(e, base, 6, 1).get();
    want_other = submit(e, other, 6, 2).get();
  }
  Engine e(*m, options(4, 256, 8));
  EXPECT_EQ(submit(e, base, 6, 1).get(), want_base);
  EXPECT_EQ(submit(e, other, 6, 2).get(), want_other);  // reuses 7 cached pages of base
  EXPECT_GE(e.metrics().prefix_cache_hits, 1u);
  // A long prompt, then a shorter different one of >= 64 tokens (the cache once read past it).
  EXPECT_EQ(submit(e, prompt(64, 9), 3, 3).get().size(), 3u);
}

TEST_P(Batching, AnyPrefillChunkingEqualsOnePiece) {
  auto m = load();
  const int P = GetParam() == "ref" ? 90 : 300;
  const std::vector<int32_t> p = prompt(P, 11);
  const int64_t V = m->config().vocab_size;
  auto run = [&](int64_t chunk) {
    Session s(*m);
    GenerateOptions go;
    go.prefill_chunk = chunk;
    go.max_new_tokens = 4;
    go.sampling.temperature = 0;
    return s.generate(p, go, nullptr, nullptr);
  };
  // Also the logits themselves, bit for bit, after the whole prompt.
  auto last_logits = [&](int64_t chunk) {
    SequenceState st = m->new_sequence();
    std::vector<float> l;
    for (int64_t i = 0; i < P;) {
      const int64_t n = prefill_piece(P - i, chunk);
      l = m->forward(st, std::vector<int32_t>(p.begin() + i, p.begin() + i + n));
      i += n;
    }
    return std::vector<float>(l.end() - V, l.end());
  };
  const auto want = run(0);
  const auto want_logits = last_logits(0);
  for (int64_t chunk : {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 64, 89, 128, 255, 256, 299}) {
    if (chunk >= P) continue;
    if (GetParam() == "ref" && chunk != 1 && chunk != 2 && chunk != 3 && chunk != 16 && chunk != 17 && chunk != 89)
      continue;  // the scalar reference: a few sizes (its kernels do not tile)
    EXPECT_EQ(run(chunk), want) << GetParam() << ": chunk " << chunk;
    const auto l = last_logits(chunk);
    ASSERT_EQ(0, std::memcmp(l.data(), want_logits.data(), l.size() * sizeof(float)))
        << GetParam() << ": logits differ with chunk " << chunk;
  }
}

#ifdef DSA_BATCHING_CUDA
INSTANTIATE_TEST_SUITE_P(Cuda, Batching, testing::Values("cuda"),
                         [](const testing::TestParamInfo<std::string>& i) { return i.param; });
#else
INSTANTIATE_TEST_SUITE_P(HostBackends, Batching, testing::Values("ref", "cpu"),
                         [](const testing::TestParamInfo<std::string>& i) { return i.param; });
#endif

TEST(PrefillPiece, NeverLeavesOrTakesASingleToken) {
  EXPECT_EQ(prefill_piece(10, 0), 10);
  EXPECT_EQ(prefill_piece(10, 20), 10);
  EXPECT_EQ(prefill_piece(10, 4), 4);
  EXPECT_EQ(prefill_piece(5, 4), 3);   // 4 would leave 1
  EXPECT_EQ(prefill_piece(3, 2), 3);   // 2 would leave 1
  EXPECT_EQ(prefill_piece(10, 1), 2);  // a 1-token piece is the decode path
  EXPECT_EQ(prefill_piece(1, 1), 1);   // a 1-token prompt is one piece anyway
  for (int64_t P = 1; P < 40; ++P)
    for (int64_t c = 0; c < 12; ++c) {
      int64_t left = P, pieces = 0;
      while (left > 0) {
        const int64_t n = prefill_piece(left, c);
        ASSERT_GE(n, std::min<int64_t>(2, P)) << P << " " << c;
        left -= n;
        ++pieces;
      }
      ASSERT_EQ(left, 0);
      ASSERT_LE(pieces, P);
    }
}

}  // namespace
}  // namespace dsa
