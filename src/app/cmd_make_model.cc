// `dsa make-model`: write a deterministic random checkpoint of a preset.
#include <fmt/format.h>

#include "app/commands.h"
#include "model/make_model.h"

namespace dsa::app {

void add_make_model_command(CLI::App& app) {
  auto opt = std::make_shared<MakeModelOptions>();
  auto* cmd = app.add_subcommand("make-model", "Write a deterministic random V3.2-architecture checkpoint");
  cmd->add_option("--preset", opt->preset, "tiny | demo | v32-layer")->check(CLI::IsMember(preset_names()));
  cmd->add_option("-o,--out", opt->out_dir, "Output directory")->required();
  cmd->add_option("--seed", opt->seed, "Generator seed");
  cmd->add_option("--layers", opt->layers, "Override the number of layers (v32-layer: 1 or 2)")->check(CLI::Range(1, 61));
  cmd->add_option("--shards", opt->shards, "Number of safetensors shards (>1 writes an index.json)")->check(CLI::Range(1, 1000));
  cmd->add_flag("!--no-mtp", opt->mtp, "Do not write the MTP layer's tensors");
  cmd->callback([opt] {
    const int64_t bytes = make_model(*opt);
    fmt::print("wrote {} ({} preset, {:.1f} MB of tensors)\n", opt->out_dir, opt->preset, bytes / 1e6);
  });
}

}  // namespace dsa::app
