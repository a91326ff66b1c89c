// Model loading, sequence state, dumps and the whole-model forward (embed → layers → head).
#include "model/model.h"

#include <cmath>
#include <filesystem>
#include <fmt/format.h>

#include "model/layer.h"

namespace dsa {

void Dump::add(const std::string& name, const Shape& row_shape, const float* data, int64_t rows) {
  auto& [shape, vals] = entries_[name];
  if (shape.empty()) {
    shape = row_shape;
    shape.insert(shape.begin(), 0);
  }
  DSA_CHECK(Shape(shape.begin() + 1, shape.end()) == row_shape, "dump {}: row shape changed", name);
  shape[0] += rows;
  vals.insert(vals.end(), data, data + rows * shape_numel(row_shape));
}

void Dump::add_ragged(const std::string& name, const float* data, int64_t len, float pad_value) {
  ragged_[name].emplace_back(data, data + len);
  // Materialise into entries_ with the current maximum length.
  auto& rows = ragged_[name];
  size_t width = 0;
  for (auto& r : rows) width = std::max(width, r.size());
  auto& [shape, vals] = entries_[name];
  shape = {int64_t(rows.size()), int64_t(width)};
  vals.assign(rows.size() * width, pad_value);
  for (size_t i = 0; i < rows.size(); ++i) std::copy(rows[i].begin(), rows[i].end(), vals.begin() + i * width);
}

void Dump::write(const std::string& path) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, e] : entries_) {
    const bool ids = name.find(".topk") != std::string::npos || name.find(".experts") != std::string::npos;
    Tensor t = Tensor::empty(ids ? DType::I32 : DType::F32, e.first);
    for (size_t i = 0; i < e.second.size(); ++i) {
      if (ids) t.ptr<int32_t>()[i] = int32_t(e.second[i]);
      else t.ptr<float>()[i] = e.second[i];
    }
    out.emplace_back(name, t);
  }
  write_safetensors(path, out, {{"dump_regex", pattern_}});
}

std::vector<float> yarn_inv_freq(const ModelConfig& c) {
  const int64_t dim = c.qk_rope_head_dim;
  std::vector<float> f(dim / 2);
  for (int64_t i = 0; i < dim / 2; ++i)
    f[i] = 1.0f / std::pow(float(c.rope_theta), float(2 * i) / float(dim));
  if (c.yarn() && c.max_position_embeddings > c.original_max_position_embeddings) {
    auto corr = [&](double rot) {
      return dim * std::log(double(c.original_max_position_embeddings) / (rot * 2 * M_PI)) / (2 * std::log(c.rope_theta));
    };
    double low = std::max(std::floor(corr(c.beta_fast)), 0.0);
    double high = std::min(std::ceil(corr(c.beta_slow)), double(dim - 1));
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < dim / 2; ++i) {
      float ramp = (float(i) - float(low)) / (float(high) - float(low));
      ramp = std::clamp(ramp, 0.0f, 1.0f);
      const float smooth = 1.0f - ramp;
      f[i] = f[i] / float(c.rope_factor) * (1.0f - smooth) + f[i] * smooth;
    }
  }
  return f;
}

std::unique_ptr<Model> Model::load(const std::string& dir, const ops::OpTable& ops,
                                   const std::function<void(const std::string&)>& log) {
  namespace fs = std::filesystem;
  DSA_CHECK(fs::is_directory(dir), "model directory {} does not exist", dir);
  auto m = std::make_unique<Model>();
  m->cfg_ = ModelConfig::load(dir + "/config.json");
  m->ckpt_ = Checkpoint::open(dir);
  m->w_ = load_weights(m->ckpt_, m->cfg_, log);
  m->be_ = std::make_unique<Backend>(ops);
  for (auto& [n, e] : m->ckpt_.tensors()) m->weight_bytes_ += e.nbytes;
  if (m->be_->device()) {
    // Weights live on the device: one upload at load, FP8 stays FP8.
    for_each_tensor(m->w_, [&](Tensor& t) { t = m->be_->mirror(t); });
    log(fmt::format("uploaded {:.1f} MB of weights to the {} backend", m->weight_bytes_ / 1e6, ops.name));
  }
  for (LayerWeights& l : m->w_.layers) build_expert_tables(*m->be_, l);
  return m;
}

std::unique_ptr<Model> Model::create(const ModelConfig& cfg, const ops::OpTable& ops) {
  cfg.validate();
  auto m = std::make_unique<Model>();
  m->cfg_ = cfg;
  m->be_ = std::make_unique<Backend>(ops);
  return m;
}

void Model::set_weights(ModelWeights w) {
  DSA_CHECK(int64_t(w.layers.size()) == cfg_.num_hidden_layers, "set_weights: {} layers for a {}-layer config",
            w.layers.size(), cfg_.num_hidden_layers);
  w_ = std::move(w);
  weight_bytes_ = 0;
  for_each_tensor(w_, [&](Tensor& t) { weight_bytes_ += t.nbytes(); });
  for (LayerWeights& l : w_.layers) build_expert_tables(*be_, l);
  for (MtpWeights& m : w_.mtp) build_expert_tables(*be_, m.layer);
}

std::shared_ptr<KvCache> Model::make_kv_cache(int64_t page_size, int64_t max_pages) const {
  return std::make_shared<KvCache>(cfg_, page_size, max_pages, be_->ops().mem);
}

SequenceState Model::new_sequence() {
  if (!own_kv_) own_kv_ = make_kv_cache();
  return SequenceState(own_kv_);
}

void Model::ensure_rope(int64_t n) {
  const int64_t half = cfg_.qk_rope_head_dim / 2;
  const int64_t have = int64_t(rope_cos_.size()) / half;
  if (n <= have) return;
  const std::vector<float> f = yarn_inv_freq(cfg_);
  const int64_t cap = std::max<int64_t>(n, have * 2);
  rope_cos_.resize(cap * half);
  rope_sin_.resize(cap * half);
  for (int64_t p = have; p < cap; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float theta = float(p) * f[i];  // fp32 angle, as torch.outer(int positions, fp32 freqs)
      rope_cos_[p * half + i] = float(std::cos(double(theta)));
      rope_sin_[p * half + i] = float(std::sin(double(theta)));
    }
  rope_cos_dev_ = be_->upload(rope_cos_.data(), DType::F32, {cap, half});
  rope_sin_dev_ = be_->upload(rope_sin_.data(), DType::F32, {cap, half});
}

std::vector<float> Model::forward(SequenceState& st, const std::vector<int32_t>& tokens, const ForwardOptions& opt) {
  const int64_t S = int64_t(tokens.size());
  DSA_CHECK(S > 0, "forward: no tokens");
  Rows rows;
  rows.seqs.assign(size_t(S), &st);
  for (int64_t s = 0; s < S; ++s) rows.pos.push_back(int32_t(st.len + s));
  rows.single = true;
  rows.mha = S > 1 && !opt.absorbed_prefill;
  return run(rows, tokens, opt);
}

std::vector<float> Model::forward_decode(const std::vector<SequenceState*>& seqs, const std::vector<int32_t>& tokens,
                                         const ForwardOptions& opt) {
  DSA_CHECK(!seqs.empty() && seqs.size() == tokens.size(), "forward_decode: {} sequences for {} tokens", seqs.size(),
            tokens.size());
  Rows rows;
  rows.seqs = seqs;
  for (size_t i = 0; i < seqs.size(); ++i) {
    DSA_CHECK(&seqs[i]->kv() == &seqs[0]->kv(), "forward_decode: sequences use different KV caches");
    for (size_t j = 0; j < i; ++j) DSA_CHECK(seqs[j] != seqs[i], "forward_decode: a sequence appears twice");
    rows.pos.push_back(int32_t(seqs[i]->len));
  }
  rows.mha = false;
  return run(rows, tokens, opt);
}

void Model::prepare(Rows& rows, const ForwardOptions& opt, bool reserve) {
  const int64_t S = int64_t(rows.pos.size());
  int64_t max_end = 0;
  for (int64_t s = 0; s < S; ++s) max_end = std::max<int64_t>(max_end, rows.pos[s] + 1);
  DSA_CHECK(max_end <= cfg_.max_position_embeddings, "sequence length {} exceeds max_position_embeddings {}", max_end,
            cfg_.max_position_embeddings);
  if (opt.replay) DSA_CHECK(int64_t(opt.replay->layers.size()) >= cfg_.num_hidden_layers, "replay: wrong layer count");
  // Each distinct sequence gets its rows at consecutive positions from its length; pages for all
  // of them are reserved first (throws "KV cache full" before anything is written).
  rows.distinct.clear();
  for (int64_t s = 0; s < S; ++s) {
    auto it = std::find_if(rows.distinct.begin(), rows.distinct.end(), [&](auto& d) { return d.first == rows.seqs[s]; });
    if (it == rows.distinct.end()) {
      rows.distinct.push_back({rows.seqs[s], 0});
      it = rows.distinct.end() - 1;
    }
    if (reserve)
      DSA_CHECK(rows.pos[s] == it->first->len + it->second, "forward: row {} has position {}, expected {}", s,
                rows.pos[s], it->first->len + it->second);
    ++it->second;
  }
  if (reserve)
    for (auto& [q, n] : rows.distinct) q->reserve(n);
  KvCache& kv = rows.seqs[0]->kv();
  DSA_CHECK(&kv.memory() == &be_->ops().mem || (!kv.memory().device && !be_->device()),
            "the KV cache lives in other memory than the {} backend's", be_->ops().name);
  for (auto& [q, n] : rows.distinct) DSA_CHECK(&q->kv() == &kv, "forward: sequences use different KV caches");
  rows.kv = &kv;
  // Block tables [S, maxb] and physical rows of the new tokens (host copies + backend copies).
  const int64_t ps = kv.page_size();
  rows.maxb = (max_end + ps - 1) / ps;
  rows.block_table.assign(size_t(S * rows.maxb), 0);
  rows.write_row.clear();
  for (int64_t s = 0; s < S; ++s) {
    const auto& pg = rows.seqs[s]->pages();
    std::copy(pg.begin(), pg.begin() + (rows.pos[s] + ps) / ps, rows.block_table.begin() + s * rows.maxb);
    rows.write_row.push_back(rows.seqs[s]->row(rows.pos[s]));
  }
  Backend& be = *be_;
  rows.block_table_dev = be.upload(rows.block_table, DType::I32);
  rows.pos_dev = be.upload(rows.pos, DType::I32);
  {  // cache-write offsets and row ends, once for all layers
    const int64_t D = kv.index_dim(), pb = kv.index_page_bytes(), lb = kv.latent_layout().row_bytes();
    std::vector<int32_t> ends(static_cast<size_t>(S));
    std::vector<int64_t> off[5];
    for (auto& o : off) o.resize(static_cast<size_t>(S));
    for (int64_t s = 0; s < S; ++s) {
      ends[s] = rows.pos[s] + 1;
      const int64_t r = rows.write_row[s], page = r / ps, slot = r % ps;
      off[0][s] = page * pb + slot * D;
      off[1][s] = page * pb + ps * D + 4 * slot;
      off[2][s] = r * lb;
      off[3][s] = r * lb + kv.latent_layout().scale_off();
      off[4][s] = r * lb + kv.latent_layout().rope_off();
    }
    rows.max_end = max_end;
    rows.ends_dev = be.upload(ends, DType::I32);
    for (int i = 0; i < 2; ++i) rows.index_off[i] = be.upload(off[i], DType::I64);
    for (int i = 0; i < 3; ++i) rows.latent_off[i] = be.upload(off[2 + i], DType::I64);
  }
  ensure_rope(max_end);
}

Tensor Model::embed_rows(const std::vector<int32_t>& tokens) {
  const int64_t S = int64_t(tokens.size()), H = cfg_.hidden_size, V = cfg_.vocab_size;
  for (int32_t t : tokens) DSA_CHECK(t >= 0 && t < V, "token id {} is outside the vocabulary [0, {})", t, V);
  // Embedding rows (a gather of bf16 rows by token id).
  std::vector<int64_t> src_off(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) src_off[s] = int64_t(tokens[s]) * H * 2;
  const Tensor off = be_->upload(src_off, DType::I64);
  Tensor h = be_->alloc(DType::BF16, {S, H});
  be_->ops().copy_rows({w_.embed.ptr<uint8_t>(), h.ptr<uint8_t>(), off.ptr<int64_t>(), nullptr, 0, H * 2, H * 2, S});
  return h;
}

std::vector<float> Model::run(Rows& rows, const std::vector<int32_t>& tokens, const ForwardOptions& opt) {
  const int64_t S = int64_t(tokens.size()), H = cfg_.hidden_size, V = cfg_.vocab_size;
  Tensor h = embed_rows(tokens);  // checks the ids before anything is reserved
  prepare(rows, opt, true);
  if (opt.record) opt.record->layers.assign(cfg_.num_hidden_layers, {});
  Backend& be = *be_;
  const ops::OpTable& ops = be.ops();
  Tensor residual;
  LayerContext ctx{cfg_, be, rows, S, rope_cos_dev_.ptr<float>(), rope_sin_dev_.ptr<float>(), opt};
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) run_layer(ctx, w_.layers[i], i, h, residual);

  // Final norm (fused add) and fp32 LM head.
  const int64_t nrows = (opt.all_logits || !rows.single) ? S : 1, first = S - nrows;
  Tensor hn = be.alloc(DType::BF16, {S, H});
  ops.rms_norm({h.ptr<bf16>(), residual.ptr<bf16>(), w_.final_norm.ptr<float>(), hn.ptr<bf16>(), S, H,
                float(cfg_.rms_norm_eps)});
  Tensor x32 = be.alloc(DType::F32, {nrows, H});
  ops.convert({hn.ptr<bf16>() + first * H, x32.data, nrows * H, true});
  Tensor lg = be.alloc(DType::F32, {nrows, V});
  ops.linear_f32({x32.ptr<float>(), w_.lm_head.ptr<bf16>(), lg.ptr<float>(), nrows, V, H});
  std::vector<float> logits = be.to_host<float>(lg);
  if (opt.dump && opt.dump->wants("logits")) opt.dump->add("logits", {V}, logits.data(), nrows);
  for (auto& [q, n] : rows.distinct) q->len += n;
  return logits;
}

}  // namespace dsa
