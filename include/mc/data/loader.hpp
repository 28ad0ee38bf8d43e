// mc/data/loader.hpp — batches over a data set, shuffled per epoch, made by background threads.
//
//   mc::data::LoaderOptions o;  o.batch_size = 64;  o.shuffle = true;  o.num_workers = 2;
//   auto loader = mc::data::make_loader(ds.size(),
//       [&](const std::vector<int64_t>& idx) { return ds.batch(idx, pre); }, o);
//   for (int epoch = 0; epoch < 32; ++epoch)
//     while (auto batch = loader.next()) { ... *batch ... }   // one while loop = one epoch
//
// Order. Epoch e visits the samples in the order permutation(n, seed, stream = e) (SeededRng Fisher-Yates,
// mc/data/common.hpp) when shuffle is on, else 0..n-1; the order is cut into batches of batch_size, the last
// one shorter unless drop_last drops it. The same seed gives the same order; each epoch has its own. The
// first next() after an epoch has ended starts the next epoch (0, 1, 2, ...); start_epoch(e) jumps to epoch e
// (abandoning the running one), e.g. to resume training.
//
// Workers. With num_workers = 0 next() makes each batch on the calling thread. With num_workers = W > 0,
// W threads make batches ahead of the consumer: a worker takes the next batch number k only while
// k < (batches consumed) + W * prefetch, so at most W * prefetch batches are in flight or waiting (a bounded
// queue). next() hands batches out strictly in batch order, so the sequence of batches — and, for a
// deterministic batch function, their contents — does not depend on W. An exception thrown by the batch
// function for batch k is rethrown, unchanged (an mc::Error keeps the file name it carries), by the next()
// call that would have returned batch k; later next() calls go on with batch k + 1. Destroying the loader
// (or calling start_epoch) in the middle of an epoch stops the workers: each finishes the batch it is making,
// its result is discarded, and the threads are joined.
//
// The batch function is called as fn(indices) or fn(indices, info) (BatchInfo: epoch, batch number and a
// per-batch seed derived from (seed, epoch, batch) for random augmentation — never from a shared generator,
// so results stay independent of W). Thread-safety requirement: with W > 0 it is called concurrently from W
// threads for different batches, so it must only read shared state (the data sets' const member functions
// are safe) and keep any mutable state per call. It may use mc::parallel_for (Preprocess::batch does);
// the pool serves one such call at a time, the others wait.
//
// A DataLoader is movable, not copyable; next() and start_epoch() are for one consumer thread.
#pragma once
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "mc/core/error.hpp"
#include "mc/data/common.hpp"

namespace mc::data {

struct LoaderOptions {
  int64_t batch_size = 1;
  bool shuffle = false;
  bool drop_last = false;
  uint64_t seed = kDefaultSeed;
  int num_workers = 0;  // background threads; 0 = make batches in next()
  int prefetch = 2;     // batches each worker may run ahead of the consumer
};

struct BatchInfo {
  int64_t epoch = 0;
  int64_t batch = 0;   // batch number within the epoch
  uint64_t seed = 0;   // per-batch seed derived from (options.seed, epoch, batch)
};

// The batches (lists of sample indices) of `epoch` for n samples under `opt`.
inline std::vector<std::vector<int64_t>> epoch_batches(int64_t n, const LoaderOptions& opt, int64_t epoch) {
  MC_CHECK(n >= 0, "DataLoader: negative number of samples ", n);
  MC_CHECK(opt.batch_size > 0, "DataLoader: batch_size must be positive, got ", opt.batch_size);
  MC_CHECK(epoch >= 0, "DataLoader: negative epoch ", epoch);
  std::vector<int64_t> order;
  if (opt.shuffle) {
    order = permutation(n, opt.seed, uint64_t(epoch));
  } else {
    order.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  }
  std::vector<std::vector<int64_t>> out;
  for (int64_t b = 0; b < n; b += opt.batch_size) {
    const int64_t e = std::min(n, b + opt.batch_size);
    if (e - b < opt.batch_size && opt.drop_last) break;
    out.emplace_back(order.begin() + b, order.begin() + e);
  }
  return out;
}

// The per-batch seed of BatchInfo.
inline uint64_t batch_seed(uint64_t seed, int64_t epoch, int64_t batch) {
  SeededRng r(seed ^ 0x9E3779B97F4A7C15ull, (uint64_t(epoch) << 32) ^ uint64_t(batch));
  return r.next_u64();
}

template <class Batch>
class DataLoader {
 public:
  using Fn = std::function<Batch(const std::vector<int64_t>&, const BatchInfo&)>;

  // `make_batch` is fn(indices) or fn(indices, BatchInfo) returning a Batch.
  template <class F>
  DataLoader(int64_t num_samples, F&& make_batch, LoaderOptions opt = {}) : n_(num_samples), opt_(opt) {
    MC_CHECK(n_ >= 0, "DataLoader: negative number of samples ", n_);
    MC_CHECK(opt_.batch_size > 0, "DataLoader: batch_size must be positive, got ", opt_.batch_size);
    MC_CHECK(opt_.num_workers >= 0, "DataLoader: num_workers must be >= 0, got ", opt_.num_workers);
    MC_CHECK(opt_.prefetch >= 1, "DataLoader: prefetch must be >= 1, got ", opt_.prefetch);
    using Idx = const std::vector<int64_t>&;
    if constexpr (std::is_invocable_v<F&, Idx, const BatchInfo&>) {
      fn_ = std::make_shared<Fn>(std::forward<F>(make_batch));
    } else {
      static_assert(std::is_invocable_v<F&, Idx>, "DataLoader: the batch function must take (indices) or (indices, BatchInfo)");
      fn_ = std::make_shared<Fn>(
          [f = std::forward<F>(make_batch)](Idx idx, const BatchInfo&) mutable { return Batch(f(idx)); });
    }
  }
  ~DataLoader() { stop(); }
  DataLoader(DataLoader&&) noexcept = default;
  DataLoader& operator=(DataLoader&& o) noexcept {
    if (this != &o) {
      stop();
      n_ = o.n_;
      opt_ = o.opt_;
      fn_ = std::move(o.fn_);
      state_ = std::move(o.state_);
      next_epoch_ = o.next_epoch_;
    }
    return *this;
  }
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t num_samples() const { return n_; }
  const LoaderOptions& options() const { return opt_; }
  // Batches per epoch.
  int64_t num_batches() const {
    return opt_.drop_last ? n_ / opt_.batch_size : (n_ + opt_.batch_size - 1) / opt_.batch_size;
  }
  // The sample indices of every batch of `epoch` (what next() will deliver for that epoch).
  std::vector<std::vector<int64_t>> batches(int64_t epoch) const { return epoch_batches(n_, opt_, epoch); }
  // The epoch being delivered (or the one the next next() starts).
  int64_t epoch() const { return state_ ? state_->epoch : next_epoch_; }
  bool in_epoch() const { return bool(state_); }

  // Starts epoch `epoch` (stopping the running one, if any).
  void start_epoch(int64_t epoch) {
    stop();
    auto s = std::make_unique<State>();
    s->epoch = epoch;
    s->tasks = epoch_batches(n_, opt_, epoch);
    s->fn = fn_;
    s->window = int64_t(opt_.num_workers) * opt_.prefetch;
    s->seed = opt_.seed;
    const int nw = int(std::min<int64_t>(opt_.num_workers, int64_t(s->tasks.size())));
    State* raw = s.get();
    state_ = std::move(s);
    try {
      for (int w = 0; w < nw; ++w) raw->threads.emplace_back([raw] { raw->work(); });
    } catch (...) {
      stop();
      throw;
    }
  }

  // The next batch of the current epoch (starting the next epoch first if none is running); std::nullopt
  // once the epoch is exhausted.
  std::optional<Batch> next() {
    if (!state_) start_epoch(next_epoch_);
    State& s = *state_;
    const int64_t T = int64_t(s.tasks.size());
    if (s.consumed >= T) {
      next_epoch_ = s.epoch + 1;
      stop();
      return std::nullopt;
    }
    if (s.threads.empty()) {
      const int64_t k = s.consumed++;
      return (*s.fn)(s.tasks[size_t(k)], s.info(k));
    }
    Slot slot;
    {
      std::unique_lock<std::mutex> lk(s.m);
      s.cv_consumer.wait(lk, [&] { return s.ready.count(s.consumed) != 0; });
      auto it = s.ready.find(s.consumed);
      slot = std::move(it->second);
      s.ready.erase(it);
      ++s.consumed;
    }
    s.cv_worker.notify_all();
    if (slot.error) std::rethrow_exception(slot.error);
    return std::move(slot.value);
  }

 private:
  struct Slot {
    std::optional<Batch> value;
    std::exception_ptr error;
  };

  struct State {
    int64_t epoch = 0;
    std::vector<std::vector<int64_t>> tasks;
    std::shared_ptr<Fn> fn;
    int64_t window = 1;
    uint64_t seed = 0;
    std::mutex m;
    std::condition_variable cv_worker, cv_consumer;
    int64_t next_task = 0;  // next batch number a worker takes (guarded by m)
    int64_t consumed = 0;   // next batch number next() hands out
    std::map<int64_t, Slot> ready;
    bool stop = false;
    std::vector<std::thread> threads;

    BatchInfo info(int64_t k) const { return {epoch, k, batch_seed(seed, epoch, k)}; }

    void work() {
      const int64_t T = int64_t(tasks.size());
      for (;;) {
        int64_t k;
        {
          std::unique_lock<std::mutex> lk(m);
          cv_worker.wait(lk, [&] { return stop || next_task >= T || next_task < consumed + window; });
          if (stop || next_task >= T) return;
          k = next_task++;
        }
        Slot slot;
        try {
          slot.value.emplace((*fn)(tasks[size_t(k)], info(k)));
        } catch (...) {
          slot.error = std::current_exception();
        }
        {
          std::lock_guard<std::mutex> lk(m);
          if (stop) return;
          ready.emplace(k, std::move(slot));
        }
        cv_consumer.notify_all();
      }
    }
  };

  void stop() {
    if (!state_) return;
    {
      std::lock_guard<std::mutex> lk(state_->m);
      state_->stop = true;
    }
    state_->cv_worker.notify_all();
    for (std::thread& t : state_->threads)
      if (t.joinable()) t.join();
    state_.reset();
  }

  int64_t n_ = 0;
  LoaderOptions opt_;
  std::shared_ptr<Fn> fn_;
  std::unique_ptr<State> state_;
  int64_t next_epoch_ = 0;
};

namespace loader_detail {
template <class F, class = void>
struct BatchOf {
  using type = std::decay_t<std::invoke_result_t<F&, const std::vector<int64_t>&>>;
};
template <class F>
struct BatchOf<F, std::enable_if_t<std::is_invocable_v<F&, const std::vector<int64_t>&, const BatchInfo&>>> {
  using type = std::decay_t<std::invoke_result_t<F&, const std::vector<int64_t>&, const BatchInfo&>>;
};
}  // namespace loader_detail

// A DataLoader whose Batch type is what `make_batch` returns.
template <class F>
auto make_loader(int64_t num_samples, F&& make_batch, LoaderOptions opt = {}) {
  using Batch = typename loader_detail::BatchOf<std::decay_t<F>>::type;
  return DataLoader<Batch>(num_samples, std::forward<F>(make_batch), opt);
}

}  // namespace mc::data
