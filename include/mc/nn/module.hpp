// mc/nn/module.hpp — Module: named parameters, buffers and children with PyTorch state_dict names.
//
// A model is a tree of Modules. Each registers its tensors under the names PyTorch uses, so a dotted path
// ("visual.transformer.resblocks.0.attn.in_proj_weight") names the same tensor in mc and in a checkpoint,
// and checkpoints load with no mapping table. Parameters and buffers are Tensor handles shared between
// the module's member fields and its registry: load_state_dict() and to() update them in place.
#pragma once
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "mc/ops/view.hpp"

namespace mc::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Glob match on dotted names: '*' matches any run of characters (dots included), '?' one character.
inline bool glob_match(std::string_view pattern, std::string_view name) {
  size_t p = 0, n = 0, star = std::string_view::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// What load_state_dict found: keys the module has but the dict lacks, keys the dict has but the module
// lacks, and keys present in both with different shapes ("name: [a, b] vs [c, d]").
struct LoadReport {
  std::vector<std::string> missing, unexpected, mismatched;
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string str() const {
    std::ostringstream o;
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      o << what << " (" << v.size() << "):";
      for (size_t i = 0; i < v.size() && i < 20; ++i) o << ' ' << v[i];
      if (v.size() > 20) o << " ...";
      o << "; ";
    };
    list("missing keys", missing);
    list("unexpected keys", unexpected);
    list("shape mismatches", mismatched);
    return o.str();
  }
};

// Copies the tensors of `given` into the same-named tensors of `mine` (views of a model's parameters and
// buffers), after checking names and shapes. Strict: any missing, unexpected or mismatched name is an
// mc::Error (from `what`) and nothing is modified. Non-strict: loads what matches and returns the report.
inline LoadReport load_named(const NamedTensors& mine, const NamedTensors& given_list, bool strict, const char* what) {
  std::map<std::string, const Tensor*> given;
  for (auto& [n, t] : given_list) given[n] = &t;
  LoadReport r;
  std::set<std::string> known;
  for (auto& [n, t] : mine) {
    known.insert(n);
    auto it = given.find(n);
    if (it == given.end()) r.missing.push_back(n);
    else if (it->second->shape() != t.shape())
      r.mismatched.push_back(n + ": checkpoint " + shape_str(it->second->shape()) + " vs model " + shape_str(t.shape()));
  }
  for (auto& [n, t] : given_list)
    if (!known.count(n)) r.unexpected.push_back(n);
  MC_CHECK(!strict || r.ok(), what, ": ", r.str());
  NoGradGuard ng;
  for (auto& [n, t] : mine) {
    auto it = given.find(n);
    if (it == given.end() || it->second->shape() != t.shape()) continue;
    Tensor dst = t;
    copy_(dst, *it->second);
  }
  return r;
}

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // ---- registration (call from constructors) ----
  Tensor& register_parameter(const std::string& name, Tensor t, bool requires_grad = true) {
    check_new_name(name);
    if (requires_grad && is_floating(t.dtype())) t.requires_grad_(true);
    params_.emplace_back(name, std::move(t));
    return params_.back().second;
  }
  // Persistent buffers are part of state_dict (running statistics); others are not.
  Tensor& register_buffer(const std::string& name, Tensor t, bool persistent = true) {
    check_new_name(name);
    buffers_.push_back({name, std::move(t), persistent});
    return buffers_.back().tensor;
  }
  // An empty name registers an inline child: its tensors appear without a prefix, at this module's level
  // (CLIP checkpoints keep the text tower's tensors at the top level next to "visual.*").
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    if (!name.empty()) check_new_name(name);
    MC_CHECK(m, "register_module: '", name, "' is null");
    children_.emplace_back(name, m);
    return m;
  }

  // ---- traversal, in registration order, with dotted names ----
  NamedTensors named_parameters(const std::string& prefix = "") const {
    NamedTensors out;
    visit(prefix, [&](const std::string& p, const Module& m) {
      for (auto& [n, t] : m.params_) out.emplace_back(p + n, t);
    });
    return out;
  }
  std::vector<Tensor> parameters() const {
    std::vector<Tensor> out;
    for (auto& [n, t] : named_parameters()) out.push_back(t);
    return out;
  }
  NamedTensors named_buffers(const std::string& prefix = "", bool persistent_only = false) const {
    NamedTensors out;
    visit(prefix, [&](const std::string& p, const Module& m) {
      for (auto& b : m.buffers_)
        if (b.persistent || !persistent_only) out.emplace_back(p + b.name, b.tensor);
    });
    return out;
  }
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
  // Every module of the tree (this one first, name ""), depth first.
  std::vector<std::pair<std::string, Module*>> named_modules() {
    std::vector<std::pair<std::string, Module*>> out;
    std::function<void(const std::string&, Module&)> rec = [&](const std::string& p, Module& m) {
      out.emplace_back(p, &m);
      for (auto& [n, c] : m.children_) rec(join(p, n), *c);
    };
    rec("", *this);
    return out;
  }
  std::shared_ptr<Module> child(const std::string& name) const {
    for (auto& [n, c] : children_)
      if (n == name) return c;
    fail("module has no child '", name, "'");
  }

  // ---- modes ----
  virtual void train(bool on = true) {
    training_ = on;
    for (auto& [n, c] : children_) c->train(on);
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Sets requires_grad on the parameters whose dotted name matches `pattern` (glob); returns the count.
  int64_t set_requires_grad(const std::string& pattern, bool on) {
    int64_t n = 0;
    for (auto& [name, t] : named_parameters())
      if (glob_match(pattern, name)) {
        Tensor h = t;
        h.requires_grad_(on);
        ++n;
      }
    return n;
  }
  int64_t freeze(const std::string& pattern = "*") { return set_requires_grad(pattern, false); }
  int64_t unfreeze(const std::string& pattern = "*") { return set_requires_grad(pattern, true); }

  int64_t num_parameters(bool trainable_only = false) const {
    int64_t n = 0;
    for (auto& [name, t] : named_parameters())
      if (!trainable_only || t.requires_grad()) n += t.numel();
    return n;
  }

  void zero_grad() {
    for (auto& [n, t] : named_parameters()) {
      Tensor h = t;
      h.set_grad(Tensor());
    }
  }

  // ---- state dict ----
  NamedTensors state_dict() const {
    NamedTensors out = named_parameters();
    NamedTensors b = named_buffers("", true);
    out.insert(out.end(), b.begin(), b.end());
    std::map<std::string, int> seen;
    for (auto& [n, t] : out) MC_CHECK(seen[n]++ == 0, "state_dict: two tensors are named '", n, "'");
    return out;
  }

  // Copies matching tensors into this module's parameters and buffers (converting dtype and device).
  // strict: any missing, unexpected or shape-mismatched key throws mc::Error listing them all, and nothing
  // is modified. Non-strict: loads what matches and returns the report.
  LoadReport load_state_dict(const NamedTensors& sd, bool strict = true) {
    return load_named(state_dict(), sd, strict, "load_state_dict");
  }

  // Moves every parameter and buffer (floating buffers also change dtype in to(DType)).
  void to(Device device) {
    for_each_tensor([&](Tensor& t) { t.set_data(t.detach().to(device)); });
  }
  void to(DType dtype) {
    for_each_tensor([&](Tensor& t) {
      if (is_floating(t.dtype())) t.set_data(detail::cast(t.detach(), dtype));
    });
  }

 private:
  struct Buffer {
    std::string name;
    Tensor tensor;
    bool persistent;
  };
  static std::string join(const std::string& prefix, const std::string& name) {
    if (prefix.empty()) return name;
    return name.empty() ? prefix : prefix + "." + name;
  }
  void check_new_name(const std::string& name) const {
    MC_CHECK(!name.empty() && name.find('.') == std::string::npos, "module: invalid name '", name, "'");
    for (auto& [n, t] : params_) MC_CHECK(n != name, "module: '", name, "' is already registered");
    for (auto& b : buffers_) MC_CHECK(b.name != name, "module: '", name, "' is already registered");
    for (auto& [n, c] : children_) MC_CHECK(n != name, "module: '", name, "' is already registered");
  }
  template <class F>
  void visit(const std::string& prefix, F&& f) const {
    f(prefix.empty() ? prefix : prefix + ".", *this);
    for (auto& [n, c] : children_) c->visit(join(prefix, n), f);
  }
  template <class F>
  void for_each_tensor(F&& f) {
    for (auto& [n, t] : params_) f(t);
    for (auto& b : buffers_) f(b.tensor);
    for (auto& [n, c] : children_) c->for_each_tensor(f);
  }

  NamedTensors params_;
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace mc::nn
