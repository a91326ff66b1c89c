// Fixed thread pool: workers sleep on a condition variable and wake per parallel_for generation.
#include "base/thread_pool.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace dsa {

namespace {
thread_local bool t_in_pool = false;  // set while running a chunk: nested calls go serial
}

struct ThreadPool::State {
  std::mutex mu;
  std::condition_variable wake, done;
  std::vector<std::thread> workers;
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int active = 0;      // chunks handed out this generation
  int pending = 0;     // worker chunks not finished yet
  uint64_t gen = 0;
  bool stop = false;
};

ThreadPool::ThreadPool(int threads) : threads_(std::max(1, threads)), st_(new State) {
  for (int i = 1; i < threads_; ++i) st_->workers.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(st_->mu);
    st_->stop = true;
  }
  st_->wake.notify_all();
  for (auto& t : st_->workers) t.join();
  delete st_;
}

void ThreadPool::worker(int id) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* fn;
    int64_t n;
    int active;
    {
      std::unique_lock<std::mutex> lk(st_->mu);
      st_->wake.wait(lk, [&] { return st_->stop || st_->gen != seen; });
      if (st_->stop) return;
      seen = st_->gen;
      fn = st_->fn;
      n = st_->n;
      active = st_->active;
    }
    if (id < active) {
      t_in_pool = true;
      (*fn)(n * id / active, n * (id + 1) / active);
      t_in_pool = false;
      std::lock_guard<std::mutex> lk(st_->mu);
      if (--st_->pending == 0) st_->done.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int active = int(std::min<int64_t>(threads_, n));
  if (active <= 1 || t_in_pool) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(st_->mu);
    st_->fn = &fn;
    st_->n = n;
    st_->active = active;
    st_->pending = active - 1;
    ++st_->gen;
  }
  st_->wake.notify_all();
  t_in_pool = true;
  fn(0, n / active);
  t_in_pool = false;
  std::unique_lock<std::mutex> lk(st_->mu);
  st_->done.wait(lk, [&] { return st_->pending == 0; });
}

int default_thread_count() {
  if (const char* e = std::getenv("DSA_THREADS")) {
    const int v = std::atoi(e);
    if (v > 0) return v;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

namespace {
std::unique_ptr<ThreadPool>& pool_slot() {
  static std::unique_ptr<ThreadPool> p;
  return p;
}
std::mutex g_pool_mu;
}  // namespace

ThreadPool& global_pool() {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  auto& p = pool_slot();
  if (!p) p = std::make_unique<ThreadPool>(default_thread_count());
  return *p;
}

void set_global_threads(int threads) {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  pool_slot() = std::make_unique<ThreadPool>(threads);
}

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  global_pool().parallel_for(n, fn);
}

}  // namespace dsa
