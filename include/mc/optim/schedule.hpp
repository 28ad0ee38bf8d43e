// mc/optim/schedule.hpp — learning-rate schedules, stepped once per optimizer step (per batch).
//
// A Schedule maps the step count t (0 before the first step) to a multiplier of each group's base lr;
// Scheduler applies it: lr = base_lr * factor(t). Formulas:
//   WarmupCosine:  t < W: t / W;  else 0.5 (1 + cos(pi (t - W) / (T - W))) scaled into [min_ratio, 1]
//   LinearWarmup:  min(1, start + (1 - start) t / W)
//   StepDecay:     gamma ^ floor(t / step_size)
#pragma once
#include <cmath>
#include <functional>

#include "mc/optim/optimizer.hpp"

namespace mc::optim {

using Schedule = std::function<double(int64_t t)>;

inline Schedule warmup_cosine(int64_t total_steps, int64_t warmup_steps = 0, double min_ratio = 0.0) {
  MC_CHECK(total_steps > 0 && warmup_steps >= 0 && warmup_steps <= total_steps,
           "warmup_cosine: need 0 <= warmup_steps <= total_steps and total_steps > 0");
  return [=](int64_t t) {
    if (t < warmup_steps) return double(t) / double(std::max<int64_t>(1, warmup_steps));
    const double progress = std::min(1.0, double(t - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps)));
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + std::cos(M_PI * progress));
  };
}

inline Schedule linear_warmup(int64_t warmup_steps, double start_factor = 0.0) {
  MC_CHECK(warmup_steps >= 0, "linear_warmup: warmup_steps must be >= 0");
  return [=](int64_t t) {
    if (warmup_steps == 0 || t >= warmup_steps) return 1.0;
    return start_factor + (1 - start_factor) * double(t) / double(warmup_steps);
  };
}

inline Schedule step_decay(int64_t step_size, double gamma = 0.1) {
  MC_CHECK(step_size > 0, "step_decay: step_size must be positive");
  return [=](int64_t t) { return std::pow(gamma, double(t / step_size)); };
}

inline Schedule constant_schedule() {
  return [](int64_t) { return 1.0; };
}

// Sets each group's lr to base_lr * schedule(t); construct it before training (t = 0 applies at once).
class Scheduler {
 public:
  Scheduler(Optimizer& opt, Schedule schedule) : opt_(opt), schedule_(std::move(schedule)) {
    for (auto& g : opt_.groups()) base_.push_back(g.lr);
    apply();
  }
  void step() {
    ++t_;
    apply();
  }
  int64_t t() const { return t_; }
  // For resuming: jump to step t.
  void set_t(int64_t t) {
    t_ = t;
    apply();
  }
  double factor() const { return schedule_(t_); }

 private:
  void apply() {
    const double f = schedule_(t_);
    for (size_t i = 0; i < base_.size(); ++i) opt_.groups()[i].lr = base_[i] * f;
  }
  Optimizer& opt_;
  Schedule schedule_;
  std::vector<double> base_;
  int64_t t_ = 0;
};

}  // namespace mc::optim
