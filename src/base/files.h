// Opening and reading files named by users without hanging or over-reading: regular files only
// (a FIFO, socket or device is refused instead of blocking), with a size limit for text files.
#pragma once
#include <cstdint>
#include <string>

namespace dsa {

// Opens `path` read-only without blocking (O_NONBLOCK, so a FIFO with no writer cannot hang),
// checks that it is a regular file and returns the descriptor (the caller closes it) and its size.
// Throws dsa::Error naming the file otherwise.
int open_regular_file(const std::string& path, uint64_t* size);

// The whole content of a regular file of at most max_bytes (config.json, index files, messages
// files, tokenizer.json); `what` names the file's role in the error messages.
std::string read_text_file(const std::string& path, uint64_t max_bytes, const char* what = "file");

}  // namespace dsa
