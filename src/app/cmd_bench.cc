// `dsa bench`: per-layer decode latency and prefill throughput of DSA vs dense MLA at long
// contexts (synthetic KV caches), per-kernel rates against this machine's measured roofline.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "app/bench.h"
#include "app/commands.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "model/make_model.h"
#include "ops/backends.h"

namespace dsa::app {

namespace {

using namespace bench;

struct BenchArgs {
  std::string model = "models/v32-layer", backend, out_dir = "out/bench";
  std::vector<std::string> contexts = {"4K", "16K", "32K", "64K", "128K"};
  std::vector<std::string> prefill_contexts = {"4K", "16K"};
  std::vector<std::string> prefill_full;  // real prefill from an empty cache up to these lengths
  int steps = 3, warmup = 1, threads = 0;
  int64_t prefill_chunk = 512;
  int64_t max_dense = 0;  // 0 = no limit
  bool no_dense = false;
  double roofline_s = 4;
  uint64_t seed = 7;
  bool no_model = false;     // only the GPU kernel sweep (device backends)
  DeviceKernelArgs kernels;  // the GPU kernel sweep (bench_device.cc)
};

}  // namespace

int64_t bench::parse_ctx(const std::string& s) {
  DSA_CHECK(!s.empty(), "empty context length");
  int64_t mult = 1;
  std::string num = s;
  const char last = char(std::toupper(static_cast<unsigned char>(s.back())));
  if (last == 'K') mult = 1024, num.pop_back();
  if (last == 'M') mult = 1024 * 1024, num.pop_back();
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(num, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  DSA_CHECK(used == num.size() && v > 0, "bad context length \"{}\" (use e.g. 4096, 4K, 128K)", s);
  return v * mult;
}

namespace {

std::string ctx_label(int64_t c) { return c % 1024 == 0 ? fmt::format("{}K", c / 1024) : fmt::format("{}", c); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Accumulated kernel stats of one measured configuration.
struct KernelRow {
  std::string phase, mode;
  int64_t ctx;
  OpStats stats;
};

struct DecodeRow {
  int64_t ctx;
  std::string mode;
  std::vector<double> attn_ms, ffn_ms;  // median per layer
  double step_ms;                       // median whole forward (all layers + LM head)
};

struct PrefillRow {
  std::string kind, mode;  // kind: "chunk" (P tokens appended at ctx) or "full" (0 -> ctx)
  int64_t ctx, tokens;
  double ms;
  std::vector<double> layer_ms;  // chunk only: per-layer wall time
};

void add_stats(OpStats& into, const OpStats& s) {
  for (int i = 0; i < kNumOps; ++i) {
    into[size_t(i)].calls += s[size_t(i)].calls;
    into[size_t(i)].seconds += s[size_t(i)].seconds;
    into[size_t(i)].bytes += s[size_t(i)].bytes;
    into[size_t(i)].flops += s[size_t(i)].flops;
  }
}

// Fraction of the roofline bound: max(bytes/BW, flops/peak) / measured time.
double roofline_pct(const OpStat& s, const Roofline& r) {
  if (s.seconds <= 0) return 0;
  const double lb = std::max(s.bytes / (r.triad_gbs * 1e9), s.flops / (r.fma_f32_gflops * 1e9));
  return 100.0 * lb / s.seconds;
}
const char* bound_of(const OpStat& s, const Roofline& r) {
  return s.bytes / (r.triad_gbs * 1e9) >= s.flops / (r.fma_f32_gflops * 1e9) ? "mem" : "fma";
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, std::mt19937_64& rng) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint64_t(vocab));
  return t;
}

void run_bench(const BenchArgs& a) {
  namespace fs = std::filesystem;
  auto log = [](const std::string& s) { fmt::print(stderr, "[bench] {}\n", s); };
  const ops::OpTable& inner = a.backend.empty() ? ops::default_backend() : ops::backend_by_name(a.backend);
  DSA_CHECK(!a.no_model || (a.kernels.enabled && inner.mem.device),
            "nothing to run: --no-model leaves only the kernel sweep, which needs a device backend (--device cuda)");
  fs::create_directories(a.out_dir);
  const int kernel_errors = run_device_kernels(a.kernels, inner, a.out_dir);
  auto check_kernels = [&] {
    DSA_CHECK(kernel_errors == 0, "GPU kernel sweep: {} section(s) failed (error rows in {}/gpu_kernels.csv)",
              kernel_errors, a.out_dir);
  };
  if (a.no_model) {
    check_kernels();
    return;
  }
  if (a.threads > 0) set_global_threads(a.threads);
  const int threads = a.threads > 0 ? a.threads : default_thread_count();
  if (!fs::is_directory(a.model)) {
    DSA_CHECK(fs::path(a.model).filename() == "v32-layer",
              "model directory {} does not exist (only models/v32-layer is created automatically)", a.model);
    log(fmt::format("{} is missing: creating the v32-layer preset (2 layers, ~12 GB) — this takes a while", a.model));
    MakeModelOptions mo;
    mo.preset = "v32-layer";
    mo.out_dir = a.model;
    mo.shards = 8;     // bounded memory while generating (one shard in memory at a time)
    mo.mtp = false;    // the MTP layer is not benchmarked (it would double the size)
    make_model(mo);
  }
  std::vector<int64_t> ctxs, pctxs, fctxs;
  for (auto& s : a.contexts) ctxs.push_back(parse_ctx(s));
  for (auto& s : a.prefill_contexts) pctxs.push_back(parse_ctx(s));
  for (auto& s : a.prefill_full) fctxs.push_back(parse_ctx(s));

  log(fmt::format("roofline: STREAM triad + FMA peak on {} threads (~{:.0f} s)", threads, a.roofline_s));
  const Roofline roof = measure_roofline(threads, a.roofline_s);
  fmt::print("Roofline ({} threads): triad {:.1f} GB/s | fp32 FMA ({}) {:.1f} GFLOP/s | bf16 dot {}\n", roof.threads,
             roof.triad_gbs, roof.isa, roof.fma_f32_gflops,
             roof.dp_bf16_gflops > 0 ? fmt::format("{:.1f} GFLOP/s", roof.dp_bf16_gflops) : std::string("n/a"));

  const ModelConfig cfg0 = ModelConfig::load(a.model + "/config.json");
  const ops::OpTable& timed = timing_proxy(inner, cfg0.hidden_size);
  auto model = Model::load(a.model, timed, log);
  const ModelConfig& cfg = model->config();
  const int64_t NL = cfg.num_hidden_layers;
  log(fmt::format("model {}: {} layers, {:.1f} GB of weights; backend {}; {} threads", a.model, NL,
                  model->weight_bytes() / 1e9, inner.name, threads));
  std::mt19937_64 rng(a.seed);
  std::vector<std::string> modes = {"dsa"};
  if (!a.no_dense) modes.push_back("dense");
  auto dense_ok = [&](int64_t ctx) { return a.max_dense == 0 || ctx <= a.max_dense; };

  std::vector<DecodeRow> decode;
  std::vector<PrefillRow> prefill;
  std::vector<KernelRow> kernels;

  // ---- Decode: one synthetic cache per context, steps always at exactly ctx keys.
  for (int64_t ctx : ctxs) {
    SequenceState st = model->new_sequence();
    const double tf = now_s();
    fill_synthetic(st, cfg, ctx, a.seed + uint64_t(ctx));
    st.reserve(1);
    log(fmt::format("decode @{}: synthetic fill {:.1f} s", ctx_label(ctx), now_s() - tf));
    for (const auto& mode : modes) {
      if (mode == "dense" && !dense_ok(ctx)) continue;
      ForwardOptions opt;
      opt.dense = mode == "dense";
      DecodeRow row{ctx, mode, {}, {}, 0};
      std::vector<std::vector<double>> attn(static_cast<size_t>(NL)), ffn(static_cast<size_t>(NL));
      std::vector<double> step;
      KernelRow kr{"decode", mode, ctx, {}};
      for (int i = 0; i < a.warmup + a.steps; ++i) {
        st.len = ctx;
        proxy_reset();
        const double t0 = now_s();
        model->forward(st, random_tokens(1, cfg.vocab_size, rng), opt);
        const double dt = now_s() - t0;
        if (i < a.warmup) continue;
        step.push_back(1e3 * dt);
        const LayerTimes lt = split_layers(proxy_marks(), NL);
        for (int64_t l = 0; l < NL && !lt.attn_ms.empty(); ++l) {
          attn[size_t(l)].push_back(lt.attn_ms[size_t(l)]);
          ffn[size_t(l)].push_back(lt.ffn_ms[size_t(l)]);
        }
        add_stats(kr.stats, proxy_stats());
      }
      for (int64_t l = 0; l < NL; ++l) {
        row.attn_ms.push_back(median(attn[size_t(l)]));
        row.ffn_ms.push_back(median(ffn[size_t(l)]));
      }
      row.step_ms = median(step);
      log(fmt::format("decode @{} {}: step {:.1f} ms, layer0 attn {:.1f} ms", ctx_label(ctx), mode, row.step_ms,
                      row.attn_ms.empty() ? 0.0 : row.attn_ms[0]));
      decode.push_back(row);
      kernels.push_back(kr);
    }
  }

  // ---- Prefill (a): a chunk of P real tokens appended to a synthetic cache of ctx tokens.
  for (int64_t ctx : pctxs) {
    if (a.prefill_chunk <= 0) break;
    SequenceState st = model->new_sequence();
    fill_synthetic(st, cfg, ctx, a.seed + 17 + uint64_t(ctx));
    st.reserve(a.prefill_chunk);
    for (const auto& mode : modes) {
      if (mode == "dense" && !dense_ok(ctx)) continue;
      ForwardOptions opt;
      opt.dense = mode == "dense";
      st.len = ctx;
      proxy_reset();
      const double t0 = now_s();
      model->forward(st, random_tokens(a.prefill_chunk, cfg.vocab_size, rng), opt);
      const double dt = now_s() - t0;
      PrefillRow pr{"chunk", mode, ctx, a.prefill_chunk, 1e3 * dt, {}};
      const LayerTimes lt = split_layers(proxy_marks(), NL);
      for (size_t l = 0; l < lt.attn_ms.size(); ++l) pr.layer_ms.push_back(lt.attn_ms[l] + lt.ffn_ms[l]);
      log(fmt::format("prefill chunk {} @{} {}: {:.1f} ms ({:.1f} tok/s)", a.prefill_chunk, ctx_label(ctx), mode,
                      pr.ms, a.prefill_chunk / dt));
      prefill.push_back(pr);
      kernels.push_back({"prefill_chunk", mode, ctx, proxy_stats()});
    }
  }
  // ---- Prefill (b): real prefill from an empty cache to ctx, in chunks of P tokens.
  for (int64_t ctx : fctxs) {
    for (const auto& mode : modes) {
      if (mode == "dense" && !dense_ok(ctx)) continue;
      ForwardOptions opt;
      opt.dense = mode == "dense";
      SequenceState st = model->new_sequence();
      proxy_reset();
      const int64_t P = a.prefill_chunk > 0 ? a.prefill_chunk : ctx;
      const double t0 = now_s();
      while (st.len < ctx) model->forward(st, random_tokens(std::min(P, ctx - st.len), cfg.vocab_size, rng), opt);
      const double dt = now_s() - t0;
      log(fmt::format("prefill full 0->{} {}: {:.1f} s ({:.1f} tok/s)", ctx_label(ctx), mode, dt, ctx / dt));
      prefill.push_back({"full", mode, ctx, ctx, 1e3 * dt, {}});
      kernels.push_back({"prefill_full", mode, ctx, proxy_stats()});
    }
  }

  // ---- Report: tables on stdout, CSVs under out_dir.
  {
    std::ofstream f(a.out_dir + "/roofline.csv");
    f << "metric,value,unit,threads,isa\n";
    f << fmt::format("triad_bandwidth,{:.2f},GB/s,{},\n", roof.triad_gbs, roof.threads);
    f << fmt::format("fma_fp32_peak,{:.2f},GFLOP/s,{},{}\n", roof.fma_f32_gflops, roof.threads, roof.isa);
    f << fmt::format("dp_bf16_peak,{:.2f},GFLOP/s,{},avx512bf16\n", roof.dp_bf16_gflops, roof.threads);
  }
  fmt::print("\nPer-layer decode latency (median of {} steps; synthetic KV; backend {}; ms)\n", a.steps, inner.name);
  std::string hdr = fmt::format("{:>7} ", "context");
  for (int64_t l = 0; l < NL; ++l)
    hdr += fmt::format("| {:>13} {:>9} {:>9} {:>9} ", fmt::format("L{}({}) dsa", l, cfg.is_moe_layer(l) ? "MoE" : "MLP"),
                       "dense", "x(attn)", "x(layer)");
  fmt::print("{}| step dsa / dense ms\n", hdr);
  std::ofstream df(a.out_dir + "/decode.csv");
  df << "context,mode,layer,ffn_kind,attn_ms,ffn_ms,layer_ms,step_ms,backend,threads\n";
  std::map<std::pair<int64_t, std::string>, const DecodeRow*> by;
  for (auto& r : decode) {
    by[{r.ctx, r.mode}] = &r;
    for (int64_t l = 0; l < NL; ++l)
      df << fmt::format("{},{},{},{},{:.4f},{:.4f},{:.4f},{:.4f},{},{}\n", r.ctx, r.mode, l,
                        cfg.is_moe_layer(l) ? "moe" : "mlp", r.attn_ms[size_t(l)], r.ffn_ms[size_t(l)],
                        r.attn_ms[size_t(l)] + r.ffn_ms[size_t(l)], r.step_ms, inner.name, threads);
  }
  for (int64_t ctx : ctxs) {
    const DecodeRow* s = by.count({ctx, "dsa"}) ? by[{ctx, "dsa"}] : nullptr;
    const DecodeRow* d = by.count({ctx, "dense"}) ? by[{ctx, "dense"}] : nullptr;
    if (!s) continue;
    std::string line = fmt::format("{:>7} ", ctx_label(ctx));
    for (int64_t l = 0; l < NL; ++l) {
      const double sl = s->attn_ms[size_t(l)] + s->ffn_ms[size_t(l)];
      if (d) {
        const double dl = d->attn_ms[size_t(l)] + d->ffn_ms[size_t(l)];
        line += fmt::format("| {:>13.1f} {:>9.1f} {:>8.1f}x {:>8.1f}x ", sl, dl,
                            d->attn_ms[size_t(l)] / s->attn_ms[size_t(l)], dl / sl);
      } else {
        line += fmt::format("| {:>13.1f} {:>9} {:>9} {:>9} ", sl, "-", "-", "-");
      }
    }
    line += fmt::format("| {:.1f} / {}", s->step_ms, d ? fmt::format("{:.1f}", d->step_ms) : std::string("-"));
    fmt::print("{}\n", line);
  }
  fmt::print("(x(attn) = dense/DSA attention-block time incl. indexer; x(layer) = whole layer; step = all {} layers"
             " + LM head)\n",
             NL);

  std::ofstream pf(a.out_dir + "/prefill.csv");
  pf << "kind,context,mode,tokens,ms,tok_per_s,layer_ms,backend,threads\n";
  if (!prefill.empty()) {
    fmt::print("\nPrefill throughput (chunk = {} real tokens appended at a synthetic context; full = 0 -> ctx)\n",
               a.prefill_chunk);
    fmt::print("{:>6} {:>7} {:>6} {:>8} {:>11} {:>10}\n", "kind", "context", "mode", "tokens", "ms", "tok/s");
  }
  for (auto& p : prefill) {
    std::string lm;
    for (double x : p.layer_ms) lm += fmt::format("{}{:.2f}", lm.empty() ? "" : ";", x);
    pf << fmt::format("{},{},{},{},{:.3f},{:.3f},{},{},{}\n", p.kind, p.ctx, p.mode, p.tokens, p.ms,
                      p.tokens / (p.ms / 1e3), lm, inner.name, threads);
    fmt::print("{:>6} {:>7} {:>6} {:>8} {:>11.1f} {:>10.2f}\n", p.kind, ctx_label(p.ctx), p.mode, p.tokens, p.ms,
               p.tokens / (p.ms / 1e3));
  }

  std::ofstream kf(a.out_dir + "/kernels.csv");
  kf << "phase,mode,context,op,calls,ms_total,ms_per_call,GB_per_s,GFLOP_per_s,bound,pct_roofline\n";
  for (auto& k : kernels)
    for (int i = 0; i < kNumOps; ++i) {
      const OpStat& s = k.stats[size_t(i)];
      if (s.calls == 0) continue;
      kf << fmt::format("{},{},{},{},{},{:.4f},{:.5f},{:.3f},{:.3f},{},{:.2f}\n", k.phase, k.mode, k.ctx, op_name(i),
                        s.calls, 1e3 * s.seconds, 1e3 * s.seconds / double(s.calls), s.bytes / s.seconds / 1e9,
                        s.flops / s.seconds / 1e9, bound_of(s, roof), roofline_pct(s, roof));
    }
  if (inner.mem.device)
    fmt::print("\nNote: backend {} runs on a device; the roofline above is this host CPU's, so the % columns and\n"
               "the kernel targets below do not apply (device kernels vs the GPU's own roofline: the kernel\n"
               "sweep of this command, gpu_kernels.csv). Each op is synchronised for timing (launch latency).\n",
               inner.name);
  fmt::print("\nHot kernels in decode vs roofline (triad {:.1f} GB/s, fp32 FMA {:.1f} GFLOP/s; % = max(bytes/BW, "
             "FLOPs/peak) / time)\n",
             roof.triad_gbs, roof.fma_f32_gflops);
  fmt::print("{:>7} {:>6} {:>18} {:>6} {:>11} {:>9} {:>10} {:>5} {:>7}\n", "context", "mode", "op", "calls",
             "ms/call", "GB/s", "GFLOP/s", "bound", "%roof");
  for (auto& k : kernels) {
    if (k.phase != "decode") continue;
    for (int i : {int(kIndexerLogits), int(kSparseMlaDecode), int(kFp8Gemm), int(kGroupedFp8Gemm), int(kHeadMatmul),
                  int(kLinearF32)}) {
      const OpStat& s = k.stats[size_t(i)];
      if (s.calls == 0) continue;
      fmt::print("{:>7} {:>6} {:>18} {:>6} {:>11.3f} {:>9.2f} {:>10.2f} {:>5} {:>6.1f}%\n", ctx_label(k.ctx), k.mode,
                 op_name(i), s.calls, 1e3 * s.seconds / double(s.calls), s.bytes / s.seconds / 1e9,
                 s.flops / s.seconds / 1e9, bound_of(s, roof), roofline_pct(s, roof));
    }
  }
  // ---- Targets of issue 4 (reported, not enforced).
  fmt::print("\nTargets (reported, not enforced)\n");
  if (!decode.empty()) {
    const int64_t big = decode.back().ctx;
    for (auto& k : kernels) {
      if (inner.mem.device || k.phase != "decode" || k.mode != "dsa" || k.ctx != big) continue;
      for (int i : {int(kIndexerLogits), int(kSparseMlaDecode), int(kFp8Gemm), int(kGroupedFp8Gemm)}) {
        const OpStat& s = k.stats[size_t(i)];
        if (s.calls == 0) continue;
        const double pct = roofline_pct(s, roof);
        fmt::print("  {:<18} @{:<5} {:6.1f}% of roofline (target >= 50%): {}\n", op_name(i), ctx_label(big), pct,
                   pct >= 50 ? "met" : "NOT met");
      }
    }
    const DecodeRow* s = by.count({big, "dsa"}) ? by[{big, "dsa"}] : nullptr;
    const DecodeRow* d = by.count({big, "dense"}) ? by[{big, "dense"}] : nullptr;
    for (int64_t l = 0; s && d && l < NL; ++l) {
      const double x = (d->attn_ms[size_t(l)] + d->ffn_ms[size_t(l)]) / (s->attn_ms[size_t(l)] + s->ffn_ms[size_t(l)]);
      fmt::print("  layer {} decode @{}: DSA {:.1f}x faster than dense (target >= 8x): {}\n", l, ctx_label(big), x,
                 x >= 8 ? "met" : "NOT met");
    }
    if (s) fmt::print("  decode tok/s of this {}-layer model: {:.3f} at {} (vs llama.cpp: bench/peer_llamacpp.sh)\n", NL,
                      1e3 / s->step_ms, ctx_label(big));
  }
  fmt::print("\nwrote {}/roofline.csv, decode.csv, prefill.csv, kernels.csv\n", a.out_dir);
  check_kernels();
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Benchmark DSA vs dense per-layer decode and prefill, with a roofline");
  cmd->add_option("-m,--model", a->model, "Model directory (models/v32-layer is created if missing)");
  cmd->add_option("--contexts", a->contexts, "Decode contexts, e.g. 4K,16K,32K,64K,128K")->delimiter(',');
  cmd->add_option("--prefill-contexts", a->prefill_contexts,
                  "Contexts at which a prefill chunk is appended (synthetic cache before it)")
      ->delimiter(',');
  cmd->add_option("--prefill-full", a->prefill_full, "Also prefill from empty up to these lengths (real tokens)")
      ->delimiter(',');
  cmd->add_option("--prefill-chunk", a->prefill_chunk, "Tokens per prefill chunk (0 = skip chunk prefill)");
  cmd->add_option("--steps", a->steps, "Measured decode steps per context and mode (median)")->check(CLI::Range(1, 1000));
  cmd->add_option("--warmup", a->warmup, "Unmeasured decode steps first")->check(CLI::Range(0, 100));
  cmd->add_option("--threads", a->threads, "Kernel and roofline threads (default: DSA_THREADS or all cores)");
  cmd->add_option("--backend,--device", a->backend, "Op backend: ref, cpu, cuda (CUDA builds) (default: the fastest CPU one)");
  cmd->add_option("--max-dense-context", a->max_dense, "Skip dense mode above this context (0 = never skip)");
  cmd->add_flag("--no-dense", a->no_dense, "Measure DSA only");
  cmd->add_option("--roofline-seconds", a->roofline_s, "Time spent measuring the roofline");
  cmd->add_option("-o,--out-dir", a->out_dir, "Where the CSVs go");
  cmd->add_option("--seed", a->seed, "Seed of the synthetic caches and tokens");
  cmd->add_flag("--no-model", a->no_model, "Skip the whole-model part (with --device cuda: the kernel sweep alone)");
  add_device_kernel_options(*cmd, a->kernels);
  cmd->callback([a] { run_bench(*a); });
}

}  // namespace dsa::app
