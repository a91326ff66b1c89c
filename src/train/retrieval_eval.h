// Model-side scoring of retrieval examples (train/data/retrieval.h): teacher-forced greedy exact
// match, aggregated per (kind, context length, depth) (docs/training.md §10).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "train/data/retrieval.h"

namespace dsa::train {

// BOS + the example's pieces tokenised one by one (prompt, question_1, answer_1, ...);
// answers[i] = [begin, end) of answer i's tokens in ids.
struct RetrievalTokens {
  std::vector<int32_t> ids;
  std::vector<std::pair<int64_t, int64_t>> answers;
};
RetrievalTokens tokenize_retrieval(const RetrievalExample& e, const text::Tokenizer& tok,
                                   int32_t bos);

struct RetrievalCheck {
  std::vector<std::vector<int32_t>>
      predicted;  // the model's argmax at each answer token, per query
  int queries_correct = 0;
  bool correct = false;  // every answer token of every query
};

// Feeds ids through a fresh sequence of `model` and compares, at each answer token, the argmax of
// the logits of the position before it (first maximum on ties) with that token. Answer tokens are
// fed as given (teacher forcing); no sampling. Logits are computed only where they are compared.
RetrievalCheck check_retrieval(Model& model, const RetrievalTokens& t, const ForwardOptions& opt);

struct RetrievalCell {
  std::string kind;
  int64_t context = 0;
  double depth = 0;
  int examples = 0, correct = 0, queries = 0, queries_correct = 0;
};
// Groups results by (kind, context_target, depth), in that order.
std::vector<RetrievalCell> aggregate_retrieval(const std::vector<RetrievalExample>& ex,
                                               const std::vector<RetrievalCheck>& res);
// Accuracy (share of examples with every answer right) by depth (columns) x kind/context (rows).
std::string format_retrieval_table(const std::vector<RetrievalCell>& cells);

}  // namespace dsa::train
