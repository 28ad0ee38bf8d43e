// Tests for conv2d, max_pool2d, avg_pool2d and adaptive_avg_pool2d: forward values against PyTorch
// (tools/ref_conv.py), every code path against a naive double-precision convolution, gradchecks in f64,
// half types, and argument errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "mc/cpu/conv.hpp"  // kernel internals (buffer budget, direct kernel calls)
#include "mc/mc.hpp"

namespace {

using mc::DType;
using mc::Shape;
using mc::Tensor;

// Element i is sin(0.61 * i + 1.3 * seed) * scale, as in tools/ref_conv.py.
Tensor pattern(const Shape& shape, int seed, double scale = 1.0, DType dt = DType::F32) {
  std::vector<float> v(size_t(mc::numel(shape)));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(std::sin(0.61 * double(i) + 1.3 * seed) * scale);
  return mc::from_vector(v, shape).to(dt);
}

// Distinct values (a permutation of k / n), so that max pooling has no ties.
Tensor distinct(const Shape& shape, int64_t mult = 7919) {
  const int64_t n = mc::numel(shape);
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = double((i * mult) % n) / double(n) - 0.5;
  return mc::from_vector(v, shape);
}

void check_close(const Tensor& t, const std::vector<float>& ref, double atol, double rtol) {
  std::vector<float> v = t.to_vector<float>();
  REQUIRE(v.size() == ref.size());
  int bad = 0;
  for (size_t i = 0; i < v.size(); ++i)
    if (!(std::fabs(double(v[i]) - double(ref[i])) <= atol + rtol * std::fabs(double(ref[i])))) {
      if (bad++ < 5) UNSCOPED_INFO("element " << i << ": got " << v[i] << ", expected " << ref[i]);
    }
  CHECK(bad == 0);
}

void check_close(const Tensor& t, const std::vector<double>& ref, double tol_scale) {
  std::vector<double> v = t.to_vector<double>();
  REQUIRE(v.size() == ref.size());
  double mag = 1e-30;
  for (double r : ref) mag = std::max(mag, std::fabs(r));
  int bad = 0;
  for (size_t i = 0; i < v.size(); ++i)
    if (!(std::fabs(v[i] - ref[i]) <= tol_scale * mag)) {
      if (bad++ < 5) UNSCOPED_INFO("element " << i << ": got " << v[i] << ", expected " << ref[i]);
    }
  CHECK(bad == 0);
}

mc::Conv2dParams params(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh = 1, int64_t dw = 1,
                        int64_t groups = 1) {
  mc::Conv2dParams p;
  p.stride[0] = sh;
  p.stride[1] = sw;
  p.padding[0] = ph;
  p.padding[1] = pw;
  p.dilation[0] = dh;
  p.dilation[1] = dw;
  p.groups = groups;
  return p;
}

// Naive convolution in double: forward, and the gradients for an output gradient gy.
struct NaiveConv {
  Shape xs, ws;
  mc::Conv2dParams p;
  int64_t OH = 0, OW = 0;

  NaiveConv(Shape x, Shape w, mc::Conv2dParams pp) : xs(std::move(x)), ws(std::move(w)), p(pp) {
    OH = (xs[2] + 2 * p.padding[0] - p.dilation[0] * (ws[2] - 1) - 1) / p.stride[0] + 1;
    OW = (xs[3] + 2 * p.padding[1] - p.dilation[1] * (ws[3] - 1) - 1) / p.stride[1] + 1;
  }
  Shape out_shape() const { return {xs[0], ws[0], OH, OW}; }

  // Calls f(x index, w index, y index) for every multiply-add of the convolution.
  template <class F>
  void each(F f) const {
    const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], O = ws[0], Cg = ws[1], kh = ws[2], kw = ws[3];
    const int64_t Og = O / p.groups;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow)
            for (int64_t ci = 0; ci < Cg; ++ci)
              for (int64_t ki = 0; ki < kh; ++ki)
                for (int64_t kj = 0; kj < kw; ++kj) {
                  const int64_t ih = oh * p.stride[0] - p.padding[0] + ki * p.dilation[0];
                  const int64_t iw = ow * p.stride[1] - p.padding[1] + kj * p.dilation[1];
                  if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                  const int64_t c = (o / Og) * Cg + ci;
                  f(((n * C + c) * H + ih) * W + iw, ((o * Cg + ci) * kh + ki) * kw + kj,
                    ((n * O + o) * OH + oh) * OW + ow);
                }
  }
};

}  // namespace


namespace {
// Reference values from tools/ref_conv.py.
// conv2d
const std::vector<float> ref_conv_s2p1 = {-2.8590846f, -1.2237577f, 0.71289951f, -1.1243583f, 1.1222742f, 2.550488f, 1.8440275f, 2.6315522f, 0.32130533f, 1.8810949f, 0.66759771f, -3.3917136f, 1.3072011f, -1.1236122f, -4.2909465f, -2.3492398f, -4.052588f, -3.4848592f, -3.9956758f, -3.872031f, -0.22707605f, -1.6573946f, -1.2521722f, 1.0225585f, -2.0554235f, -0.17369729f, 2.4723434f, 1.5002177f, 1.7180963f, -0.5315426f, 0.91399962f, -0.05242312f, -3.0159247f, -2.5062399f, -1.8790441f, -1.1109555f, -1.1665967f, -1.4583828f, -2.1195068f, -2.6546812f, -1.2665728f, 1.4206176f, -0.16006744f, 1.1145685f, 1.7573943f, 2.450269f, 1.1375797f, -2.2484696f, -0.049083412f, 0.93153161f, 0.54149872f, 2.445137f, 2.2785397f, -1.0734659f, 1.5800002f, -0.46591103f, -3.724509f, -1.6104317f, -3.8955271f, -3.4002426f, -2.8884351f, -4.4480357f, -2.3919618f, -3.8066442f, -2.8480136f, 1.0893688f, -1.4987968f, 0.55440825f, 2.4377515f, 0.30875093f, 1.2092371f, 0.25508839f, 1.2050846f, 2.4809976f, -0.10382646f, 0.039387047f, -1.1810225f, -3.5258687f, -2.4346144f, -3.3594091f, -2.8257508f, -1.8594563f, -0.87724012f, 0.0079968572f, -1.6884682f, -1.9749389f, -0.29112706f, 0.91634506f, 1.7234795f, 1.1787679f, 2.1880383f, 1.4728844f, -1.1825893f, -0.45168418f, -2.7733026f, -3.0999703f};
const std::vector<float> ref_conv_d2 = {0.67856544f, 0.024539478f, -1.3664775f, -2.264601f, -1.6323371f, 1.4551477f, 2.7969241f, 3.4580152f, 2.8717866f, 1.5290765f, -2.4319973f, -3.0360408f, -1.5394254f, 0.51246673f, 1.1115962f, 0.62712681f, -0.19746795f, -2.1399601f, -3.3105602f, -2.4808245f, 1.2176279f, 2.062969f, 2.4415305f, 1.9394224f, 1.0647444f, -1.5868391f, -2.3944666f, -1.8545841f, -0.64574546f, 0.18523122f, 2.0160713f, 2.0138822f, 0.016707808f, -1.9864932f, -1.9901683f, 0.54746377f, 1.7155347f, 3.1482587f, 3.4453938f, 2.28076f, -2.4848094f, -3.482722f, -2.712245f, -0.96345091f, 0.037382983f, 1.519999f, 1.3743491f, 0.01842948f, -1.3441378f, -1.1860932f, -0.62913972f, 0.05004175f, 1.424243f, 2.284714f, 1.6265678f, -1.517943f, -2.8596511f, -3.4585361f, -2.8099124f, -1.4670881f, 2.4149449f, 2.9826062f, 1.4413654f, -0.61978161f, -1.1826359f, -0.54973161f, 0.3059454f, 2.2244394f, 3.340569f, 2.4796603f, -1.2649719f, -2.1057763f, -2.4421046f, -1.8975561f, -1.0278007f};
const std::vector<float> ref_conv_g2 = {-0.15752357f, -0.11925769f, -0.28605527f, -0.59775138f, -0.71084356f, -0.82142925f, -0.88380206f, -0.87546384f, -0.68310618f, -0.56847066f, -0.49686557f, -0.49411905f, -0.22870362f, -0.43352008f, -0.73004401f, -1.0113182f, -0.92086881f, -0.66724777f, -0.52628958f, -0.54883832f, -0.80593115f, -0.9022783f, -1.026512f, -1.1338202f, -1.1629015f, -1.0741849f, -0.95134717f, -0.83869636f, -0.45167494f, -0.39915884f, -0.55600619f, -0.86564165f, -1.425485f, -1.4138638f, -1.2234079f, -0.92281556f, -0.82620829f, -0.73010206f, -0.70179659f, -0.75150216f, -0.99155796f, -1.0953192f, -1.1351461f, -1.096673f, -1.1779211f, -0.89855993f, -0.62623638f, -0.45917851f, -0.77705491f, -1.0318941f, -1.1040388f, -0.96746641f, -0.63690811f, -0.52031076f, -0.40554902f, -0.33401811f, -0.39895427f, -0.51199865f, -0.62987697f, -0.71007007f, -1.0098381f, -0.99791014f, -0.81554592f, -0.52852499f};
const std::vector<float> ref_conv_1x1 = {0.41781852f, 0.34639955f, -0.098047093f, -0.75520772f, -1.388042f, -1.7682837f, -1.7587788f, -1.3629551f, -0.72358829f, -0.071300067f, 0.35862625f, 0.41111478f, -2.1417432f, -2.0197961f, -1.5226424f, -0.82960707f, -0.19067083f, 0.16369936f, 0.1056809f, -0.34379882f, -1.0226105f, -1.6859044f, -2.0944276f, -2.1008239f, -0.38440308f, 0.18322913f, 0.43668988f, 0.28455487f, -0.21830015f, -0.89049351f, -1.4895622f, -1.7994199f, -1.7082996f, -1.2490691f, -0.58737409f, 0.038108923f, -1.3713629f, -1.9335946f, -2.1517129f, -1.9470415f, -1.3934062f, -0.6905055f, -0.091878347f, 0.18654792f, 0.044343945f, -0.46719682f, -1.1635596f, -1.7935635f, -1.5176619f, -0.93039316f, -0.25560775f, 0.26329643f, 0.43914849f, 0.20851801f, -0.34540573f, -1.0228201f, -1.5793793f, -1.8143302f, -1.6429247f, -1.1269898f, -0.17346911f, -0.8063584f, -1.5017326f, -2.0087678f, -2.1445739f, -1.8601657f, -1.2581298f, -0.55562329f, -0.0060429722f, 0.19237542f, -0.031938445f, -0.59807378f};
const std::vector<float> ref_conv_stem = {-1.9987434f, 1.264199f, 4.4584355f, 1.3888879f, -1.9187411f, -0.95175397f, 1.7354668f, 3.1778362f, 0.13237114f, -1.8181953f, -1.3667779f, -5.2206354f, -1.8513808f, 4.1349726f, 2.9780991f, 3.2308996f, -0.11465316f, -5.7497358f, -3.2563453f, 1.7726358f, -0.43526262f, 2.3452587f, 2.627506f, -0.83006513f, -1.8269334f, 0.15138331f, 3.6658537f, 2.5924478f, -2.1181262f, -2.4341271f, -1.315695f, -3.6649315f, -0.70357287f, 3.2405379f, 1.9393997f, -1.5531716f, -2.4255989f, 0.72459203f, 2.8896303f, 0.88490564f, 3.4123387f, 0.46960828f, -5.5827985f, -3.7752893f, 1.4772332f, 0.80898869f, 5.2388849f, 2.7288435f, -3.6282747f, -3.193995f, -1.7079561f, -1.9839036f, 1.5231602f, 2.868048f, 0.39099741f, -2.4806147f, -1.4704643f, 3.1318214f, 3.2947485f, -0.23334879f};
const std::vector<float> ref_conv_1x1s2 = {0.16243936f, -0.1916455f, -0.29415569f, -0.14415479f, -0.30680048f, -0.066706568f, -0.30917874f, -0.12065573f, 0.22625311f, -0.84457868f, -1.0082742f, 0.15160039f, -1.0880214f, -0.05662239f, 1.0491054f, -0.26295039f, 0.95063657f, 0.91631484f, 0.25008017f, 0.25727457f, -0.073257573f, 0.2843298f, -0.01724357f, -0.29618114f, 0.039347474f, -0.27482727f, -0.22823393f, 0.82798815f, -0.45034692f, -1.1375078f, -0.2521826f, -1.1300068f, -0.52446145f, -1.0846922f, -0.6999203f, 0.60364306f};
const std::vector<float> ref_conv_s2p1_bf16 = {-2.8548708f, -1.2216508f, 0.70969748f, -1.1238601f, 1.1224482f, 2.5516806f, 1.8457718f, 2.6321826f, 0.32131588f, 1.881094f, 0.66738331f, -3.3925562f, 1.3049803f, -1.1264138f, -4.2913704f, -2.3483458f, -4.0533056f, -3.4910555f, -3.9969268f, -3.8775334f, -0.22882998f, -1.6600351f, -1.2558417f, 1.0244493f, -2.0558052f, -0.16977763f, 2.4739223f, 1.5014646f, 1.7149062f, -0.534132f, 0.91255999f, -0.055278778f, -3.0192142f, -2.5083032f, -1.8789992f, -1.1092353f, -1.1662064f, -1.4641025f, -2.1252031f, -2.6578369f, -1.2686605f, 1.4183645f, -0.16317749f, 1.1118841f, 1.7577345f, 2.4473724f, 1.1326084f, -2.2516954f, -0.050453186f, 0.92808819f, 0.54042339f, 2.4460554f, 2.2773542f, -1.0717989f, 1.5794387f, -0.46811271f, -3.7213187f, -1.6093695f, -3.8921356f, -3.4009428f, -2.8864174f, -4.4452744f, -2.3943739f, -3.8096056f, -2.853591f, 1.0878768f, -1.5023791f, 0.55460215f, 2.4385128f, 0.30761218f, 1.2069054f, 0.25703192f, 1.2047253f, 2.4773932f, -0.10383892f, 0.039269447f, -1.1818771f, -3.5274346f, -2.4347429f, -3.361228f, -2.8234529f, -1.8604884f, -0.87221384f, 0.011959434f, -1.6934366f, -1.976347f, -0.29173565f, 0.91139221f, 1.7187567f, 1.1803603f, 2.1839457f, 1.4713993f, -1.1808004f, -0.45325661f, -2.7753582f, -3.102268f};
const std::vector<float> ref_conv_s2p1_f16 = {-2.8590236f, -1.2240425f, 0.71285343f, -1.124583f, 1.1218328f, 2.5509849f, 1.8436248f, 2.6320615f, 0.32095468f, 1.8809962f, 0.66774487f, -3.3916922f, 1.3071678f, -1.1237882f, -4.2910891f, -2.3493948f, -4.052331f, -3.4847879f, -3.995538f, -3.8723288f, -0.2267381f, -1.6572179f, -1.2521636f, 1.0224507f, -2.0551448f, -0.17328739f, 2.4725561f, 1.5006447f, 1.7183189f, -0.53191644f, 0.91411924f, -0.052265882f, -3.015996f, -2.5063379f, -1.8791289f, -1.1110097f, -1.1665552f, -1.4582279f, -2.1195035f, -2.6547136f, -1.2664137f, 1.4211352f, -0.15975279f, 1.1147993f, 1.7567997f, 2.4506226f, 1.1377002f, -2.2484076f, -0.049571037f, 0.93166733f, 0.54138398f, 2.4448268f, 2.2782919f, -1.0734714f, 1.5799003f, -0.46593744f, -3.7249539f, -1.6108936f, -3.8957455f, -3.4007251f, -2.8880875f, -4.4479675f, -2.391746f, -3.8065312f, -2.847507f, 1.0894651f, -1.4986308f, 0.55431712f, 2.4378345f, 0.30906725f, 1.2093716f, 0.25526965f, 1.2049847f, 2.4807582f, -0.10387373f, 0.039454639f, -1.1813035f, -3.5260262f, -2.4347579f, -3.3592353f, -2.8256102f, -1.8593673f, -0.87743145f, 0.0080806017f, -1.6882541f, -1.9745785f, -0.29139829f, 0.9167335f, 1.7232928f, 1.1785434f, 2.1883895f, 1.4723523f, -1.1828122f, -0.45186794f, -2.7732432f, -3.0999351f};
// max_pool2d
const std::vector<float> ref_max_k3s2p1 = {0.53522825f, 0.67930466f, 0.97719318f, 0.53522825f, 0.97743642f, 0.97743642f, 0.99956053f, 0.99956053f, 0.98823625f, 0.8976174f, 0.48322436f, 0.98823625f, 0.077441573f, 0.94384247f, 0.96289158f, 0.86786479f, 0.9959445f, 0.76478302f, 0.9956699f, 0.8693521f, 0.96207714f, 0.58677888f, 0.6322993f, 0.96207714f, 0.48059425f, 0.98869085f, 0.98869085f, 0.99946707f, 0.99946707f, 0.976798f, 0.92331743f, 0.92144215f, 0.97782618f, 0.13936125f, 0.92144215f, 0.97782618f, 0.83525205f, 0.99961376f, 0.80341083f, 0.98795116f, 0.89843261f, 0.96339005f, 0.63605291f, 0.99610949f, 0.99610949f, 0.42506626f, 0.99610949f, 0.99610949f};
const std::vector<int64_t> ref_max_k3s2p1_idx = {6, 3, 4, 6, 15, 15, 25, 25, 35, 36, 37, 35, 6, 3, 4, 13, 14, 15, 24, 25, 34, 36, 33, 34, 1, 3, 3, 13, 13, 23, 24, 33, 34, 36, 33, 34, 1, 2, 3, 12, 13, 23, 24, 33, 33, 31, 33, 33};
const std::vector<float> ref_max_d2 = {0.87741363f, 0.95012277f, 0.95012277f, 0.87741363f, 0.95012277f, 0.95012277f, 0.87741363f, 0.87741363f, 0.75203794f, 0.69218886f, 0.91563118f, 0.91563118f, 0.97354406f, 0.97354406f, 0.91563118f, 0.97354406f, 0.97354406f, 0.91563118f};
const std::vector<int64_t> ref_max_d2_idx = {22, 12, 12, 22, 12, 12, 22, 22, 24, 24, 26, 26, 36, 36, 26, 36, 36, 26};
const std::vector<float> ref_max_ceil = {0.99854332f, 0.84936339f, -0.20378454f, 0.97200751f, 0.93129915f, 0.6621089f, 0.91294527f, 0.98207068f, 0.51451683f};
const std::vector<int64_t> ref_max_ceil_idx = {0, 1, 3, 10, 11, 9, 20, 21, 19};
const std::vector<float> ref_max_ceil2 = {0.98767465f, 0.94263715f, 0.9638648f, 0.99626446f, 0.94263715f, 0.9638648f, 0.99626446f, 0.99532598f, 0.99532598f, 0.96108079f, 0.98922861f, 0.98922861f, 0.99934202f, 0.98922861f, 0.98922861f, 0.99934202f, 0.97601426f, 0.92470521f};
const std::vector<int64_t> ref_max_ceil2_idx = {8, 18, 19, 29, 18, 19, 29, 39, 39, 7, 18, 18, 28, 18, 18, 28, 38, 39};
// avg_pool2d
const std::vector<float> ref_avg_c0_p1 = {0.003408134f, -0.11621126f, -0.12948908f, 0.11473726f, -0.019526733f, -0.20890737f, -0.032920182f, -0.19527419f, -0.15423161f, -0.0067888168f, 0.11318498f, 0.1318045f, -0.11798547f, 0.012811786f, 0.20707281f, 0.028146777f, 0.19229007f, 0.15887499f};
const std::vector<float> ref_avg_c0_p0 = {0.0076683015f, -0.17431688f, -0.19423361f, 0.17210589f, -0.019526733f, -0.20890737f, -0.049380273f, -0.19527419f, -0.15423161f, -0.015274838f, 0.16977747f, 0.19770674f, -0.17697822f, 0.012811786f, 0.20707281f, 0.042220164f, 0.19229007f, 0.15887499f};
const std::vector<float> ref_avg_c1_p1 = {0.003408134f, -0.11621126f, -0.12948908f, -0.035457939f, 0.11473726f, -0.019526733f, -0.20890737f, -0.11543539f, -0.032920182f, -0.19527419f, -0.15423161f, -0.022521025f, -0.2121883f, -0.43865037f, -0.119841f, 0.081973501f, -0.0067888168f, 0.11318498f, 0.1318045f, 0.037861574f, -0.11798547f, 0.012811786f, 0.20707281f, 0.11669026f, 0.028146777f, 0.19229007f, 0.15887499f, 0.026271865f, 0.20471102f, 0.4394623f, 0.13296416f, -0.0745783f};
const std::vector<float> ref_avg_c1_p0 = {0.0076683015f, -0.17431688f, -0.19423361f, -0.10637382f, 0.17210589f, -0.019526733f, -0.20890737f, -0.23087078f, -0.049380273f, -0.19527419f, -0.15423161f, -0.045042049f, -0.63656491f, -0.87730074f, -0.239682f, 0.327894f, -0.015274838f, 0.16977747f, 0.19770674f, 0.11358473f, -0.17697822f, 0.012811786f, 0.20707281f, 0.23338051f, 0.042220164f, 0.19229007f, 0.15887499f, 0.05254373f, 0.61413306f, 0.87892461f, 0.26592833f, -0.2983132f};
const std::vector<float> ref_avg_k2p1_ceil = {-0.19049589f, 0.023183361f, 0.45531592f, -0.012295097f, -0.043495521f, -0.01858215f, -0.0085722357f, -0.042062648f, -0.025469646f};
// adaptive_avg_pool2d
const std::vector<float> ref_adapt_5x7_3x2 = {0.14022413f, 0.34475678f, -0.016766325f, -0.028098563f, 0.23109131f, 0.27752829f, 0.12319398f, -0.41773924f, -0.0066095046f, 0.037349712f, 0.023183754f, -0.40942669f, -0.33768177f, 0.32480353f, 0.027360186f, -0.031766247f, -0.2682507f, 0.37870836f, 0.41804862f, -0.10286187f, -0.037243877f, 0.013565858f, 0.40677345f, -0.19757415f};
const std::vector<float> ref_adapt_7x7_1x1 = {-0.029005041f, 0.035600364f, 0.032198742f};
const std::vector<float> ref_adapt_6x6_4x4 = {0.21947466f, 0.11818688f, -0.16036823f, -0.23715961f, -0.13726643f, 0.0033862889f, 0.23073396f, 0.23542371f, 0.10428159f, 0.21214981f, 0.18701018f, 0.063070297f, -0.20014706f, -0.24448103f, -0.084410429f, 0.062256038f};

}  // namespace

TEST_CASE("conv2d forward matches torch", "[conv]") {
  SECTION("stride 2, padding 1, bias, non-square input") {
    Tensor y = mc::conv2d(pattern({2, 3, 7, 6}, 1), pattern({4, 3, 3, 3}, 2, 0.5), pattern({4}, 3), 2, 1);
    CHECK(y.shape() == Shape{2, 4, 4, 3});
    check_close(y, ref_conv_s2p1, 1e-5, 1e-5);
  }
  SECTION("dilation 2") {
    Tensor y = mc::conv2d(pattern({1, 2, 7, 7}, 1), pattern({3, 2, 3, 3}, 2, 0.5), Tensor(), 1, 1, 2);
    CHECK(y.shape() == Shape{1, 3, 5, 5});
    check_close(y, ref_conv_d2, 1e-5, 1e-5);
  }
  SECTION("groups 2, non-square kernel, asymmetric padding") {
    Tensor y = mc::conv2d(pattern({1, 4, 4, 5}, 1), pattern({4, 2, 3, 2}, 2, 0.5), pattern({4}, 3), params(1, 1, 1, 0, 1, 1, 2));
    CHECK(y.shape() == Shape{1, 4, 4, 4});
    check_close(y, ref_conv_g2, 1e-5, 1e-5);
  }
  SECTION("1x1") {
    Tensor y = mc::conv2d(pattern({3, 5, 4, 3}, 1), pattern({2, 5, 1, 1}, 2, 0.5), pattern({2}, 3));
    CHECK(y.shape() == Shape{3, 2, 4, 3});
    check_close(y, ref_conv_1x1, 1e-5, 1e-5);
  }
  SECTION("1x1 stride 2") {
    Tensor y = mc::conv2d(pattern({2, 3, 5, 6}, 1), pattern({2, 3, 1, 1}, 2, 0.5), Tensor(), 2, 0);
    CHECK(y.shape() == Shape{2, 2, 3, 3});
    check_close(y, ref_conv_1x1s2, 1e-5, 1e-5);
  }
  SECTION("7x7 stride 2 padding 3 (ResNet stem)") {
    Tensor y = mc::conv2d(pattern({1, 3, 11, 9}, 1), pattern({2, 3, 7, 7}, 2, 0.5), Tensor(), 2, 3);
    CHECK(y.shape() == Shape{1, 2, 6, 5});
    check_close(y, ref_conv_stem, 1e-5, 1e-5);
  }
  SECTION("unbatched [C, H, W] input") {
    Tensor x = pattern({2, 3, 7, 6}, 1), w = pattern({4, 3, 3, 3}, 2, 0.5), b = pattern({4}, 3);
    Tensor y = mc::conv2d(x.select(0, 1), w, b, 2, 1);
    CHECK(y.shape() == Shape{4, 4, 3});
    std::vector<float> second(ref_conv_s2p1.begin() + 48, ref_conv_s2p1.end());
    check_close(y, second, 1e-5, 1e-5);
  }
  SECTION("non-contiguous input and weight give the same result") {
    Tensor x = pattern({2, 3, 6, 7}, 1).transpose(2, 3);
    Tensor w = pattern({3, 4, 3, 3}, 2, 0.5).transpose(0, 1);
    REQUIRE(!x.is_contiguous());
    Tensor a = mc::conv2d(x, w, Tensor(), 2, 1), b = mc::conv2d(x.contiguous(), w.contiguous(), Tensor(), 2, 1);
    CHECK(a.to_vector<float>() == b.to_vector<float>());
  }
}

TEST_CASE("conv2d in bf16 and f16", "[conv]") {
  Tensor x = pattern({2, 3, 7, 6}, 1), w = pattern({4, 3, 3, 3}, 2, 0.5), b = pattern({4}, 3);
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor y = mc::conv2d(x.to(dt), w.to(dt), b.to(dt), 2, 1);
    CHECK(y.dtype() == dt);
    check_close(y, dt == DType::BF16 ? ref_conv_s2p1_bf16 : ref_conv_s2p1_f16, 1e-2, 1e-2);
  }
  // Backward in bf16 is close to the f32 gradients.
  Tensor xf = x.clone().requires_grad_(), wf = w.clone().requires_grad_();
  mc::sum(mc::conv2d(xf, wf, b, 2, 1)).backward();
  Tensor xh = x.to(DType::BF16).requires_grad_(), wh = w.to(DType::BF16).requires_grad_();
  mc::sum(mc::conv2d(xh, wh, b.to(DType::BF16), 2, 1)).backward();
  CHECK(xh.grad().dtype() == DType::BF16);
  check_close(xh.grad(), xf.grad().to_vector<float>(), 2e-2, 2e-2);
  check_close(wh.grad(), wf.grad().to_vector<float>(), 1e-1, 2e-2);
}

TEST_CASE("conv2d code paths against a naive convolution", "[conv]") {
  struct Case {
    const char* name;
    Shape xs, ws;
    mc::Conv2dParams p;
  };
  const std::vector<Case> cases = {
      {"3x3, batch unfolded in two chunks", {23, 2, 10, 10}, {3, 2, 3, 3}, params(1, 1, 1, 1)},
      {"1x1 on large planes (direct GEMM)", {2, 3, 32, 32}, {4, 3, 1, 1}, params(1, 1, 0, 0)},
      {"1x1 on large planes, one image", {1, 3, 32, 33}, {5, 3, 1, 1}, params(1, 1, 0, 0)},
      {"1x1 on small planes (packed images)", {3, 6, 7, 7}, {5, 6, 1, 1}, params(1, 1, 0, 0)},
      {"3x3 stride 2, one image", {1, 2, 40, 40}, {3, 2, 3, 3}, params(2, 2, 1, 1)},
      {"groups 3, mixed stride/padding/dilation", {4, 6, 9, 8}, {9, 2, 3, 2}, params(2, 1, 1, 0, 1, 2, 3)},
      {"depthwise", {3, 4, 6, 6}, {4, 1, 3, 3}, params(1, 1, 1, 1, 1, 1, 4)},
      {"large padding", {2, 2, 3, 4}, {2, 2, 2, 3}, params(1, 2, 3, 2)},
      {"7x7 stride 2 on 33x33", {2, 3, 33, 33}, {4, 3, 7, 7}, params(2, 2, 3, 3)},
  };
  // A tiny im2col budget forces one image per chunk and bands of a few output rows.
  struct RestoreBudget {
    int64_t saved = mc::cpu::conv_detail::cols_budget();
    ~RestoreBudget() { mc::cpu::conv_detail::cols_budget() = saved; }
  } restore;
  for (int64_t budget : {restore.saved, int64_t(300)}) {
    for (const Case& c : cases) {
      for (DType dt : {DType::F32, DType::F64}) {
        INFO(c.name << " (" << mc::dtype_name(dt) << ", im2col budget " << budget << ")");
        mc::cpu::conv_detail::cols_budget() = budget;
        NaiveConv nv(c.xs, c.ws, c.p);
        Tensor x = pattern(c.xs, 1, 1.0, dt).requires_grad_(), w = pattern(c.ws, 2, 0.5, dt).requires_grad_();
        Tensor b = pattern({c.ws[0]}, 3, 1.0, dt).requires_grad_();
        Tensor gy = pattern(nv.out_shape(), 4, 1.0, dt);
        Tensor y = mc::conv2d(x, w, b, c.p);
        REQUIRE(y.shape() == nv.out_shape());
        y.backward(gy);

        std::vector<double> xv = x.to_vector<double>(), wv = w.to_vector<double>(), bv = b.to_vector<double>();
        std::vector<double> gyv = gy.to_vector<double>();
        std::vector<double> yr(gyv.size()), gx(xv.size()), gw(wv.size()), gb(bv.size());
        const int64_t OHW = nv.OH * nv.OW;
        for (size_t i = 0; i < yr.size(); ++i) {
          yr[i] = bv[size_t(int64_t(i) / OHW % c.ws[0])];
          gb[size_t(int64_t(i) / OHW % c.ws[0])] += gyv[i];
        }
        nv.each([&](int64_t xi, int64_t wi, int64_t yi) {
          yr[size_t(yi)] += xv[size_t(xi)] * wv[size_t(wi)];
          gx[size_t(xi)] += gyv[size_t(yi)] * wv[size_t(wi)];
          gw[size_t(wi)] += gyv[size_t(yi)] * xv[size_t(xi)];
        });
        const double tol = dt == DType::F64 ? 1e-12 : 2e-5;
        check_close(y, yr, tol);
        check_close(x.grad(), gx, tol);
        check_close(w.grad(), gw, tol);
        check_close(b.grad(), gb, tol);
      }
    }
  }
}

TEST_CASE("cpu conv2d kernels accept non-contiguous tensors", "[conv]") {
  // Output written through a permuted view, input given as a transposed view.
  Tensor x = pattern({2, 3, 6, 7}, 1).transpose(2, 3);  // [2, 3, 7, 6]
  Tensor w = pattern({4, 3, 3, 3}, 2, 0.5);
  mc::Conv2dParams p = params(2, 2, 1, 1);
  Tensor expect = mc::conv2d(x.contiguous(), w, Tensor(), p);
  Tensor storage = mc::empty({2, 3, 4, 4});  // [N, OW, OH, O], permuted to [N, O, OH, OW]
  Tensor out = storage.permute({0, 3, 2, 1});
  REQUIRE(out.shape() == Shape{2, 4, 4, 3});
  mc::cpu::conv2d(out, x, w, Tensor(), p);
  CHECK(out.contiguous().to_vector<float>() == expect.to_vector<float>());

  Tensor gy = pattern({2, 4, 4, 3}, 4);
  Tensor gx_ref = mc::empty({2, 3, 7, 6}), gw_ref = mc::empty({4, 3, 3, 3});
  mc::cpu::conv2d_backward_input(gx_ref, gy, w, p);
  mc::cpu::conv2d_backward_weight(gw_ref, gy, x.contiguous(), p);
  Tensor gx = mc::empty({2, 3, 6, 7}).transpose(2, 3), gw = mc::empty({3, 4, 3, 3}).transpose(0, 1);
  Tensor gyt = gy.transpose(2, 3).contiguous().transpose(2, 3);
  mc::cpu::conv2d_backward_input(gx, gyt, w, p);
  mc::cpu::conv2d_backward_weight(gw, gyt, x, p);
  CHECK(gx.contiguous().to_vector<float>() == gx_ref.to_vector<float>());
  CHECK(gw.contiguous().to_vector<float>() == gw_ref.to_vector<float>());
}

TEST_CASE("conv2d gradcheck", "[conv][gradcheck]") {
  auto run = [](const std::vector<Tensor>& in, mc::Conv2dParams p, auto build) {
    auto r = mc::gradcheck([&](const std::vector<Tensor>& t) { return build(t, p); }, in);
    INFO(r.message);
    CHECK(r.ok);
  };
  auto plain = [](const std::vector<Tensor>& t, mc::Conv2dParams p) {
    return mc::conv2d(t[0], t[1], t.size() > 2 ? t[2] : Tensor(), p);
  };
  SECTION("stride (2, 1), padding, bias") {
    run({pattern({2, 3, 5, 4}, 1), pattern({4, 3, 3, 2}, 2), pattern({4}, 3)}, params(2, 1, 1, 1), plain);
  }
  SECTION("dilation 2, padding 2") {
    run({pattern({1, 2, 6, 7}, 1), pattern({3, 2, 3, 3}, 2)}, params(1, 1, 2, 2, 2, 2), plain);
  }
  SECTION("groups 2, stride 2") {
    run({pattern({2, 4, 5, 5}, 1), pattern({6, 2, 3, 3}, 2), pattern({6}, 3)}, params(2, 2, 1, 1, 1, 1, 2), plain);
  }
  SECTION("1x1") {
    run({pattern({3, 5, 4, 3}, 1), pattern({2, 5, 1, 1}, 2), pattern({2}, 3)}, params(1, 1, 0, 0), plain);
  }
  SECTION("7x7 stride 2 padding 3") {
    run({pattern({1, 2, 9, 7}, 1), pattern({2, 2, 7, 7}, 2)}, params(2, 2, 3, 3), plain);
  }
  SECTION("non-contiguous input, weight and bias") {
    run({pattern({2, 3, 4, 5}, 1), pattern({3, 4, 3, 3}, 2), pattern({4, 2}, 3)}, params(1, 2, 1, 1),
        [](const std::vector<Tensor>& t, mc::Conv2dParams p) {
          return mc::conv2d(t[0].transpose(2, 3), t[1].transpose(0, 1), t[2].select(1, 1), p);
        });
  }
  SECTION("unbatched input") {
    run({pattern({3, 5, 5}, 1), pattern({2, 3, 3, 3}, 2), pattern({2}, 3)}, params(2, 2, 1, 1), plain);
  }
}

TEST_CASE("max_pool2d forward and indices match torch", "[pool]") {
  auto check = [](const Tensor& x, const mc::Pool2dParams& p, const std::vector<float>& ref,
                  const std::vector<int64_t>& ref_idx) {
    auto [y, idx] = mc::max_pool2d_with_indices(x, p);
    check_close(y, ref, 0, 0);
    CHECK(idx.dtype() == DType::I64);
    CHECK(idx.to_vector<int64_t>() == ref_idx);
  };
  auto pp = [](int64_t k, int64_t s, int64_t pad, int64_t d, bool ceil) {
    mc::Pool2dParams p;
    p.kernel[0] = p.kernel[1] = k;
    p.stride[0] = p.stride[1] = s;
    p.padding[0] = p.padding[1] = pad;
    p.dilation[0] = p.dilation[1] = d;
    p.ceil_mode = ceil;
    return p;
  };
  check(pattern({2, 2, 7, 6}, 4), pp(3, 2, 1, 1, false), ref_max_k3s2p1, ref_max_k3s2p1_idx);
  check(pattern({1, 2, 7, 7}, 5), pp(3, 2, 1, 2, false), ref_max_d2, ref_max_d2_idx);
  check(pattern({1, 1, 5, 5}, 6), pp(2, 2, 1, 1, true), ref_max_ceil, ref_max_ceil_idx);
  check(pattern({1, 2, 6, 7}, 7), pp(3, 2, 0, 1, true), ref_max_ceil2, ref_max_ceil2_idx);
  CHECK(mc::max_pool2d(pattern({1, 1, 5, 5}, 6), 2, 2, 1, 1, true).shape() == Shape{1, 1, 3, 3});
  CHECK(mc::max_pool2d(pattern({1, 2, 6, 7}, 7), 3, 2, 0, 1, true).shape() == Shape{1, 2, 3, 3});
  CHECK(mc::max_pool2d(pattern({1, 2, 6, 7}, 7), 3, 2).shape() == Shape{1, 2, 2, 3});
  CHECK(mc::max_pool2d(pattern({1, 2, 6, 7}, 7), 2).shape() == Shape{1, 2, 3, 3});  // stride = kernel

  SECTION("half types and non-contiguous input") {
    Tensor x = pattern({2, 2, 7, 6}, 4);
    for (DType dt : {DType::BF16, DType::F16}) {
      Tensor y = mc::max_pool2d(x.to(dt), 3, 2, 1);
      CHECK(y.dtype() == dt);
      check_close(y, ref_max_k3s2p1, 1e-2, 1e-2);
    }
    Tensor xt = x.transpose(2, 3).contiguous().transpose(2, 3);
    check_close(mc::max_pool2d(xt, 3, 2, 1), ref_max_k3s2p1, 0, 0);
  }
  SECTION("NaN propagates") {
    std::vector<float> v(16, 0.f);
    v[5] = std::nanf("");
    auto [y, idx] = mc::max_pool2d_with_indices(mc::from_vector(v, {1, 1, 4, 4}), [] {
      mc::Pool2dParams p;
      p.kernel[0] = p.kernel[1] = p.stride[0] = p.stride[1] = 2;
      return p;
    }());
    std::vector<float> r = y.to_vector<float>();
    CHECK(std::isnan(r[0]));
    CHECK(idx.to_vector<int64_t>()[0] == 5);
    CHECK(r[1] == 0.f);
    CHECK(idx.to_vector<int64_t>()[1] == 2);  // all equal: the first position of the window
  }
}

TEST_CASE("max_pool2d gradcheck", "[pool][gradcheck]") {
  auto run = [](const Tensor& x, auto f) {
    auto r = mc::gradcheck([&](const std::vector<Tensor>& t) { return f(t[0]); }, {x});
    INFO(r.message);
    CHECK(r.ok);
  };
  run(distinct({2, 2, 7, 6}), [](const Tensor& t) { return mc::max_pool2d(t, 3, 2, 1); });
  run(distinct({1, 2, 7, 7}), [](const Tensor& t) { return mc::max_pool2d(t, 3, 2, 1, 2); });
  run(distinct({1, 2, 5, 5}), [](const Tensor& t) { return mc::max_pool2d(t, 2, 2, 1, 1, true); });
  run(distinct({1, 1, 6, 5}), [](const Tensor& t) { return mc::max_pool2d(t, 3, 1, 1); });
  run(distinct({2, 1, 5, 7}), [](const Tensor& t) { return mc::max_pool2d(t.transpose(2, 3), 3, 2, 1, 1, true); });
  run(distinct({2, 5, 4}), [](const Tensor& t) { return mc::max_pool2d(t, 2, 1); });  // unbatched
}

TEST_CASE("avg_pool2d forward matches torch", "[pool]") {
  Tensor x = pattern({1, 2, 6, 6}, 8);
  check_close(mc::avg_pool2d(x, 3, 2, 1, false, true), ref_avg_c0_p1, 1e-6, 1e-5);
  check_close(mc::avg_pool2d(x, 3, 2, 1, false, false), ref_avg_c0_p0, 1e-6, 1e-5);
  check_close(mc::avg_pool2d(x, 3, 2, 1, true, true), ref_avg_c1_p1, 1e-6, 1e-5);
  check_close(mc::avg_pool2d(x, 3, 2, 1, true, false), ref_avg_c1_p0, 1e-6, 1e-5);
  CHECK(mc::avg_pool2d(x, 3, 2, 1, true).shape() == Shape{1, 2, 4, 4});
  Tensor x2 = pattern({1, 1, 5, 5}, 9);
  Tensor y2 = mc::avg_pool2d(x2, 2, 2, 1, true, true);
  CHECK(y2.shape() == Shape{1, 1, 3, 3});
  check_close(y2, ref_avg_k2p1_ceil, 1e-6, 1e-5);
  check_close(mc::avg_pool2d(x.to(DType::BF16), 3, 2, 1, true, false), ref_avg_c1_p0, 1e-2, 1e-2);
  check_close(mc::avg_pool2d(x.to(DType::F16), 3, 2, 1, true, false), ref_avg_c1_p0, 1e-2, 1e-2);
}

TEST_CASE("avg_pool2d gradcheck", "[pool][gradcheck]") {
  for (bool ceil : {false, true})
    for (bool cip : {false, true}) {
      INFO("ceil_mode " << ceil << ", count_include_pad " << cip);
      auto r = mc::gradcheck([&](const std::vector<Tensor>& t) { return mc::avg_pool2d(t[0], 3, 2, 1, ceil, cip); },
                             {pattern({2, 2, 6, 5}, 1)});
      INFO(r.message);
      CHECK(r.ok);
    }
  auto r = mc::gradcheck(
      [](const std::vector<Tensor>& t) { return mc::avg_pool2d(t[0].transpose(2, 3), 2, 2, 1, true, false); },
      {pattern({1, 3, 5, 7}, 2)});
  INFO(r.message);
  CHECK(r.ok);
  auto r2 = mc::gradcheck([](const std::vector<Tensor>& t) { return mc::avg_pool2d(t[0], 3, 1, 1); },
                          {pattern({2, 5, 5}, 3)});
  INFO(r2.message);
  CHECK(r2.ok);
}

TEST_CASE("adaptive_avg_pool2d forward and gradcheck", "[pool][gradcheck]") {
  check_close(mc::adaptive_avg_pool2d(pattern({2, 2, 5, 7}, 10), 3, 2), ref_adapt_5x7_3x2, 1e-6, 1e-5);
  check_close(mc::adaptive_avg_pool2d(pattern({1, 3, 7, 7}, 11), 1), ref_adapt_7x7_1x1, 1e-6, 1e-5);
  check_close(mc::adaptive_avg_pool2d(pattern({1, 1, 6, 6}, 12), 4), ref_adapt_6x6_4x4, 1e-6, 1e-5);
  check_close(mc::adaptive_avg_pool2d(pattern({2, 2, 5, 7}, 10).to(DType::BF16), 3, 2), ref_adapt_5x7_3x2, 1e-2, 1e-2);
  struct Case {
    Shape xs;
    int64_t oh, ow;
    bool transpose;
  };
  for (const Case& c : std::vector<Case>{{{2, 2, 5, 7}, 3, 2, false},
                                         {{1, 3, 7, 7}, 1, 1, false},
                                         {{1, 2, 6, 6}, 4, 4, false},
                                         {{1, 2, 5, 3}, 2, 4, true},  // output larger than input along one dim
                                         {{3, 4, 5}, 2, 3, false}}) {
    INFO(mc::shape_str(c.xs) << " -> " << c.oh << "x" << c.ow);
    auto r = mc::gradcheck(
        [&](const std::vector<Tensor>& t) {
          return mc::adaptive_avg_pool2d(c.transpose ? t[0].transpose(-1, -2) : t[0], c.oh, c.ow);
        },
        {pattern(c.xs, 5)});
    INFO(r.message);
    CHECK(r.ok);
  }
}

TEST_CASE("conv2d and pooling reject bad arguments", "[conv][pool]") {
  Tensor x = pattern({1, 3, 5, 5}, 1);
  Tensor w = pattern({2, 3, 3, 3}, 2);
  using mc::Error;
  SECTION("conv2d") {
    REQUIRE_NOTHROW(mc::conv2d(x, w));
    REQUIRE_THROWS_AS(mc::conv2d(x, pattern({2, 4, 3, 3}, 2)), Error);                 // channel mismatch
    REQUIRE_THROWS_AS(mc::conv2d(pattern({1, 1, 3, 3}, 1), pattern({1, 1, 5, 5}, 2)), Error);  // kernel too big
    REQUIRE_NOTHROW(mc::conv2d(pattern({1, 1, 3, 3}, 1), pattern({1, 1, 5, 5}, 2), Tensor(), 1, 1));
    REQUIRE_THROWS_AS(mc::conv2d(pattern({1, 1, 5, 5}, 1), pattern({1, 1, 3, 3}, 2), Tensor(), 1, 0, 3), Error);
    REQUIRE_THROWS_AS(mc::conv2d(x, pattern({2, 1, 3, 3}, 2), Tensor(), 1, 0, 1, 2), Error);  // 3 % 2 != 0
    REQUIRE_THROWS_AS(mc::conv2d(pattern({1, 4, 5, 5}, 1), pattern({3, 2, 3, 3}, 2), Tensor(), 1, 0, 1, 2), Error);
    REQUIRE_THROWS_AS(mc::conv2d(x, w, Tensor(), 1, 0, 1, 0), Error);                  // groups 0
    REQUIRE_THROWS_AS(mc::conv2d(pattern({3, 25}, 1), w), Error);                        // bad rank
    REQUIRE_THROWS_AS(mc::conv2d(pattern({1, 1, 3, 5, 5}, 1), w), Error);
    REQUIRE_THROWS_AS(mc::conv2d(x, pattern({2, 3, 9}, 2)), Error);
    REQUIRE_THROWS_AS(mc::conv2d(x, w, pattern({3}, 3)), Error);                       // bias size
    REQUIRE_THROWS_AS(mc::conv2d(x, w, pattern({1, 2}, 3)), Error);
    REQUIRE_THROWS_AS(mc::conv2d(x, w.to(DType::F64)), Error);                          // dtype mismatch
    REQUIRE_THROWS_AS(mc::conv2d(x.to(DType::I64), w.to(DType::I64)), Error);           // integer
    REQUIRE_THROWS_AS(mc::conv2d(x, w, Tensor(), 0, 0), Error);                          // stride 0
    REQUIRE_THROWS_AS(mc::conv2d(x, w, Tensor(), 1, -1), Error);                         // negative padding
    REQUIRE_THROWS_AS(mc::conv2d(x, w, Tensor(), 1, 0, 0), Error);                       // dilation 0
    // The primitive checks its output shape.
    REQUIRE_THROWS_AS(mc::cpu::conv2d(mc::empty({1, 2, 4, 4}), x, w, Tensor(), mc::Conv2dParams{}), Error);
  }
  SECTION("pooling") {
    REQUIRE_THROWS_AS(mc::max_pool2d(pattern({5, 5}, 1), 2), Error);
    REQUIRE_THROWS_AS(mc::max_pool2d(x, 3, 1, 2), Error);   // padding > kernel / 2
    REQUIRE_THROWS_AS(mc::max_pool2d(pattern({1, 1, 2, 2}, 1), 5), Error);  // output too small
    REQUIRE_THROWS_AS(mc::max_pool2d(x, 0), Error);
    REQUIRE_THROWS_AS(mc::max_pool2d(x.to(DType::I32), 2), Error);
    REQUIRE_THROWS_AS(mc::avg_pool2d(x, 3, 2, 2), Error);
    REQUIRE_THROWS_AS(mc::avg_pool2d(pattern({1, 1, 1, 5, 5}, 1), 2), Error);
    REQUIRE_THROWS_AS(mc::avg_pool2d(pattern({1, 1, 2, 2}, 1), 3), Error);
    mc::Pool2dParams dil;
    dil.kernel[0] = dil.kernel[1] = 2;
    dil.stride[0] = dil.stride[1] = 2;
    dil.dilation[0] = 2;
    REQUIRE_THROWS_AS(mc::avg_pool2d(x, dil), Error);
    REQUIRE_THROWS_AS(mc::adaptive_avg_pool2d(x, 0, 2), Error);
    REQUIRE_THROWS_AS(mc::adaptive_avg_pool2d(pattern({5, 5}, 1), 2), Error);
    REQUIRE_THROWS_AS(mc::adaptive_avg_pool2d(x.to(DType::I64), 2), Error);
    // An index outside the plane is reported, not written.
    Tensor gx = mc::empty({1, 1, 2, 2}), gy = mc::ones({1, 1, 1, 1});
    Tensor bad = mc::from_vector(std::vector<int64_t>{4}, {1, 1, 1, 1});
    REQUIRE_THROWS_AS(mc::cpu::max_pool2d_backward(gx, gy, bad), Error);
  }
}

TEST_CASE("a ResNet-style stem trains end to end", "[conv][pool]") {
  Tensor x = pattern({2, 3, 16, 16}, 1);
  Tensor w1 = pattern({4, 3, 7, 7}, 2, 0.2).requires_grad_();
  Tensor w2 = pattern({6, 4, 3, 3}, 3, 0.2).requires_grad_();
  Tensor h = mc::relu(mc::conv2d(x, w1, Tensor(), 2, 3));   // [2, 4, 8, 8]
  h = mc::max_pool2d(h, 3, 2, 1);                          // [2, 4, 4, 4]
  h = mc::conv2d(h, w2, Tensor(), 1, 1);                   // [2, 6, 4, 4]
  h = mc::adaptive_avg_pool2d(h, 1).flatten(1);            // [2, 6]
  CHECK(h.shape() == Shape{2, 6});
  mc::sum(h * h).backward();
  CHECK(w1.grad().shape() == w1.shape());
  CHECK(w2.grad().shape() == w2.shape());
  CHECK(std::isfinite(mc::sum(w1.grad() * w1.grad()).item<double>()));
}
