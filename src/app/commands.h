// dsa CLI subcommands; each file registers one with CLI11.
#pragma once
#include <CLI/CLI.hpp>

namespace dsa::app {
void add_run_command(CLI::App& app);
void add_make_model_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_bench_command(CLI::App&);
void add_serve_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_corpus_command(CLI::App& app);  // train/data (cmd_corpus.cc)
void add_train_command(CLI::App& app);   // train/ (cmd_train.cc)
void add_env_command(CLI::App& app);     // env/ (cmd_env.cc)
void add_agent_command(CLI::App& app);   // env/ agent loop (cmd_agent.cc)
void add_eval_command(CLI::App& app);    // env/ evaluation (cmd_eval.cc)
void add_corpus_retrieval_command(CLI::App& corpus);  // train/data/retrieval (cmd_retrieval.cc)
void add_eval_retrieval_command(CLI::App& app);       // train/retrieval_eval (cmd_retrieval.cc)
void add_eval_context_command(CLI::App& app);         // train/context_eval (cmd_context_eval.cc)
void add_plot_command(CLI::App& app);                 // train/plot (cmd_plot.cc)
void add_rl_command(CLI::App& app);                   // rl/ post-training (cmd_rl.cc)
}  // namespace dsa::app

void add_tokenize_command(CLI::App& app);  // text/ (cmd_tokenize.cc)
