// mc/core/parallel.hpp — a small persistent thread pool for CPU kernels.
//
// parallel_for(n, grain, fn) splits [0, n) into contiguous chunks of at least `grain` items and calls
// fn(begin, end) on the pool's workers and the calling thread. Nested calls run serially on the caller.
// An exception thrown by fn is rethrown on the calling thread once all chunks have finished.
// The thread count is MC_NUM_THREADS if set, else std::thread::hardware_concurrency().
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace mc {

class ThreadPool {
 public:
  explicit ThreadPool(int threads) : nthreads_(std::max(1, threads)) {
    for (int i = 1; i < nthreads_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return nthreads_; }

  // Runs fn(chunk) for chunk in [0, nchunks) across the pool; returns when all are done.
  void run(int64_t nchunks, const std::function<void(int64_t)>& fn) {
    if (nchunks <= 0) return;
    if (nchunks == 1 || nthreads_ == 1 || in_pool()) {
      for (int64_t c = 0; c < nchunks; ++c) fn(c);
      return;
    }
    std::unique_lock<std::mutex> job_lock(job_m_);  // one job at a time from different callers
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &fn;
      nchunks_ = nchunks;
      next_.store(0);
      remaining_ = nchunks;
      ++generation_;
    }
    cv_.notify_all();
    in_pool() = true;
    drain();
    in_pool() = false;
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [&] { return remaining_ == 0 && busy_ == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  static bool& in_pool() {
    thread_local bool flag = false;
    return flag;
  }
  void drain() {
    int64_t done = 0;
    for (int64_t c; (c = next_.fetch_add(1)) < nchunks_;) {
      try {
        (*job_)(c);
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
      }
      ++done;
    }
    if (done) {
      std::lock_guard<std::mutex> lk(m_);
      remaining_ -= done;
      if (remaining_ == 0) done_cv_.notify_all();
    }
  }
  void worker_loop() {
    in_pool() = true;
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || (generation_ != seen && job_ != nullptr); });
        if (stop_) return;
        seen = generation_;
        ++busy_;
      }
      drain();
      {
        std::lock_guard<std::mutex> lk(m_);
        --busy_;
        if (remaining_ == 0 && busy_ == 0) done_cv_.notify_all();
      }
    }
  }

  int nthreads_;
  std::vector<std::thread> workers_;
  std::mutex m_, job_m_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t nchunks_ = 0, remaining_ = 0;
  std::atomic<int64_t> next_{0};
  uint64_t generation_ = 0;
  int busy_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

inline int default_num_threads() {
  if (const char* s = std::getenv("MC_NUM_THREADS")) {
    int n = std::atoi(s);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

inline ThreadPool& thread_pool() {
  static ThreadPool pool(default_num_threads());
  return pool;
}

// Calls fn(begin, end) over chunks of [0, n); chunks hold at least `grain` items.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  ThreadPool& pool = thread_pool();
  int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  int64_t nchunks = std::min<int64_t>(max_chunks, pool.size());
  if (nchunks <= 1) {
    fn(int64_t(0), n);
    return;
  }
  int64_t step = (n + nchunks - 1) / nchunks;
  pool.run(nchunks, [&](int64_t c) {
    int64_t b = c * step, e = std::min(n, b + step);
    if (b < e) fn(b, e);
  });
}

}  // namespace mc
