// dsa: command-line entry point.
#include <cstdio>

#include "app/commands.h"
#include "base/error.h"
#ifdef DSA_HAVE_CUDA
#include "ops/cuda/cuda_ops.h"
#endif

int main(int argc, char** argv) {
  CLI::App app{"dsa: DeepSeek Sparse Attention inference engine"};
#ifdef DSA_HAVE_CUDA
  dsa::ops::cuda::register_cuda_backend();
#endif
  app.require_subcommand(1);
  dsa::app::add_run_command(app);
  dsa::app::add_make_model_command(app);
  dsa::app::add_inspect_command(app);
  dsa::app::add_serve_command(app);
  dsa::app::add_chat_command(app);
  dsa::app::add_bench_command(app);
  dsa::app::add_corpus_command(app);
  dsa::app::add_train_command(app);
  dsa::app::add_env_command(app);
  dsa::app::add_agent_command(app);
  dsa::app::add_eval_command(app);
  dsa::app::add_eval_retrieval_command(app);
  dsa::app::add_eval_context_command(app);
  dsa::app::add_plot_command(app);
  dsa::app::add_rl_command(app);
  add_tokenize_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const dsa::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
