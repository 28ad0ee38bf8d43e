// mc/autograd/engine.hpp — reverse-mode differentiation over the recorded graph.
//
// backward(root, grad): orders the nodes reachable from root topologically, then walks them from the
// root, calling each node's backward with the summed gradient of its output. Leaves that require grad
// accumulate into .grad(). The graph is freed as it is consumed unless retain_graph is set.
#pragma once
#include <unordered_map>
#include <unordered_set>

#include "mc/autograd/node.hpp"
#include "mc/ops/elementwise.hpp"

namespace mc::autograd {

inline void backward(const Tensor& root, Tensor grad = Tensor(), bool retain_graph = false) {
  MC_CHECK(root.requires_grad(), "backward: the tensor does not require grad (no input requires grad, or it was "
           "computed under NoGradGuard)");
  if (!grad.defined()) {
    MC_CHECK(root.numel() == 1, "backward: a gradient must be given for a non-scalar output of shape ",
             shape_str(root.shape()));
    grad = ones_like(root);
  }
  MC_CHECK(grad.shape() == root.shape(), "backward: gradient shape ", shape_str(grad.shape()),
           " does not match the output shape ", shape_str(root.shape()));
  NoGradGuard no_grad;

  if (root.is_leaf()) {  // d root / d root
    Tensor g = root.grad();
    root.impl()->grad = (g.defined() ? g + grad : detail::contiguous_copy(grad)).impl_ptr();
    return;
  }

  // Topological order by iterative depth-first search (post-order), then reversed.
  // `order` owns the nodes, so they outlive the inputs released below.
  std::vector<std::shared_ptr<Node>> order;
  std::unordered_set<Node*> seen;
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{root.grad_fn(), 0}};
  seen.insert(root.grad_fn().get());
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->inputs.size()) {
      const Tensor& in = node->inputs[next++];
      if (in.defined() && in.grad_fn() && seen.insert(in.grad_fn().get()).second) stack.push_back({in.grad_fn(), 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }

  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = grad;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = it->get();
    auto git = grads.find(node);
    if (git == grads.end()) continue;  // no gradient flows here
    Tensor g = std::move(git->second);
    grads.erase(git);
    MC_CHECK(node->backward, "backward: the graph through '", node->name,
             "' was already freed; call backward(..., retain_graph=true) the first time");
    Needs needs(node->inputs.size());
    for (size_t i = 0; i < needs.size(); ++i) needs[i] = node->inputs[i].defined() && node->inputs[i].requires_grad();
    std::vector<Tensor> gin = node->backward(g, needs);
    MC_CHECK(gin.size() == node->inputs.size(), "backward of '", node->name, "' returned ", gin.size(),
             " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < gin.size(); ++i) {
      if (!needs[i] || !gin[i].defined()) continue;
      Tensor& in = node->inputs[i];
      MC_CHECK(gin[i].shape() == in.shape(), "backward of '", node->name, "': gradient ", i, " has shape ",
               shape_str(gin[i].shape()), ", input has ", shape_str(in.shape()));
      if (in.grad_fn()) {
        Tensor& acc = grads[in.grad_fn().get()];
        acc = acc.defined() ? acc + gin[i] : gin[i];
      } else {
        // A leaf's .grad always owns its memory (optimizers and clipping update it in place).
        Tensor prev = in.grad();
        Tensor gi = detail::cast(gin[i], in.dtype());
        in.impl()->grad = (prev.defined() ? prev + gi : detail::contiguous_copy(gi)).impl_ptr();
      }
    }
    if (!retain_graph) {  // free saved tensors and edges as we go
      node->backward = nullptr;
      node->inputs.clear();
    }
  }
}

}  // namespace mc::autograd

namespace mc {
inline void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  autograd::backward(*this, grad, retain_graph);
}
}  // namespace mc
