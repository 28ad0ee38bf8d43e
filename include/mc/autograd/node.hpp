// mc/autograd/node.hpp — the tape: one Node per differentiable op result.
//
// An op that produced tensor `out` from inputs records a Node on out.grad_fn: the inputs (graph edges) and
// a backward function mapping the gradient of `out` to the gradients of the inputs (an undefined Tensor
// where an input needs none). `needs[i]` tells whether input i requires a gradient, so backward functions
// skip work nobody asked for. Backward functions capture what they need by value; a captured output must
// be captured detached (out.detach()) so the node does not keep itself alive.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mc/core/tensor.hpp"

namespace mc::autograd {

using Needs = std::vector<bool>;
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad, const Needs& needs)>;

struct Node {
  const char* name = "";
  std::vector<Tensor> inputs;
  BackwardFn backward;
};

inline bool& grad_mode() {
  thread_local bool enabled = true;
  return enabled;
}

// Disables recording in a scope (inference, optimizer updates, backward itself).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_mode()) { grad_mode() = false; }
  ~NoGradGuard() { grad_mode() = prev_; }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// Attaches a Node to `out` when grad mode is on and some input requires grad; returns out.
inline Tensor record(Tensor out, const char* name, std::vector<Tensor> inputs, BackwardFn fn) {
  if (!grad_mode()) return out;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  if (!any) return out;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs = std::move(inputs);
  node->backward = std::move(fn);
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = std::move(node);
  return out;
}

}  // namespace mc::autograd

namespace mc {
using autograd::NoGradGuard;
inline bool is_grad_enabled() { return autograd::grad_mode(); }
}  // namespace mc
