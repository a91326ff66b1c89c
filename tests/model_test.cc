// Whole-model behaviour on the tiny preset: chunked prefill, decode vs prefill, sparsity (NaN
// poisoning of unselected cache rows), determinism, bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "runtime/session.h"
#include "test_util.h"

namespace dsa {
namespace {

std::unique_ptr<Model> tiny() {
  return Model::load(test::tiny_model_dir(), ops::ref_ops(), [](const std::string&) {});
}

std::vector<int32_t> prompt(int n, int vocab, int salt = 7) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(int32_t((uint64_t(i) * 2654435761u + salt) % vocab));
  return p;
}

// Rows [first, first+n) of each layer's decisions.
Decisions slice(const Decisions& d, const ModelConfig& c, int64_t first, int64_t n) {
  Decisions r;
  for (auto& l : d.layers) {
    LayerDecisions x;
    const int64_t K = c.index_topk, E = c.num_experts_per_tok;
    x.topk.assign(l.topk.begin() + first * K, l.topk.begin() + (first + n) * K);
    if (!l.experts.empty()) x.experts.assign(l.experts.begin() + first * E, l.experts.begin() + (first + n) * E);
    r.layers.push_back(std::move(x));
  }
  return r;
}

TEST(Model, ChunkedPrefillWithoutDecodeStepIsBitIdentical) {
  auto m = tiny();
  const auto p = prompt(120, int(m->config().vocab_size), 3);
  ForwardOptions fo;
  fo.all_logits = true;
  auto st1 = m->new_sequence();
  const auto one = m->forward(st1, p, fo);
  auto st2 = m->new_sequence();
  std::vector<float> chunked;
  for (int s = 0; s < 120; s += 37) {
    std::vector<int32_t> piece(p.begin() + s, p.begin() + std::min(120, s + 37));
    auto l = m->forward(st2, piece, fo);
    chunked.insert(chunked.end(), l.begin(), l.end());
  }
  ASSERT_EQ(chunked.size(), one.size());
  EXPECT_EQ(0, std::memcmp(chunked.data(), one.data(), one.size() * sizeof(float)));
  // The caches are identical too (both sequences live in the model's KV pool, different pages).
  KvCache& kv = st1.kv();
  const int64_t lb = kv.latent_layout().row_bytes(), ps = kv.page_size(), D = kv.index_dim();
  for (int64_t l = 0; l < m->config().num_hidden_layers; ++l)
    for (int64_t t = 0; t < 120; ++t) {
      EXPECT_EQ(0, std::memcmp(kv.latent(l) + st1.row(t) * lb, kv.latent(l) + st2.row(t) * lb, size_t(lb)));
      const uint8_t* a = kv.index(l) + st1.pages()[t / ps] * kv.index_page_bytes();
      const uint8_t* b = kv.index(l) + st2.pages()[t / ps] * kv.index_page_bytes();
      EXPECT_EQ(0, std::memcmp(a + (t % ps) * D, b + (t % ps) * D, size_t(D)));
      EXPECT_EQ(0, std::memcmp(a + ps * D + 4 * (t % ps), b + ps * D + 4 * (t % ps), 4));
    }
}

// Absorbed prefill runs each prompt row through decode's attention path, so a prompt prefilled
// that way (in chunks, too) must give exactly the logits of feeding its tokens one at a time
// (every op is row-independent). 90 tokens > index_topk (32): the selection is sparse.
TEST(Model, AbsorbedPrefillEqualsTokenByTokenDecode) {
  auto m = tiny();
  const int n = 90;
  const auto p = prompt(n, int(m->config().vocab_size), 11);
  const int64_t V = m->config().vocab_size;
  ForwardOptions fo;
  fo.all_logits = true;
  fo.absorbed_prefill = true;
  auto st1 = m->new_sequence();
  std::vector<float> chunked;
  for (int s = 0; s < n; s += 40) {
    std::vector<int32_t> piece(p.begin() + s, p.begin() + std::min(n, s + 40));
    auto l = m->forward(st1, piece, fo);
    ASSERT_EQ(l.size(), piece.size() * size_t(V));
    chunked.insert(chunked.end(), l.begin(), l.end());
  }
  EXPECT_EQ(st1.len, n);
  auto st2 = m->new_sequence();
  std::vector<float> stepwise;
  for (int s = 0; s < n; ++s) {
    auto l = m->forward(st2, {p[s]});
    stepwise.insert(stepwise.end(), l.begin(), l.end());
  }
  ASSERT_EQ(chunked.size(), stepwise.size());
  EXPECT_EQ(0, std::memcmp(chunked.data(), stepwise.data(), stepwise.size() * sizeof(float)));
  // Only the last row's logits without all_logits, as for the MHA prefill.
  auto st3 = m->new_sequence();
  ForwardOptions last;
  last.absorbed_prefill = true;
  const auto l3 = m->forward(st3, p, last);
  ASSERT_EQ(l3.size(), size_t(V));
  EXPECT_EQ(0, std::memcmp(l3.data(), stepwise.data() + (n - 1) * V, size_t(V) * sizeof(float)));
}

// Decode after prefill vs prefill of everything, with the one-piece run's decisions replayed.
// The MHA path (k/v from the FP8 wkv_b GEMM, bf16 q·k over 192 dims) and the absorbed path
// (bf16 q_nope·W_UK, bf16 scores over 512+64 dims, bf16 o_lat·W_UV) round at different points.
// Layer 0's attention output sees only that: about 4 extra bf16 roundings (≤ 2^-9 relative
// each, random sign) ⇒ relative rms ≈ 2·2^-9/√3 ≈ 2.3e-3 ⇒ cosine difference ≈ ½·rms² ≈ 3e-6;
// bound 1e-4. Downstream, every FP8 re-quantisation of an activation turns a relative shift ε
// into code flips of size u = 2^-3 with probability ~ε/u, i.e. relative variance ≈ ε·u per
// requantisation (≈ 10 per layer): over 3 layers this grows the logits' cosine difference to
// O(1e-3) (spec §16.14 measured 1.5e-3 between two devices of the same path). Bound 1e-2.
TEST(Model, DecodeAfterPrefillMatchesPrefillWithReplayedDecisions) {
  auto m = tiny();
  const ModelConfig& c = m->config();
  const int P = 100, D = 6;
  const auto all = prompt(P + D, int(c.vocab_size), 11);
  auto st1 = m->new_sequence();
  Decisions d1;
  Dump dump1("^l0\\.attn_o$");
  ForwardOptions fo;
  fo.all_logits = true;
  fo.record = &d1;
  fo.dump = &dump1;
  const auto ref = m->forward(st1, all, fo);
  auto st2 = m->new_sequence();
  Decisions dp = slice(d1, c, 0, P);
  ForwardOptions f2;
  f2.replay = &dp;
  m->forward(st2, std::vector<int32_t>(all.begin(), all.begin() + P), f2);
  const size_t V = size_t(c.vocab_size);
  const auto& o_ref = dump1.entries().at("l0.attn_o").second;
  const size_t W = o_ref.size() / (P + D);
  double worst_cos = 0, worst_o = 0;
  int argmax_same = 0;
  for (int j = 0; j < D; ++j) {
    Decisions dj = slice(d1, c, P + j, 1);
    Dump dump2("^l0\\.attn_o$");
    ForwardOptions f3;
    f3.replay = &dj;
    f3.dump = &dump2;
    const auto l = m->forward(st2, {all[P + j]}, f3);
    const double co = test::cos_diff(dump2.entries().at("l0.attn_o").second.data(), o_ref.data() + (P + j) * W, W);
    worst_o = std::max(worst_o, co);
    EXPECT_LT(co, 1e-4) << "layer-0 attention output, decode step " << j;
    const float* r = ref.data() + (P + j) * V;
    const double cd = test::cos_diff(l.data(), r, V);
    worst_cos = std::max(worst_cos, cd);
    EXPECT_LT(cd, 1e-2) << "logits, decode step " << j;
    argmax_same += std::max_element(l.data(), l.data() + V) - l.data() == std::max_element(r, r + V) - r;
  }
  std::printf("decode vs prefill (decisions replayed), worst cosine difference over %d steps: "
              "layer-0 attention output %.3g, logits %.3g; argmax agrees %d/%d\n",
              D, worst_o, worst_cos, argmax_same, D);
}

TEST(Model, SparseAttentionReadsOnlySelectedRows) {
  // Context 200 > index_topk 32. Learn which latent rows the next decode step selects in each
  // layer, poison every other latent row with NaN bytes, and decode again: the logits must be
  // finite and bit-identical. (The indexer cache is read for every key by design; not poisoned.)
  auto m = tiny();
  const ModelConfig& c = m->config();
  ASSERT_GT(200, c.index_topk);
  const auto p = prompt(200, int(c.vocab_size), 5);
  auto st = m->new_sequence();
  m->forward(st, p);
  SequenceState probe = st.fork();  // shares the full pages, copies the partial last one
  Decisions d;
  ForwardOptions fo;
  fo.record = &d;
  const auto clean = m->forward(probe, {42}, fo);
  const int64_t rb = st.kv().latent_layout().row_bytes();
  int64_t poisoned = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    std::vector<bool> keep(201, false);
    for (int32_t t : d.layers[l].topk)
      if (t >= 0) keep[t] = true;
    for (int64_t t = 0; t < 200; ++t)
      if (!keep[t]) {
        std::memset(st.kv().latent(l) + st.row(t) * rb, 0x7f, size_t(rb));  // fp8 NaN, NaN scales, NaN rope
        ++poisoned;
      }
  }
  EXPECT_GT(poisoned, 3 * (200 - 33));
  const auto dirty = m->forward(st, {42});
  for (float v : dirty) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(0, std::memcmp(clean.data(), dirty.data(), clean.size() * sizeof(float)));
}

TEST(Model, SameSeedSameTokens) {
  auto m = tiny();
  GenerateOptions go;
  go.max_new_tokens = 12;
  go.sampling = {0.8f, 40, 0.9f, 1234};
  const auto p = prompt(30, int(m->config().vocab_size));
  Session a(*m), b(*m);
  const auto x = a.generate(p, go, nullptr, nullptr);
  const auto y = b.generate(p, go, nullptr, nullptr);
  EXPECT_EQ(x, y);
  EXPECT_EQ(x.size(), 12u);
  go.sampling.seed = 99;
  Session c(*m);
  const auto z = c.generate(p, go, nullptr, nullptr);
  EXPECT_NE(x, z);  // a different seed gives different tokens (12 tokens at T=0.8: collision ~impossible)
}

TEST(Model, RejectsBadTokensAndOverlongSequences) {
  auto m = tiny();
  auto st = m->new_sequence();
  EXPECT_THROW(m->forward(st, {int32_t(m->config().vocab_size)}), Error);
  EXPECT_THROW(m->forward(st, {-1}), Error);
  EXPECT_THROW(m->forward(st, {}), Error);
  EXPECT_EQ(st.len, 0);
}

}  // namespace
}  // namespace dsa

namespace dsa {
namespace {

TEST(Model, BatchedDecodeEqualsEachSequenceAlone) {
  // Every op is row-independent, so one batched decode step over several sequences (different
  // lengths, pages interleaved in one pool) must give each sequence's solo logits bit for bit.
  auto m = Model::load(test::tiny_model_dir(), ops::ref_ops(), [](const std::string&) {});
  const ModelConfig& c = m->config();
  auto kv = std::make_shared<KvCache>(c, 16, 64);
  const int lens[] = {5, 70, 33};
  std::vector<SequenceState> batch, solo;
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> p;
    for (int j = 0; j < lens[i]; ++j) p.push_back(int32_t((j * 7 + i * 13) % c.vocab_size));
    batch.emplace_back(kv);
    solo.emplace_back(kv);
    m->forward(batch.back(), p);
    m->forward(solo.back(), p);
  }
  for (int step = 0; step < 3; ++step) {
    std::vector<SequenceState*> ptrs;
    std::vector<int32_t> toks;
    for (int i = 0; i < 3; ++i) {
      ptrs.push_back(&batch[i]);
      toks.push_back(int32_t(100 + 10 * i + step));
    }
    const auto lb = m->forward_decode(ptrs, toks);
    ASSERT_EQ(lb.size(), size_t(3 * c.vocab_size));
    for (int i = 0; i < 3; ++i) {
      const auto ls = m->forward(solo[i], {toks[i]});
      EXPECT_EQ(0, std::memcmp(ls.data(), lb.data() + i * c.vocab_size, ls.size() * sizeof(float)))
          << "sequence " << i << " step " << step;
    }
  }
  EXPECT_GT(kv->pages_in_use(), 0);
  batch.clear();
  solo.clear();
  EXPECT_EQ(kv->pages_in_use(), 0);  // every page returned
}

TEST(Model, ForkSharesThePrefixAndGivesTheSameContinuation) {
  auto m = Model::load(test::tiny_model_dir(), ops::ref_ops(), [](const std::string&) {});
  auto kv = std::make_shared<KvCache>(m->config(), 16, 32);
  SequenceState a(kv);
  std::vector<int32_t> p;
  for (int j = 0; j < 40; ++j) p.push_back(j * 3 + 1);
  m->forward(a, p);
  const int64_t used = kv->pages_in_use();  // 3 pages (16 + 16 + 8 tokens)
  SequenceState b = a.fork();
  EXPECT_EQ(kv->pages_in_use(), used + 1);   // two full pages shared, the partial one copied
  const auto la = m->forward(a, {7});
  const auto lb = m->forward(b, {7});
  EXPECT_EQ(la, lb);
  SequenceState c = a.fork(32);              // prefix of exactly two full pages: nothing copied
  EXPECT_EQ(c.len, 32);
  EXPECT_EQ(kv->refcount(a.pages()[0]), 3);
}

TEST(Model, KvBudgetIsEnforcedWithAClearError) {
  auto m = Model::load(test::tiny_model_dir(), ops::ref_ops(), [](const std::string&) {});
  auto kv = std::make_shared<KvCache>(m->config(), 16, 2);
  SequenceState a(kv);
  std::vector<int32_t> p(40, 5);
  try {
    m->forward(a, p);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache full"), std::string::npos) << e.what();
  }
  EXPECT_EQ(a.len, 0);
}

}  // namespace
}  // namespace dsa

namespace dsa {
namespace {

TEST(Model, DenseModeEqualsSparseUpToTopkAndDiffersBeyond) {
  // Spec §6.3: for contexts <= index_topk every causal key is selected, so DSA is exactly dense
  // attention; beyond it the two must differ.
  auto m = Model::load(test::tiny_model_dir(), ops::ref_ops(), [](const std::string&) {});
  const int64_t K = m->config().index_topk;
  std::vector<int32_t> p;
  for (int64_t j = 0; j < 3 * K; ++j) p.push_back(int32_t((j * 31 + 7) % m->config().vocab_size));
  ForwardOptions sparse, dense;
  sparse.all_logits = dense.all_logits = true;
  dense.dense = true;
  auto s1 = m->new_sequence(), s2 = m->new_sequence();
  const auto a = m->forward(s1, p, sparse), b = m->forward(s2, p, dense);
  const size_t V = size_t(m->config().vocab_size);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), size_t(K) * V * sizeof(float)));
  EXPECT_NE(0, std::memcmp(a.data() + (3 * K - 1) * V, b.data() + (3 * K - 1) * V, V * sizeof(float)));
  // Decode path too.
  const auto c = m->forward(s1, {9}, sparse), d = m->forward(s2, {9}, dense);
  EXPECT_NE(c, d);
}

}  // namespace
}  // namespace dsa

namespace dsa {
namespace {

TEST(Model, SparsePrefillChunkReadsOnlySelectedRows) {
  // A 4-token prefill chunk (MHA path) after 300 cached tokens: poison every cached latent row
  // no query of the chunk selects; the chunk's logits must be finite and bit-identical.
  auto m = Model::load(test::tiny_model_dir(), ops::ref_ops(), [](const std::string&) {});
  const ModelConfig& c = m->config();
  std::vector<int32_t> p;
  for (int j = 0; j < 300; ++j) p.push_back(int32_t((j * 53 + 3) % c.vocab_size));
  const std::vector<int32_t> chunk = {11, 12, 13, 14};
  auto st = m->new_sequence();
  m->forward(st, p);
  SequenceState probe = st.fork();
  Decisions d;
  ForwardOptions fo;
  fo.record = &d;
  fo.all_logits = true;
  const auto clean = m->forward(probe, chunk, fo);
  const int64_t rb = st.kv().latent_layout().row_bytes();
  int64_t poisoned = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    std::vector<bool> keep(300, false);
    for (int32_t t : d.layers[l].topk)
      if (t >= 0 && t < 300) keep[t] = true;
    for (int64_t t = 0; t < 300; ++t)
      if (!keep[t]) {
        std::memset(st.kv().latent(l) + st.row(t) * rb, 0x7f, size_t(rb));
        ++poisoned;
      }
  }
  EXPECT_GT(poisoned, 3 * (300 - 4 * c.index_topk));
  ForwardOptions f2;
  f2.all_logits = true;
  const auto dirty = m->forward(st, chunk, f2);
  for (float v : dirty) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(0, std::memcmp(clean.data(), dirty.data(), clean.size() * sizeof(float)));
}

}  // namespace
}  // namespace dsa
