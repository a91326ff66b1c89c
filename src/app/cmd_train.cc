// `dsa train CONFIG`: the training loop of src/train/trainer.h on tokenised shards; SIGINT or
// SIGTERM finishes the step, writes a checkpoint and exits 130.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fmt/format.h>

#include "app/commands.h"
#include "train/trainer.h"

namespace dsa::app {

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop.store(true); }
}  // namespace

void add_train_command(CLI::App& app) {
  struct Opts {
    std::string config, out, backend, init;
    int64_t steps = 0;
    bool resume = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("train", "Train a V3.2-architecture model (docs/training.md)");
  cmd->add_option("config", o->config, "Training configuration (JSON, docs/training.md §7)")->required();
  cmd->add_option("--steps", o->steps, "Override optimizer.steps")->check(CLI::PositiveNumber);
  cmd->add_option("--out", o->out, "Override run.out (the run directory)");
  cmd->add_option("--backend", o->backend, "Override model.backend (ref | cpu | cuda)");
  cmd->add_option("--init", o->init, "Override model.init (a V3.2-layout checkpoint to start from)");
  cmd->add_flag("--resume", o->resume, "Continue from the newest checkpoint under the run directory");
  cmd->callback([o] {
    train::TrainConfig cfg = train::load_train_config(o->config);
    if (o->steps > 0) cfg.steps = cfg.schedule.total = o->steps;
    if (!o->out.empty()) cfg.out = o->out;
    if (!o->backend.empty()) cfg.backend = o->backend;
    if (!o->init.empty()) cfg.init = o->init;
    train::Trainer t(cfg, [](const std::string& m) { fmt::print(stderr, "[dsa train] {}\n", m); });
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const train::RunSummary s = t.run(o->resume, &g_stop);
    fmt::print("{} steps, {:.3g} tokens in {:.1f} s ({:.0f} tok/s); last train loss {:.4f}, val loss {:.4f}\n",
               s.steps, s.tokens, s.seconds, s.tokens / std::max(s.seconds, 1e-9), s.loss, s.val_loss);
    fmt::print("metrics {0}/metrics.jsonl, curve {0}/loss.png, checkpoint {1}{2}\n", cfg.out, s.checkpoint,
               s.export_dir.empty() ? "" : ", export " + s.export_dir);
    if (s.interrupted) {
      fmt::print(stderr, "interrupted: resume with --resume\n");
      std::exit(130);
    }
  });
}

}  // namespace dsa::app
