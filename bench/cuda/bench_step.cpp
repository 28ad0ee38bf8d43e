// bench_step — whole training steps on the GPU, built from the engine's models: forward, cross-entropy,
// backward and AdamW, at the batch sizes of PyTorch's reference measurements.
//
// Usage: bench_step [--steps N] [--batch N] [NAME...]
//   cases: vit_b32_step_{f32,tf32,bf16} (ViT-B/32 image tower from weights/clip-vit-b32.json + an 11-class
//   linear head on the 768-d class token, batch 256, 224 px) and resnet50_step_{f32,tf32,bf16} (torchvision
//   ResNet-50 with an 11-class fc, batch 128). A NAME selects a case, a prefix (vit, resnet50) or a mode.
// bf16 runs the whole model in bf16 (parameters, activations and AdamW state: Module::to(DType::BF16)),
// which is lighter than PyTorch's autocast (f32 master weights); f32 / tf32 are full f32 models, tf32 with
// tensor-core GEMMs and convolutions. Labels stay on the CPU, as a data loader delivers them (cross_entropy
// reads them on the host; a device copy would make every step wait for the previous one).
// Output: one RESULT line per case (bench/cuda/bench_common.hpp) with images/s and the % of the dtype's
// dense peak the model's FLOPs reach (3x the forward FLOPs per image), plus the first and last loss.
#include <cstring>

#include "bench_common.hpp"
#include "mc/models/card.hpp"
#include "mc/models/resnet.hpp"
#include "mc/models/vit.hpp"

using namespace bench;

namespace {

Peaks P;

class ViTClassifier : public nn::Module {
 public:
  std::shared_ptr<models::VisionTransformer> visual;
  std::shared_ptr<nn::Linear> head;
  ViTClassifier(const models::ViTConfig& c, int64_t classes) {
    visual = register_module("visual", std::make_shared<models::VisionTransformer>(c));
    head = register_module("head", std::make_shared<nn::Linear>(c.output_dim > 0 ? c.output_dim : c.width, classes));
  }
  Tensor forward(const Tensor& x) { return head->forward(visual->forward(x)); }
};

// The image tower of CLIP ViT-B/32 from its model card (defaults if the card is missing), without the
// 512-d projection: the head reads the 768-d class token, as timm's vit_base_patch32_clip_224 does.
models::ViTConfig vit_b32_config() {
  models::ViTConfig c;
  try {
    c = models::ModelCard::load(std::string(MC_SOURCE_DIR) + "/weights/clip-vit-b32.json").vision.vit;
  } catch (const std::exception& e) {
    std::printf("# card not read (%s); using the built-in ViT-B/32 config\n", e.what());
  }
  c.output_dim = 0;
  return c;
}

// Forward FLOPs per image of the ViT (GEMMs, attention, patch embedding).
double vit_fwd_flops(const models::ViTConfig& c, int64_t classes) {
  const double W = double(c.width), L = double(c.layers), g = double(c.image_size / c.patch_size);
  const double T = 1 + g * g, hidden = W * c.mlp_ratio;
  const double per_token = 2 * (3 * W * W + W * W + 2 * W * hidden);  // qkv, out proj, fc1, fc2
  const double attn = 2 * 2 * T * T * W;                              // q k^T and p v
  const double patch = 2 * 3 * double(c.patch_size * c.patch_size) * W * g * g;
  return L * (T * per_token + attn) + patch + 2 * W * double(classes);
}

struct Mode {
  const char* tag;
  DType dt;
  bool tf32;
};
const Mode kModes[] = {{"f32", DType::F32, false}, {"tf32", DType::F32, true}, {"bf16", DType::BF16, true}};

double peak_for(const Mode& m) { return m.dt == DType::BF16 ? P.bf16_tflops : m.tf32 ? P.tf32_tflops : P.f32_tflops; }

// Times `steps` steps of (zero_grad, forward, cross-entropy, backward, AdamW) after 3 warm-up steps.
template <class M>
void run_step(const std::string& name, M& model, const Mode& mode, int64_t batch, int steps, double flops_per_image) {
  cuda::set_tf32(mode.tf32);
  model.to(mode.dt);
  model.to(Device::cuda());
  model.train();
  optim::ParamGroup g = optim::group_of(model, {});
  g.lr = 1e-5;
  g.weight_decay = 0.01;
  optim::AdamW opt({g});
  Generator gen(7);
  Tensor x = randn({batch, 3, 224, 224}, &gen, mode.dt, Device::cuda());
  std::vector<int64_t> lv(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) lv[size_t(i)] = (i * 7 + 3) % 11;
  Tensor y = from_vector(lv, {batch});  // on the CPU, as a loader delivers it
  Tensor loss;
  auto step = [&] {
    opt.zero_grad();
    loss = cross_entropy(model.forward(x), y);
    loss.backward();
    opt.step();
  };
  cuda::reset_peak_memory();
  step();
  const double first = loss.item<double>();
  const double ms = time_ms(step, 2, steps);
  const double last = loss.item<double>();
  const double ips = double(batch) * 1000.0 / ms;
  const double tflops = 3.0 * flops_per_image * ips / 1e12;
  std::printf("# %s: batch %lld, %d steps, loss %.4f -> %.4f, %.1f TFLOP/s (3x forward FLOPs)\n", name.c_str(),
              static_cast<long long>(batch), steps, first, last, tflops);
  print_result(name, ms, ips, "img/s", 100.0 * tflops / peak_for(mode), std::isfinite(last) ? "ok" : "FAIL(nan)");
  cuda::set_tf32(false);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> want;
  int steps = 10;
  int64_t batch_override = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc) batch_override = std::atoll(argv[++i]);
    else want.emplace_back(argv[i]);
  }
  if (!cuda::available()) {
    std::printf("SKIPPED: no CUDA device (%s)\n", cuda::device_name(0));
    return 77;
  }
  P = peaks();
  std::printf("# %s\n", cuda::device_name(0));
  int failed = 0;
  for (const Mode& m : kModes) {
    const std::string vit = std::string("vit_b32_step_") + m.tag;
    if (selected(want, vit, m.tag)) {
      try {
        const models::ViTConfig c = vit_b32_config();
        manual_seed(1);
        ViTClassifier model(c, 11);
        run_step(vit, model, m, batch_override ? batch_override : 256, steps, vit_fwd_flops(c, 11));
      } catch (const std::exception& e) {
        std::printf("# error in %s: %s\n", vit.c_str(), e.what());
        print_result(vit, NAN, NAN, "-", NAN, "ERROR");
        ++failed;
      }
      cuda::empty_cache();
    }
    const std::string rn = std::string("resnet50_step_") + m.tag;
    if (selected(want, rn, m.tag)) {
      try {
        models::ResNetConfig c = models::ResNetConfig::depth(50);
        c.num_classes = 11;
        manual_seed(2);
        models::ResNet model(c);
        // ResNet-50 at 224 px: 4.09 GMACs forward.
        run_step(rn, model, m, batch_override ? batch_override : 128, steps, 2 * 4.09e9);
      } catch (const std::exception& e) {
        std::printf("# error in %s: %s\n", rn.c_str(), e.what());
        print_result(rn, NAN, NAN, "-", NAN, "ERROR");
        ++failed;
      }
      cuda::empty_cache();
    }
  }
  return failed ? 1 : 0;
}
