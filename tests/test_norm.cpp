// Tests for layer_norm and batch_norm: forward values and running statistics against PyTorch
// (tools/ref_norm.py), f64 gradchecks, cross-dtype and multithreaded consistency, and argument errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "mc/mc.hpp"

using mc::DType;
using mc::Shape;
using mc::Tensor;

namespace {

// Reference values from tools/ref_norm.py (PyTorch, f32 unless the name says otherwise).
const std::vector<float> ln_affine = {-1.1517576f, -0.36256957f, 0.74180722f,  1.8407983f,   2.6760404f,   1.3960689f,
                                      1.8039365f,  -0.12949403f, -0.59072971f, -1.1363175f,  1.0327564f,   0.79504406f,
                                      0.82104021f, 1.5070636f,   -2.441278f,   -1.0168526f,  -0.46593088f, 0.51912427f,
                                      1.7359582f,  2.9473047f,   2.0719697f,   -0.25799894f, 0.21632028f,  0.095042318f,
                                      -0.6510613f, 1.3257989f,   1.3420109f,   1.1641743f,   -1.1877806f,  -1.2549415f};
const std::vector<float> ln_gx = {
    0.025974825f, 0.012313217f, -0.061271623f, -0.070248947f, 0.093232661f, -0.049740404f, 0.33805263f,  -0.89566696f,
    -0.16023785f, 0.76759255f,  -3.1151223f,   -0.77747107f,  1.3925972f,   2.9139466f,    -0.41394854f, -0.1286183f,
    0.085135758f, 0.1170308f,   0.022498369f,  -0.096046269f, 0.38123322f,  -0.99019575f,  -1.1505194f,  -0.13666534f,
    1.896148f,    -0.72053009f, 0.032925367f,  0.98487794f,   -0.50627637f, 0.20900333f};
const std::vector<float> ln_gw = {0.55395067f, 1.6109693f, 1.6079816f, 0.94085097f, -3.3047101f};
const std::vector<float> ln_gb = {2.9838786f, 2.7703238f, 2.6690617f, 2.666729f, 2.7365716f};
const std::vector<float> ln_2d_noaffine = {
    -1.8917023f,  -0.68720555f, 0.21936634f,  0.75728428f,  0.90571564f,  0.69654167f,  2.1256747f,   0.14940904f,
    -0.24543764f, -0.56795192f, -0.74367571f, -0.71801853f, -0.74673241f, -0.15718774f, -1.2919186f,  -0.30635273f,
    0.74486232f,  1.7573295f,   0.26971287f,  1.0222292f,   1.4658843f,   -0.66269785f, -0.84252918f, -1.2526004f};
const std::vector<float> ln_bf16 = {-1.15625f,   -0.36132812f, 0.7421875f, 1.84375f,    2.671875f,    1.3984375f,
                                    1.8046875f,  -0.12988281f, -0.59375f,  -1.140625f,  1.0390625f,   0.796875f,
                                    0.81640625f, 1.5078125f,   -2.453125f, -1.015625f,  -0.46289062f, 0.51953125f,
                                    1.7421875f,  2.953125f,    2.078125f,  -0.2578125f, 0.22558594f,  0.08984375f,
                                    -0.65625f,   1.328125f,    1.34375f,   1.1640625f,  -1.1953125f,  -1.2578125f};
const std::vector<float> ln_bf16_f32param = {
    -1.1484375f,  -0.36328125f, 0.7421875f, 1.8359375f, 2.671875f,   1.3984375f,   1.8046875f, -0.12890625f,
    -0.58984375f, -1.1328125f,  1.03125f,   0.796875f,  0.81640625f, 1.5078125f,   -2.4375f,   -1.015625f,
    -0.46484375f, 0.51953125f,  1.734375f,  2.953125f,  2.078125f,   -0.25976562f, 0.2265625f, 0.090820312f,
    -0.65234375f, 1.328125f,    1.34375f,   1.1640625f, -1.1875f,    -1.25f};
const std::vector<float> bn_train1 = {
    -2.2203448f,   -1.1315173f,  -0.15035835f, 0.63003582f,   1.1437417f,    1.3609308f,    3.6014903f,   1.4853357f,
    1.0707655f,    0.60796791f,  0.19518651f,  -0.076104701f, -0.49489343f,  -0.26215899f,  -1.8656337f,  -1.0454172f,
    -0.016943406f, 1.12208f,     -0.23760726f, 0.74062937f,   1.5166076f,    -0.028218828f, 0.1834812f,   0.10953376f,
    2.2630863f,    1.8467587f,   1.3839951f,   0.97303373f,   -1.1364251f,   -1.1894567f,   -1.4868147f,  -0.93884665f,
    -0.11406241f,  0.91739863f,  2.0574243f,   1.0472962f,    -0.42167249f,  0.3498674f,    0.85293955f,  1.0591542f,
    0.98030055f,   0.66675031f,  0.78120828f,  0.31851184f,   -0.090597935f, -0.35514393f,  -0.40371519f, -0.1941316f,
    -0.011964628f, -1.3285495f,  -0.29413494f, 0.84685439f,   1.9814824f,    2.9976735f,    1.2362555f,   1.733996f,
    -0.11849108f,  -0.20223358f, -0.51941878f, -0.98741806f,  1.094575f,     0.68734795f,   0.42621136f,  -1.4594131f,
    -1.2448951f,   -0.76519078f, -0.39705339f, 0.6402809f,    1.7821951f,    2.915628f,     1.782753f,    2.5797772f};
const std::vector<float> bn_train2 = {
    0.90766424f,  1.1100481f,   1.1051937f,  0.91458458f, 0.58484477f,  0.18142925f,   2.5545704f,   -0.42552492f,
    -0.81456876f, -0.80541801f, -0.3550379f, 0.51988775f, -2.361357f,   -0.96819681f,  -1.6956781f,  -0.31236932f,
    0.84318793f,  1.6570107f,   1.5705978f,  1.5620441f,  1.3683819f,   -0.040474255f, -0.44455454f, -0.84546477f,
    0.53952867f,  0.15709209f,  0.17415982f, 0.63269484f, -0.77487576f, 0.45588839f,   -2.2007089f,  -0.734577f,
    0.64577931f,  1.7959512f,   2.6026845f,  0.80547374f, 0.94170892f,  0.74500936f,   0.41130418f,  0.0065850732f,
    -0.39354506f, -0.71410418f, -1.1608951f, -1.1358963f, -0.66921246f, 0.22026575f,   1.4564248f,   2.9162297f,
    0.2264948f,   -0.58988374f, 0.55486387f, 1.3544842f,  1.7431681f,   1.7107255f,    1.1987121f,   0.86305833f,
    -0.61939603f, -1.0187203f,  -1.3371639f, -1.5108007f, -0.15601538f, 0.31881061f,   1.2155262f,   0.16725278f,
    1.6298013f,   3.1597104f,   0.36810634f, 1.5073907f,  2.299876f,    2.6807182f,    0.44705534f,  0.034173775f};
const std::vector<float> bn_rm = {0.26318935f, -0.087945439f, 0.19974282f};
const std::vector<float> bn_rv = {0.99645752f, 0.9420898f, 0.96999556f};
const std::vector<float> bn_eval = {
    0.030032314f,  0.7148183f,   1.3318893f,   1.8226951f,  2.1457753f,   2.2823699f,   3.4530272f,   1.4807005f,
    1.0943072f,    0.66296446f,  0.27823842f,  0.02538594f, -0.39412013f, -0.17938811f, -1.6588312f,  -0.90205991f,
    0.046859622f,  1.0977776f,   1.2770166f,   1.8922497f,  2.3802783f,   1.4087052f,   1.5418478f,   1.4953407f,
    2.20559f,      1.8175589f,   1.3862476f,   1.0032181f,  -0.96286815f, -1.0122952f,  -1.3093145f,  -0.80373275f,
    -0.042747062f, 0.90892863f,  1.9607714f,   1.0287784f,  1.1612542f,   1.6464914f,   1.9628838f,   2.0925765f,
    2.0429838f,    1.8457856f,   0.82443029f,  0.39318174f, 0.011877769f, -0.23468794f, -0.27995798f, -0.084619068f,
    0.051453281f,  -1.1632915f,  -0.20889066f, 0.84384114f, 1.8907037f,   2.8282907f,   2.2039592f,   2.5169983f,
    1.3519312f,    1.2992638f,   1.0997796f,   0.80544519f, 1.1164986f,   0.73694932f,  0.49356127f,  -1.2639036f,
    -1.0639658f,   -0.61686528f, -0.30384818f, 0.65324652f, 1.7068316f,   2.7525914f,   1.7073463f,   2.4427192f};
const std::vector<float> bn2d_train = {0.25960171f, 0.91761953f,  1.2444849f,   1.2657826f,   1.3963158f,
                                       1.2026843f,  0.77917063f,  -0.69951302f, -0.76084226f, -1.3363492f,
                                       -1.2631361f, -0.88812518f, -0.96820581f, -0.35128599f, -0.7982018f};
const std::vector<float> bn2d_rm = {0.55545509f, 0.50894785f, 0.46366581f};
const std::vector<float> bn2d_rv = {1.8408554f, 1.8329458f, 1.9508398f};
const std::vector<float> bnl_train = {
    0.12842236f, 1.4283679f,  -0.7446751f,  -0.68597084f, 1.6156262f,    0.18283294f,  -1.1681256f, 0.57663351f,
    1.8026477f,  -1.0158858f, 0.028139459f, 2.4818285f,   -0.052693516f, -0.89880162f, 1.5358137f,  1.2506111f,
    -1.369362f,  0.81579489f, 2.7519763f,   -0.66548818f, -0.46616665f,  2.1642275f,   0.76694715f, -1.2584155f,
    0.69718009f, 1.1782231f,  -0.95922989f, -0.10123969f, 1.1306497f,    -0.24542306f, -0.8243416f, 1.0317307f,
    1.3075292f,  -1.0554895f, 0.82821912f,  1.5867095f,   -0.50446236f,  -0.24841082f, 1.9122323f,  0.67587817f,
    -1.1020789f, 1.6944133f,  1.4099487f,   -0.97788906f, 0.45758292f,   2.3060796f,   0.10361554f, -0.6960482f};
const std::vector<float> bnl_rv = {1.3775823f, 1.3656776f, 1.3461021f};
const std::vector<float> bnl_gx = {
    -0.18613116f, 0.11354402f,  -0.058697723f, -0.058521152f, 0.3185387f,  -0.023809072f, -0.0072580483f,
    -0.2250084f,  0.087525584f, 0.042614296f,  -0.05568983f,  0.30649012f, 0.032688189f,  0.08450789f,
    -0.37763464f, 0.08835499f,  0.015820842f,  -0.17412353f,  0.31280431f, 0.022473691f,  0.018768992f,
    -0.55787295f, 0.086864106f, 0.0962497f,    -0.12121059f,  0.18963253f, 0.10993095f,   0.047933292f,
    -0.38916886f, 0.11866647f,  0.14151654f,   -0.17399782f,  0.22858432f, 0.26624617f,   0.033681072f,
    -0.58317792f, 0.25247324f,  0.2362581f,    -0.32737017f,  0.26259124f, 0.27293819f,   -0.066321835f,
    -0.76143706f, 0.28415555f,  0.19107065f,   -0.48001692f,  0.30615699f, 0.33203086f};
const std::vector<float> bnl_gw = {-47.511196f, -42.752644f, -47.557251f};
const std::vector<float> bnl_gb = {38.961109f, 48.069725f, 55.768517f};
const std::vector<float> bn_bf16 = {
    -2.21875f,     -1.1328125f, -0.14550781f, 0.6328125f,    1.1484375f,    1.3515625f,   3.59375f,     1.484375f,
    1.0703125f,    0.609375f,   0.19628906f,  -0.074707031f, -0.49609375f,  -0.26171875f, -1.859375f,   -1.046875f,
    -0.016601562f, 1.1171875f,  -0.23730469f, 0.734375f,     1.515625f,     -0.03125f,    0.18652344f,  0.10595703f,
    2.265625f,     1.8515625f,  1.390625f,    0.97265625f,   -1.140625f,    -1.1953125f,  -1.4921875f,  -0.9375f,
    -0.11376953f,  0.91796875f, 2.0625f,      1.046875f,     -0.41992188f,  0.34570312f,  0.8515625f,   1.0546875f,
    0.98828125f,   0.66796875f, 0.78125f,     0.31835938f,   -0.090332031f, -0.35546875f, -0.40039062f, -0.19335938f,
    -0.012084961f, -1.328125f,  -0.29492188f, 0.84375f,      1.984375f,     3.f,          1.2421875f,   1.7421875f,
    -0.12255859f,  -0.203125f,  -0.5234375f,  -0.98828125f,  1.09375f,      0.6875f,      0.42578125f,  -1.4609375f,
    -1.2421875f,   -0.765625f,  -0.39648438f, 0.640625f,     1.78125f,      2.921875f,    1.78125f,     2.578125f};
const std::vector<float> bn_bf16_rv = {0.94121665f, 0.98535639f, 0.98617595f};

// The inputs of tools/ref_norm.py: value i = sin(0.37 i + phase) * scale + 0.2 (i % 7), rounded to f32.
Tensor gen(const Shape& shape, double phase = 0.0, double scale = 1.5) {
  std::vector<float> v(size_t(mc::numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(std::sin(0.37 * double(i) + phase) * scale + 0.2 * double(i % 7));
  return mc::from_vector(v, shape);
}

// Compares every `every`-th element of t (read as f32) with ref.
void check_close(const Tensor& t, const std::vector<float>& ref, double tol, size_t every = 1) {
  std::vector<float> got = t.to_vector<float>();
  REQUIRE((got.size() + every - 1) / every == ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    INFO("element " << i * every << ": got " << got[i * every] << ", expected " << ref[i]);
    CHECK(std::fabs(double(got[i * every]) - double(ref[i])) <= tol * (1.0 + std::fabs(double(ref[i]))));
  }
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

void require_gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& in) {
  auto r = mc::gradcheck(f, in);
  INFO(r.message);
  REQUIRE(r.ok);
}

Tensor rnd(const Shape& s, uint64_t seed, double shift = 0.0) {
  mc::Generator g(seed);
  Tensor t = mc::randn(s, &g, DType::F64);
  return shift != 0.0 ? t + shift : t;
}

}  // namespace

TEST_CASE("layer_norm forward matches torch", "[norm]") {
  Tensor x = gen({2, 3, 5});
  Tensor w = gen({5}, 1.0, 0.5) + 0.5, b = gen({5}, 2.0, 0.3);
  check_close(mc::layer_norm(x, {5}, w, b), ln_affine, 2e-6);
  check_close(mc::layer_norm(gen({4, 2, 3}, 0.5), {2, 3}, {}, {}, 1e-3), ln_2d_noaffine, 2e-6);
  // non-contiguous input: the same values through a transposed copy
  Tensor xt = x.reshape({6, 5}).t().contiguous().t();
  REQUIRE(!xt.is_contiguous());
  check_close(mc::layer_norm(xt, {5}, w, b), ln_affine, 2e-6);
}

TEST_CASE("layer_norm bf16 and f16 inputs", "[norm]") {
  Tensor x = gen({2, 3, 5});
  Tensor w = gen({5}, 1.0, 0.5) + 0.5, b = gen({5}, 2.0, 0.3);
  Tensor yb = mc::layer_norm(x.to(DType::BF16), {5}, w.to(DType::BF16), b.to(DType::BF16));
  REQUIRE(yb.dtype() == DType::BF16);
  check_close(yb, ln_bf16, 1e-2);
  Tensor ym = mc::layer_norm(x.to(DType::BF16), {5}, w, b);  // f32 parameters with a bf16 input
  REQUIRE(ym.dtype() == DType::BF16);
  check_close(ym, ln_bf16_f32param, 1e-2);
  Tensor yh = mc::layer_norm(x.to(DType::F16), {5}, w.to(DType::F16), b.to(DType::F16));
  REQUIRE(yh.dtype() == DType::F16);
  check_close(yh, ln_affine, 3e-3);
}

TEST_CASE("layer_norm gradients match torch", "[norm]") {
  Tensor x = gen({2, 3, 5}).requires_grad_();
  Tensor w = (gen({5}, 1.0, 0.5) + 0.5).requires_grad_(), b = gen({5}, 2.0, 0.3).requires_grad_();
  Tensor v = gen({2, 3, 5}, 3.0, 1.0);
  mc::sum(mc::layer_norm(x, {5}, w, b) * v).backward();
  check_close(x.grad(), ln_gx, 1e-5);
  check_close(w.grad(), ln_gw, 1e-5);
  check_close(b.grad(), ln_gb, 1e-5);
}

TEST_CASE("layer_norm gradcheck", "[norm][grad]") {
  SECTION("affine, one normalized dim") {
    require_gradcheck([](const std::vector<Tensor>& in) { return mc::layer_norm(in[0], {7}, in[1], in[2]); },
                      {rnd({3, 7}, 1), rnd({7}, 2), rnd({7}, 3)});
  }
  SECTION("no affine, two normalized dims, 3-d input") {
    require_gradcheck(
        [](const std::vector<Tensor>& in) {
          return mc::layer_norm(in[0], {3, 5});
        },
        {rnd({2, 3, 5}, 4, 0.7)});
  }
  SECTION("weight only / bias only") {
    require_gradcheck([](const std::vector<Tensor>& in) { return mc::layer_norm(in[0], {5}, in[1]); },
                      {rnd({3, 5}, 5), rnd({5}, 6)});
    require_gradcheck([](const std::vector<Tensor>& in) { return mc::layer_norm(in[0], {5}, {}, in[1]); },
                      {rnd({3, 5}, 7), rnd({5}, 8)});
  }
  SECTION("non-contiguous input and weight") {
    require_gradcheck(
        [](const std::vector<Tensor>& in) {
          return mc::layer_norm(in[0].transpose(0, 1), {3, 5}, in[1].transpose(0, 1), in[2]);
        },
        {rnd({3, 2, 5}, 9), rnd({5, 3}, 10), rnd({3, 5}, 11)});
  }
  SECTION("single column, large eps") {
    require_gradcheck([](const std::vector<Tensor>& in) { return mc::layer_norm(in[0], {1}, in[1], in[2], 0.5); },
                      {rnd({4, 1}, 12), rnd({1}, 13), rnd({1}, 14)});
  }
  SECTION("result used twice (gradient accumulation)") {
    require_gradcheck(
        [](const std::vector<Tensor>& in) {
          Tensor y = mc::layer_norm(in[0], {9}, in[1], in[2]);
          return y * y + mc::layer_norm(y, {9});
        },
        {rnd({5, 9}, 15), rnd({9}, 16), rnd({9}, 17)});
  }
}

TEST_CASE("layer_norm large input: f32 agrees with f64, all gradients", "[norm]") {
  mc::Generator g(21);
  Tensor x = mc::randn({300, 7, 67}, &g) * 3.0 + 2.0, w = mc::randn({67}, &g), b = mc::randn({67}, &g);
  Tensor gy = mc::randn({300, 7, 67}, &g);
  Tensor xs[2], ws[2], bs[2], ys[2];
  for (int k = 0; k < 2; ++k) {
    const DType dt = k ? DType::F64 : DType::F32;
    xs[k] = x.to(dt).detach().requires_grad_();
    ws[k] = w.to(dt).detach().requires_grad_();
    bs[k] = b.to(dt).detach().requires_grad_();
    ys[k] = mc::layer_norm(xs[k], {67}, ws[k], bs[k]);
    ys[k].backward(gy.to(dt));
  }
  CHECK(max_abs_diff(ys[0], ys[1]) < 2e-5);
  CHECK(max_abs_diff(xs[0].grad(), xs[1].grad()) < 2e-5);
  CHECK(max_abs_diff(ws[0].grad(), ws[1].grad()) < 2e-3);  // sums over 2100 rows
  CHECK(max_abs_diff(bs[0].grad(), bs[1].grad()) < 2e-3);
}

TEST_CASE("layer_norm bf16 backward is close to f32", "[norm]") {
  mc::Generator g(22);
  Tensor x = mc::randn({6, 33}, &g), w = mc::randn({33}, &g), b = mc::randn({33}, &g), gy = mc::randn({6, 33}, &g);
  Tensor xf = x.requires_grad_(), wf = w.requires_grad_(), bf = b.requires_grad_();
  mc::layer_norm(xf, {33}, wf, bf).backward(gy);
  Tensor xb = x.detach().to(DType::BF16).requires_grad_(), wb = w.detach().requires_grad_();
  Tensor yb = mc::layer_norm(xb, {33}, wb);  // f32 weight, bf16 input
  yb.backward(gy.to(DType::BF16));
  REQUIRE(xb.grad().dtype() == DType::BF16);
  REQUIRE(wb.grad().dtype() == DType::F32);
  CHECK(max_abs_diff(xb.grad(), xf.grad()) < 0.1);
  CHECK(max_abs_diff(wb.grad(), wf.grad()) < 0.1);
}

TEST_CASE("layer_norm errors", "[norm]") {
  Tensor x = gen({2, 3, 5});
  REQUIRE_THROWS_AS(mc::layer_norm(x, {3}), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(x, {2, 5}), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(x, {1, 2, 3, 5}), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(x, {}), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(x, {5}, mc::ones({4})), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(x, {3, 5}, mc::ones({5})), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(x, {5}, mc::ones({5}), mc::zeros({1, 5})), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(x, {5}, mc::ones({5}, DType::F64)), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(x.to(DType::BF16), {5}, mc::ones({5}), mc::zeros({5}, DType::BF16)), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(mc::ones({2, 5}, DType::I64), {5}), mc::Error);
  REQUIRE_THROWS_AS(mc::layer_norm(x, {5}, {}, {}, -1.0), mc::Error);
  try {
    mc::layer_norm(x, {3});
    FAIL("no error");
  } catch (const mc::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("layer_norm") && Catch::Contains("[2, 3, 5]"));
  }
}

TEST_CASE("batch_norm training and running statistics match torch", "[norm]") {
  SECTION("4-d, two training steps, then eval") {
    Tensor w = gen({3}, 1.0, 0.5) + 0.5, b = gen({3}, 2.0, 0.3);
    Tensor rm = mc::zeros({3}), rv = mc::ones({3});
    check_close(mc::batch_norm(gen({4, 3, 2, 3}), rm, rv, w, b, true), bn_train1, 2e-6);
    check_close(mc::batch_norm(gen({4, 3, 2, 3}, 1.3, 2.0), rm, rv, w, b, true), bn_train2, 2e-6);
    check_close(rm, bn_rm, 2e-6);
    check_close(rv, bn_rv, 2e-6);
    Tensor rm0 = rm.clone(), rv0 = rv.clone();
    Tensor ye = mc::batch_norm(gen({4, 3, 2, 3}), rm, rv, w, b, false);
    check_close(ye, bn_eval, 2e-6);
    CHECK(max_abs_diff(rm, rm0) == 0);  // eval leaves the running statistics alone
    CHECK(max_abs_diff(rv, rv0) == 0);
  }
  SECTION("2-d, no affine, momentum 0.3") {
    Tensor rm = mc::full({3}, 0.5), rv = mc::full({3}, 2.0);
    check_close(mc::batch_norm(gen({5, 3}, 0.7), rm, rv, {}, {}, true, 0.3), bn2d_train, 2e-6);
    check_close(rm, bn2d_rm, 2e-6);
    check_close(rv, bn2d_rv, 2e-6);
  }
  SECTION("long rows [2, 3, 40] with gradients") {
    Tensor x = gen({2, 3, 40}, 0.2, 3.0).requires_grad_();
    Tensor w = (gen({3}, 1.0, 0.5) + 0.5).requires_grad_(), b = gen({3}, 2.0, 0.3).requires_grad_();
    Tensor rm = mc::zeros({3}), rv = mc::ones({3});
    Tensor y = mc::batch_norm(x, rm, rv, w, b, true);
    check_close(y, bnl_train, 2e-6, 5);
    check_close(rv, bnl_rv, 2e-6);
    mc::sum(y * gen({2, 3, 40}, 3.0, 1.0)).backward();
    check_close(x.grad(), bnl_gx, 1e-5, 5);
    check_close(w.grad(), bnl_gw, 1e-5);
    check_close(b.grad(), bnl_gb, 1e-5);
  }
  SECTION("bf16 input with f32 parameters and running statistics") {
    Tensor w = gen({3}, 1.0, 0.5) + 0.5, b = gen({3}, 2.0, 0.3);
    Tensor rm = mc::zeros({3}), rv = mc::ones({3});
    Tensor y = mc::batch_norm(gen({4, 3, 2, 3}).to(DType::BF16), rm, rv, w, b, true);
    REQUIRE(y.dtype() == DType::BF16);
    check_close(y, bn_bf16, 1e-2);
    check_close(rv, bn_bf16_rv, 1e-5);
  }
  SECTION("without running statistics; strided running statistics are updated in place") {
    Tensor w = gen({3}, 1.0, 0.5) + 0.5, b = gen({3}, 2.0, 0.3);
    check_close(mc::batch_norm(gen({4, 3, 2, 3}), {}, {}, w, b, true), bn_train1, 2e-6);
    Tensor buf = mc::zeros({3, 2});
    Tensor rm = buf.select(1, 0), rv = buf.select(1, 1);
    {
      mc::NoGradGuard ng;
      mc::fill_(rv, 1.0);
    }
    REQUIRE(!rm.is_contiguous());
    mc::batch_norm(gen({4, 3, 2, 3}), rm, rv, w, b, true);
    mc::batch_norm(gen({4, 3, 2, 3}, 1.3, 2.0), rm, rv, w, b, true);
    check_close(rm, bn_rm, 2e-6);
    check_close(rv, bn_rv, 2e-6);
  }
  SECTION("non-contiguous input") {
    Tensor w = gen({3}, 1.0, 0.5) + 0.5, b = gen({3}, 2.0, 0.3);
    Tensor x = gen({4, 3, 2, 3}).permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2});
    REQUIRE(!x.is_contiguous());
    check_close(mc::batch_norm(x, {}, {}, w, b, true), bn_train1, 2e-6);
  }
}

TEST_CASE("batch_norm gradcheck", "[norm][grad]") {
  auto bn = [](bool training, bool affine, bool running) {
    return [=](const std::vector<Tensor>& in) {
      const int64_t C = in[0].size(1);
      Tensor rm = running ? rnd({C}, 99) * 0.1 : Tensor();
      Tensor rv = running ? rnd({C}, 98) * 0.1 + 1.0 : Tensor();
      return mc::batch_norm(in[0], rm, rv, affine ? in[1] : Tensor(), affine ? in[2] : Tensor(), training);
    };
  };
  for (bool training : {true, false}) {
    DYNAMIC_SECTION("training " << training) {
      require_gradcheck(bn(training, true, true), {rnd({5, 3}, 31), rnd({3}, 32), rnd({3}, 33)});        // 2-d
      require_gradcheck(bn(training, true, true), {rnd({2, 3, 3, 5}, 34), rnd({3}, 35), rnd({3}, 36)});  // 4-d
      require_gradcheck(bn(training, false, true), {rnd({3, 2, 5}, 37, 1.5)});                           // no affine
      require_gradcheck(bn(training, true, true), {rnd({2, 2, 33}, 38), rnd({2}, 39), rnd({2}, 40)});    // S = 33
      require_gradcheck(bn(training, true, true), {rnd({2, 2, 65}, 44), rnd({2}, 45), rnd({2}, 46)});    // S = 65
      require_gradcheck(bn(training, false, training ? false : true), {rnd({3, 1, 7}, 41)});             // one channel
      require_gradcheck(
          [training](const std::vector<Tensor>& in) {  // non-contiguous x, weight only
            Tensor rm = mc::zeros({3}, DType::F64), rv = mc::ones({3}, DType::F64);
            return mc::batch_norm(in[0].permute({0, 3, 1, 2}), rm, rv, in[1], {}, training);
          },
          {rnd({2, 3, 5, 3}, 42), rnd({3}, 43)});
    }
  }
}

TEST_CASE("batch_norm large input: f32 agrees with f64", "[norm]") {
  mc::Generator g(23);
  // [N, C] rows, per-channel segments, short segments, and wide rows split by columns
  for (Shape s : {Shape{257, 19}, Shape{6, 5, 9, 11}, Shape{96, 4, 3}, Shape{40, 3, 20}, Shape{2, 700, 3}}) {
    INFO("shape " << mc::shape_str(s));
    const int64_t C = s[1];
    Tensor x = mc::randn(s, &g) * 2.0 + 5.0, w = mc::randn({C}, &g), b = mc::randn({C}, &g), gy = mc::randn(s, &g);
    Tensor xs[2], ws[2], bs[2], ys[2], rms[2], rvs[2];
    for (int k = 0; k < 2; ++k) {
      const DType dt = k ? DType::F64 : DType::F32;
      xs[k] = x.to(dt).detach().requires_grad_();
      ws[k] = w.to(dt).detach().requires_grad_();
      bs[k] = b.to(dt).detach().requires_grad_();
      rms[k] = mc::zeros({C}, dt);
      rvs[k] = mc::ones({C}, dt);
      ys[k] = mc::batch_norm(xs[k], rms[k], rvs[k], ws[k], bs[k], true, 0.2);
      ys[k].backward(gy.to(dt));
    }
    CHECK(max_abs_diff(ys[0], ys[1]) < 2e-5);
    CHECK(max_abs_diff(rms[0], rms[1]) < 2e-6);
    CHECK(max_abs_diff(rvs[0], rvs[1]) < 2e-6);
    CHECK(max_abs_diff(xs[0].grad(), xs[1].grad()) < 2e-5);
    CHECK(max_abs_diff(ws[0].grad(), ws[1].grad()) < 1e-4);
    CHECK(max_abs_diff(bs[0].grad(), bs[1].grad()) < 1e-4);
  }
}

TEST_CASE("batch_norm errors", "[norm]") {
  Tensor x = gen({4, 3, 2, 2});
  Tensor w = mc::ones({3}), b = mc::zeros({3}), rm = mc::zeros({3}), rv = mc::ones({3});
  REQUIRE_NOTHROW(mc::batch_norm(x, rm, rv, w, b, true));
  Tensor rm0 = rm.clone(), rv0 = rv.clone();
  REQUIRE_THROWS_AS(mc::batch_norm(x, rm, rv, mc::ones({4}), b, true), mc::Error);
  REQUIRE_THROWS_AS(mc::batch_norm(x, rm, rv, w, mc::zeros({3, 1}), true), mc::Error);
  REQUIRE_THROWS_AS(mc::batch_norm(x, mc::zeros({4}), rv, w, b, true), mc::Error);
  REQUIRE_THROWS_AS(mc::batch_norm(x, rm, mc::ones({2}), w, b, false), mc::Error);
  REQUIRE_THROWS_AS(mc::batch_norm(x, rm, {}, w, b, true), mc::Error);
  REQUIRE_THROWS_AS(mc::batch_norm(x, {}, {}, w, b, false), mc::Error);  // eval needs running stats
  REQUIRE_THROWS_AS(mc::batch_norm(gen({3}), {}, {}, {}, {}, true), mc::Error);
  REQUIRE_THROWS_AS(mc::batch_norm(mc::ones({4, 3}, DType::I32), {}, {}, {}, {}, true), mc::Error);
  REQUIRE_THROWS_AS(mc::batch_norm(x.to(DType::F64), rm, rv, {}, {}, true), mc::Error);  // f32 stats, f64 input
  REQUIRE_THROWS_AS(mc::batch_norm(x, rm, rv, w.to(DType::BF16), b, true), mc::Error);
  Tensor rg = mc::zeros({3}).requires_grad_();
  REQUIRE_THROWS_AS(mc::batch_norm(x, rg, rv, w, b, true), mc::Error);
  // one value per channel in training
  REQUIRE_THROWS_AS(mc::batch_norm(gen({1, 3}), rm, rv, w, b, true), mc::Error);
  REQUIRE_THROWS_AS(mc::batch_norm(gen({1, 3, 1, 1}), {}, {}, w, b, true), mc::Error);
  try {
    mc::batch_norm(gen({1, 3}), rm, rv, w, b, true);
    FAIL("no error");
  } catch (const mc::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("more than 1 value per channel") && Catch::Contains("[1, 3]"));
  }
  // failed calls leave the running statistics untouched; a batch of one is fine in eval mode
  CHECK(max_abs_diff(rm, rm0) == 0);
  CHECK(max_abs_diff(rv, rv0) == 0);
  REQUIRE_NOTHROW(mc::batch_norm(gen({1, 3, 1, 1}), rm, rv, w, b, false));
}

TEST_CASE("norm ops on empty inputs", "[norm]") {
  Tensor w = mc::ones({4}).requires_grad_(), b = mc::zeros({4}).requires_grad_();
  Tensor x = mc::zeros({0, 4}).requires_grad_();
  Tensor y = mc::layer_norm(x, {4}, w, b);
  REQUIRE(y.shape() == Shape{0, 4});
  mc::sum(y).backward();
  check_close(w.grad(), {0.f, 0.f, 0.f, 0.f}, 0);
  Tensor ye = mc::batch_norm(mc::zeros({0, 4}), mc::zeros({4}), mc::ones({4}), w, b, false);
  REQUIRE(ye.shape() == Shape{0, 4});
}
