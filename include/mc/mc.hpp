// mc.hpp — the engine in one include.
//
// mc is a header-only tensor engine with reverse-mode autograd. A short tour:
//
//   #include "mc/mc.hpp"
//   mc::manual_seed(0);
//   mc::Tensor x = mc::randn({4, 3});                       // f32 on the CPU
//   mc::Tensor w = mc::randn({2, 3}).requires_grad_();      // a leaf that collects .grad()
//   mc::Tensor loss = mc::mean(mc::relu(mc::linear(x, w)));
//   loss.backward();                                         // w.grad() is [2, 3]
//   { mc::NoGradGuard ng; mc::add_(w, w.grad(), -0.1); }     // an SGD step by hand
//
// Layers (each folder's headers start with a comment saying what they define):
//   core/      dtype, shape, device, storage + allocators, Tensor, random (Philox), thread pool, Backend
//   cpu/       the CPU backend: one header per kernel family, the reference for every other backend
//   ops/       differentiable ops: checks, broadcasting, dtype promotion, autograd recording
//   autograd/  the tape (Node, NoGradGuard), backward(), gradcheck()
//   nn/        Module with PyTorch state_dict names, layers, init
//   optim/     SGD, Adam, AdamW, Adamax, clipping, LR schedules
//   io/        files (mmap, atomic writes), safetensors, inflate
//
// The layers above the engine have their own umbrella headers: "mc/models/models.hpp" (model cards, the
// encoders, DualEncoder, checkpoint conversion), "mc/data/datasets.hpp" + "mc/data/loader.hpp" (MedMNIST,
// VQA-RAD, SLAKE, ROCO, the threaded loader), "mc/nn/lora.hpp", "mc/tasks/metrics.hpp", "mc/tasks/ban.hpp";
// readers for other formats live in io/ (torch_load.hpp, npy.hpp, zip.hpp, image.hpp).
#pragma once
#include "mc/autograd/engine.hpp"
#include "mc/autograd/gradcheck.hpp"
#include "mc/core/backend.hpp"
#include "mc/core/parallel.hpp"
#include "mc/core/random.hpp"
#include "mc/cpu/backend.hpp"
#include "mc/ops/attention.hpp"
#include "mc/ops/conv.hpp"
#include "mc/ops/elementwise.hpp"
#include "mc/ops/factory.hpp"
#include "mc/ops/linalg.hpp"
#include "mc/ops/nn.hpp"
#include "mc/ops/norm.hpp"
#include "mc/ops/print.hpp"
#include "mc/io/safetensors.hpp"
#include "mc/ops/reduce.hpp"
#include "mc/ops/shape.hpp"
#include "mc/ops/view.hpp"
#include "mc/nn/layers.hpp"
#include "mc/nn/module.hpp"
#include "mc/optim/optimizer.hpp"
#include "mc/optim/schedule.hpp"
