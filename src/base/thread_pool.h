// Fixed thread pool with a static-chunked parallel_for: chunk i of T covers [n*i/T, n*(i+1)/T),
// so a kernel that computes each output inside one chunk is bit-identical for any thread count.
#pragma once
#include <cstdint>
#include <functional>

namespace dsa {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads >= 1 (the caller counts as one)
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }
  // Calls fn(begin, end) on disjoint static chunks covering [0, n); returns when all are done.
  // Nested calls (from inside fn) and n <= 1 run serially on the calling thread.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

 private:
  struct State;
  void worker(int id);
  int threads_;
  State* st_;
};

// Threads from env DSA_THREADS, else std::thread::hardware_concurrency().
int default_thread_count();
// The process-wide pool used by the CPU kernels (created on first use).
ThreadPool& global_pool();
// Replace the global pool with one of `threads` threads (tests, benchmarks, the --threads flag).
// Must not be called while a kernel is running.
void set_global_threads(int threads);
// Shorthand for global_pool().parallel_for(n, fn).
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace dsa
