// kernels/elementwise.cu — unary, binary and where on the GPU (mc/cpu/elementwise.hpp is the reference).
//
// Two paths:
// - flat: the output is contiguous and every input is contiguous or a broadcast scalar (all strides 0).
//   A grid-stride loop over packs of 16 bytes (the widest operand's element type sets the pack length),
//   two packs per thread per iteration, then a scalar tail; when a pointer is not aligned to its pack,
//   the same kernel runs element by element.
// - strided: any layout. Dims are merged across all operands (strided_many), each thread decomposes a
//   32-bit group index into per-operand offsets. When every operand's innermost stride is 0 or 1 and the
//   layout allows it, a group is a pack along the innermost dim (bias-style broadcasts stay vectorized).
// Halves compute in f32, f64 in f64, f32 in f32, each result rounded once when stored, as on the CPU.
// `out` may be the same memory as an input (in-place add_/mul_): each element is read before it is written
// by the same thread.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "kernels.cuh"
#include "mc/core/math.hpp"

namespace mc::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 2;  // packs per thread per iteration of the flat loop (bytes in flight)

// ---- compute types: f32 for the halves, the type itself otherwise ----
template <class T> struct comp { using type = T; };
template <> struct comp<__nv_bfloat16> { using type = float; };
template <> struct comp<__half> { using type = float; };
template <class T> using comp_t = typename comp<T>::type;

template <class T> __device__ __forceinline__ comp_t<T> ld(T v) { return v; }
template <> __device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float ld(__half v) { return __half2float(v); }
template <class T> __device__ __forceinline__ T st(comp_t<T> v) { return T(v); }
template <> __device__ __forceinline__ __nv_bfloat16 st(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half st(float v) { return __float2half_rn(v); }

// A pack of V elements aligned to its size, so one load/store instruction moves it.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <class A, class B, class C, class D>
constexpr int pack_len() {
  size_t m = sizeof(A);
  if (sizeof(B) > m) m = sizeof(B);
  if (sizeof(C) > m) m = sizeof(C);
  if (sizeof(D) > m) m = sizeof(D);
  return int(16 / m);
}

// Operand pointers: the output and up to three inputs (unused ones are char and null).
template <class TO, class TA, class TB, class TC>
struct Ptrs {
  TO* o;
  const TA* a;
  const TB* b;
  const TC* c;
};

template <int NIN, class F, class TA, class TB, class TC>
__device__ __forceinline__ auto apply(const F& f, TA a, TB b, TC c) {
  if constexpr (NIN == 1) {
    (void)b; (void)c;
    return f(a);
  } else if constexpr (NIN == 2) {
    (void)c;
    return f(a, b);
  } else {
    return f(a, b, c);
  }
}

template <class T, int V>
__device__ __forceinline__ void load_pack(const T* p, int64_t i, bool scalar, T s, T (&r)[V]) {
  if (scalar) {
#pragma unroll
    for (int k = 0; k < V; ++k) r[k] = s;
  } else {
    const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p + i);
#pragma unroll
    for (int k = 0; k < V; ++k) r[k] = pk.v[k];
  }
}

// ---- flat path ----
// scalar_mask bit k (k = 0,1,2 for inputs a,b,c) marks an input that is one broadcast value.
template <int NIN, class TO, class TA, class TB, class TC, class F>
__global__ void __launch_bounds__(kThreads) flat_kernel(Ptrs<TO, TA, TB, TC> p, unsigned scalar_mask, int64_t n,
                                                        bool vec, F f) {
  constexpr int V = pack_len<TO, TA, TB, TC>();
  const bool sa = scalar_mask & 1u, sb = scalar_mask & 2u, sc = scalar_mask & 4u;
  const TA va = sa ? p.a[0] : TA();
  TB vb = TB();
  TC vc = TC();
  if constexpr (NIN >= 2) vb = sb ? p.b[0] : TB();
  if constexpr (NIN >= 3) vc = sc ? p.c[0] : TC();
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nthreads = int64_t(gridDim.x) * blockDim.x;
  const int64_t npacks = vec ? n / V : 0;
  for (int64_t base = tid; base < npacks; base += nthreads * kUnroll) {
    TA ra[kUnroll][V];
    TB rb[kUnroll][V];
    TC rc[kUnroll][V];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t pi = base + u * nthreads;
      if (pi < npacks) {
        load_pack<TA, V>(p.a, pi * V, sa, va, ra[u]);
        if constexpr (NIN >= 2) load_pack<TB, V>(p.b, pi * V, sb, vb, rb[u]);
        if constexpr (NIN >= 3) load_pack<TC, V>(p.c, pi * V, sc, vc, rc[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t pi = base + u * nthreads;
      if (pi < npacks) {
        Pack<TO, V> out;
#pragma unroll
        for (int k = 0; k < V; ++k) out.v[k] = apply<NIN>(f, ra[u][k], rb[u][k], rc[u][k]);
        *reinterpret_cast<Pack<TO, V>*>(p.o + pi * V) = out;
      }
    }
  }
  for (int64_t i = npacks * V + tid; i < n; i += nthreads) {
    const TA a = sa ? va : p.a[i];
    TB b = TB();
    TC c = TC();
    if constexpr (NIN >= 2) b = sb ? vb : p.b[i];
    if constexpr (NIN >= 3) c = sc ? vc : p.c[i];
    p.o[i] = apply<NIN>(f, a, b, c);
  }
}

// ---- strided path ----

struct Layout4 {  // up to 4 operands (output first) walked in lock-step over one shape
  int ndim;
  FastDiv size[kMaxDims];
  int64_t stride[4][kMaxDims];
};

// Group g covers elements [g*V, g*V + V) of the row-major order when `vec` (V divides the innermost size;
// operands with innermost stride 1 load a pack, stride 0 one value), else element g alone.
template <int NIN, class TO, class TA, class TB, class TC, class F>
__global__ void __launch_bounds__(kThreads) strided_kernel(Ptrs<TO, TA, TB, TC> p, Layout4 L, uint32_t ngroups,
                                                           bool vec, unsigned bcast_inner, F f) {
  constexpr int V = pack_len<TO, TA, TB, TC>();
  const uint32_t g = blockIdx.x * blockDim.x + threadIdx.x;
  if (g >= ngroups) return;
  uint32_t e = vec ? g * uint32_t(V) : g;
  int64_t off[4] = {0, 0, 0, 0};
  for (int d = L.ndim - 1; d >= 0; --d) {
    const uint32_t q = L.size[d].div(e), i = e - q * L.size[d].d;
    e = q;
#pragma unroll
    for (int k = 0; k <= NIN; ++k) off[k] += int64_t(i) * L.stride[k][d];
  }
  if (!vec) {
    TB b = TB();
    TC c = TC();
    if constexpr (NIN >= 2) b = p.b[off[2]];
    if constexpr (NIN >= 3) c = p.c[off[3]];
    p.o[off[0]] = apply<NIN>(f, p.a[off[1]], b, c);
    return;
  }
  TA ra[V];
  TB rb[V];
  TC rc[V];
  const bool ba = bcast_inner & 1u, bb = bcast_inner & 2u, bc = bcast_inner & 4u;
  load_pack<TA, V>(p.a, off[1], ba, ba ? p.a[off[1]] : TA(), ra);
  if constexpr (NIN >= 2) load_pack<TB, V>(p.b, off[2], bb, bb ? p.b[off[2]] : TB(), rb);
  if constexpr (NIN >= 3) load_pack<TC, V>(p.c, off[3], bc, bc ? p.c[off[3]] : TC(), rc);
  Pack<TO, V> out;
#pragma unroll
  for (int k = 0; k < V; ++k) out.v[k] = apply<NIN>(f, ra[k], rb[k], rc[k]);
  *reinterpret_cast<Pack<TO, V>*>(p.o + off[0]) = out;
}

bool is_broadcast_scalar(const Tensor& t) {
  for (int d = 0; d < t.dim(); ++d)
    if (t.size(d) != 1 && t.stride(d) != 0) return false;
  return true;
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

unsigned flat_blocks(int64_t work) {
  const int64_t cap = int64_t(props().multiProcessorCount) * (2048 / kThreads) * 2;
  int64_t b = (work + kThreads - 1) / kThreads;
  if (b < 1) b = 1;
  return unsigned(b < cap ? b : cap);
}

// Runs out = f(inputs...) over tensors of one shape. `op` names the primitive in errors.
template <int NIN, class TO, class TA, class TB = char, class TC = char, class F>
void launch(const char* op, const Tensor& out, const Tensor* in, F f) {
  const int64_t n = out.numel();
  if (n == 0) return;
  Ptrs<TO, TA, TB, TC> p{dptr<TO>(out), dptr<const TA>(in[0]), nullptr, nullptr};
  if constexpr (NIN >= 2) p.b = dptr<const TB>(in[1]);
  if constexpr (NIN >= 3) p.c = dptr<const TC>(in[2]);
  constexpr int V = pack_len<TO, TA, TB, TC>();

  // Flat path: contiguous output, inputs contiguous or one broadcast value.
  bool flat = out.is_contiguous();
  unsigned scalar_mask = 0;
  for (int k = 0; k < NIN && flat; ++k) {
    if (in[k].is_contiguous()) continue;
    if (is_broadcast_scalar(in[k])) scalar_mask |= 1u << k;
    else flat = false;
  }
  if (flat) {
    bool vec = n >= 4 * V && aligned(p.o, sizeof(TO) * V);
    if ((scalar_mask & 1u) == 0) vec = vec && aligned(p.a, sizeof(TA) * V);
    if (NIN >= 2 && (scalar_mask & 2u) == 0) vec = vec && aligned(p.b, sizeof(TB) * V);
    if (NIN >= 3 && (scalar_mask & 4u) == 0) vec = vec && aligned(p.c, sizeof(TC) * V);
    const unsigned blocks = flat_blocks(vec ? (n / V + kUnroll - 1) / kUnroll : n);
    flat_kernel<NIN><<<blocks, kThreads, 0, stream()>>>(p, scalar_mask, n, vec, f);
    MC_CUDA_LAUNCHED(op);
    return;
  }

  // Strided path. Very large tensors (2^32 elements or more) go through contiguous copies instead, so
  // that the per-element index arithmetic stays 32-bit.
  if (n >= (int64_t(1) << 32)) {
    Tensor ins[3];
    for (int k = 0; k < NIN; ++k)
      ins[k] = (in[k].is_contiguous() || is_broadcast_scalar(in[k])) ? in[k] : contiguous(in[k]);
    if (out.is_contiguous()) {
      launch<NIN, TO, TA, TB, TC>(op, out, ins, f);
    } else {
      Tensor tmp = Tensor::empty(out.shape(), out.dtype(), out.device());
      launch<NIN, TO, TA, TB, TC>(op, tmp, ins, f);
      copy(out, tmp);
    }
    return;
  }
  Tensor ts[4] = {out, in[0], NIN >= 2 ? in[1] : in[0], NIN >= 3 ? in[2] : in[0]};
  Strided s[4];
  strided_many(ts, NIN + 1, s);
  Layout4 L{};
  L.ndim = s[0].ndim;
  for (int d = 0; d < L.ndim; ++d) {
    MC_CHECK(s[0].size[d] < (int64_t(1) << 32), op, ": dimension too large");
    L.size[d] = FastDiv(uint32_t(s[0].size[d]));
    for (int k = 0; k <= NIN; ++k) {
      MC_CHECK(s[k].ndim == L.ndim && s[k].size[d] == s[0].size[d], op, ": operand layouts disagree");
      L.stride[k][d] = s[k].stride[d];
    }
  }
  // Packs along the innermost dim: its size divisible by V, every operand's innermost stride 0 or 1, and
  // for the stride-1 operands every pack start aligned (outer strides multiples of V, aligned base).
  bool vec = L.ndim >= 1 && L.size[L.ndim - 1].d % V == 0;
  unsigned bcast_inner = 0;
  const void* bases[4] = {p.o, p.a, p.b, p.c};
  const size_t esz[4] = {sizeof(TO), sizeof(TA), sizeof(TB), sizeof(TC)};
  for (int k = 0; k <= NIN && vec; ++k) {
    const int64_t inner = L.stride[k][L.ndim - 1];
    if (inner == 0) {
      if (k == 0) vec = false;  // the output is never written through a broadcast
      else bcast_inner |= 1u << (k - 1);
      continue;
    }
    if (inner != 1 || !aligned(bases[k], esz[k] * V)) { vec = false; break; }
    for (int d = 0; d < L.ndim - 1; ++d)
      if (L.stride[k][d] % V != 0) vec = false;
  }
  const uint32_t ngroups = uint32_t(vec ? n / V : n);
  const unsigned blocks = unsigned((int64_t(ngroups) + kThreads - 1) / kThreads);
  strided_kernel<NIN><<<blocks, kThreads, 0, stream()>>>(p, L, ngroups, vec, bcast_inner, f);
  MC_CUDA_LAUNCHED(op);
}

// ---- unary functors: each computes in the compute type C of its element type ----
template <class T, class Op>
struct FloatUnary {
  Op op;
  __device__ __forceinline__ T operator()(T v) const { return st<T>(op(ld(v))); }
};

#define MC_EW_UNARY(NAME, EXPR)                                                   \
  struct NAME {                                                                   \
    template <class C>                                                            \
    __device__ __forceinline__ C operator()(C v) const { return EXPR; }           \
  };
MC_EW_UNARY(UNeg, -v)
MC_EW_UNARY(UExp, std::exp(v))
MC_EW_UNARY(ULog, std::log(v))
MC_EW_UNARY(ULog1p, std::log1p(v))
MC_EW_UNARY(USqrt, std::sqrt(v))
MC_EW_UNARY(URsqrt, C(1) / std::sqrt(v))
MC_EW_UNARY(UAbs, std::fabs(v))
MC_EW_UNARY(USign, C((v > C(0)) - (v < C(0))))
MC_EW_UNARY(UTanh, std::tanh(v))
MC_EW_UNARY(USigmoid, math::sigmoid(v))
MC_EW_UNARY(URelu, v > C(0) ? v : (v == v ? C(0) : v))
MC_EW_UNARY(UGeluErf, math::gelu_erf(v))
MC_EW_UNARY(UGeluTanh, math::gelu_tanh(v))
MC_EW_UNARY(UQuickGelu, math::quick_gelu(v))
MC_EW_UNARY(USin, std::sin(v))
MC_EW_UNARY(UCos, std::cos(v))
MC_EW_UNARY(UReciprocal, C(1) / v)
MC_EW_UNARY(UFloor, std::floor(v))
MC_EW_UNARY(USquare, v * v)
#undef MC_EW_UNARY

template <class C>
struct UClamp {
  C lo, hi;
  __device__ __forceinline__ C operator()(C v) const { return v != v ? v : (v < lo ? lo : (v > hi ? hi : v)); }
};
template <class C>
struct UPow {
  C e;
  __device__ __forceinline__ C operator()(C v) const { return std::pow(v, e); }
};

// Integer unary ops (the ones the CPU defines on integers).
template <class T>
struct INeg {
  __device__ __forceinline__ T operator()(T v) const { return T(-v); }
};
template <class T>
struct IAbs {
  __device__ __forceinline__ T operator()(T v) const {
    if constexpr (std::is_signed_v<T>) return T(v < 0 ? -v : v);
    else return v;
  }
};
template <class T>
struct ISign {
  __device__ __forceinline__ T operator()(T v) const {
    if constexpr (std::is_signed_v<T>) return T((v > 0) - (v < 0));
    else return T(v > 0);
  }
};
template <class T>
struct IClamp {
  double lo, hi;
  __device__ __forceinline__ T operator()(T v) const {
    double x = double(v);
    x = x < lo ? lo : x;  // std::max(x, lo)
    x = hi < x ? hi : x;  // std::min(x, hi)
    return T(x);
  }
};
template <class T>
struct LogicalNotOp {
  __device__ __forceinline__ bool operator()(T v) const { return !(ld(v) != comp_t<T>(0)); }
};

template <class T>
bool unary_integral(UnaryOp op, const Tensor& out, const Tensor& x, double a, double b) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    switch (op) {
      case UnaryOp::Neg: launch<1, T, T>("unary", out, &x, INeg<T>{}); return true;
      case UnaryOp::Abs: launch<1, T, T>("unary", out, &x, IAbs<T>{}); return true;
      case UnaryOp::Sign: launch<1, T, T>("unary", out, &x, ISign<T>{}); return true;
      case UnaryOp::Clamp: launch<1, T, T>("unary", out, &x, IClamp<T>{a, b}); return true;
      default: return false;
    }
  }
  (void)op; (void)out; (void)x; (void)a; (void)b;
  return false;
}

template <class T, class Op>
void run_unary(const Tensor& out, const Tensor& x, Op op) {
  launch<1, T, T>("unary", out, &x, FloatUnary<T, Op>{op});
}

// ---- binary functors ----
template <class T, class Op>
struct FloatBinary {
  Op op;
  __device__ __forceinline__ T operator()(T x, T y) const { return st<T>(op(ld(x), ld(y))); }
};
template <class T, class Op>
struct Compare {
  Op op;
  __device__ __forceinline__ bool operator()(T x, T y) const { return op(ld(x), ld(y)); }
};
template <class T, class Op>
struct IntBinary {
  Op op;
  __device__ __forceinline__ T operator()(T x, T y) const { return T(op(x, y)); }
};

#define MC_EW_BINARY(NAME, EXPR)                                                          \
  struct NAME {                                                                           \
    template <class C>                                                                    \
    __device__ __forceinline__ auto operator()(C x, C y) const { return EXPR; }           \
  };
MC_EW_BINARY(BAdd, x + y)
MC_EW_BINARY(BSub, x - y)
MC_EW_BINARY(BMul, x * y)
MC_EW_BINARY(BDiv, x / y)
MC_EW_BINARY(BPow, std::pow(x, y))
MC_EW_BINARY(BMax, (x != x || x > y) ? x : y)
MC_EW_BINARY(BMin, (x != x || x < y) ? x : y)
MC_EW_BINARY(BIntMax, x > y ? x : y)
MC_EW_BINARY(BIntMin, x < y ? x : y)
MC_EW_BINARY(BEq, x == y)
MC_EW_BINARY(BNe, x != y)
MC_EW_BINARY(BLt, x < y)
MC_EW_BINARY(BLe, x <= y)
MC_EW_BINARY(BGt, x > y)
MC_EW_BINARY(BGe, x >= y)
MC_EW_BINARY(BAnd, x != C(0) && y != C(0))
MC_EW_BINARY(BOr, x != C(0) || y != C(0))
// Activation backwards: x is the incoming gradient g, y the forward input (output for sigmoid/tanh).
MC_EW_BINARY(BReluBwd, y > C(0) ? x : C(0))
MC_EW_BINARY(BGeluErfBwd, x * math::gelu_erf_grad(y))
MC_EW_BINARY(BGeluTanhBwd, x * math::gelu_tanh_grad(y))
MC_EW_BINARY(BQuickGeluBwd, x * math::quick_gelu_grad(y))
MC_EW_BINARY(BSigmoidBwd, x * y * (C(1) - y))
MC_EW_BINARY(BTanhBwd, x * (C(1) - y * y))
#undef MC_EW_BINARY

template <class T>
bool binary_integral(BinaryOp op, const Tensor& out, const Tensor* ab) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    switch (op) {
      case BinaryOp::Add: launch<2, T, T, T>("binary", out, ab, IntBinary<T, BAdd>{}); return true;
      case BinaryOp::Sub: launch<2, T, T, T>("binary", out, ab, IntBinary<T, BSub>{}); return true;
      case BinaryOp::Mul: launch<2, T, T, T>("binary", out, ab, IntBinary<T, BMul>{}); return true;
      case BinaryOp::Maximum: launch<2, T, T, T>("binary", out, ab, IntBinary<T, BIntMax>{}); return true;
      case BinaryOp::Minimum: launch<2, T, T, T>("binary", out, ab, IntBinary<T, BIntMin>{}); return true;
      default: return false;  // integer division is left undefined, as on the CPU
    }
  }
  (void)op; (void)out; (void)ab;
  return false;
}

template <class T>
struct WhereOp {
  __device__ __forceinline__ T operator()(bool c, T x, T y) const { return c ? x : y; }
};

void check_same_shape(const char* op, const Tensor& out, const Tensor& t) {
  MC_CHECK(t.shape() == out.shape(), op, ": operand shape ", shape_str(t.shape()), " differs from the output ",
           shape_str(out.shape()), " (inputs arrive expanded)");
}

}  // namespace

void unary(UnaryOp op, const Tensor& out, const Tensor& x, double a, double b) {
  check_same_shape("unary", out, x);
  const DType dt = x.dtype();
  if (op == UnaryOp::LogicalNot) {
    MC_CHECK(out.dtype() == DType::Bool, "logical_not: output must be bool, got ", dtype_name(out.dtype()));
    MC_CUDA_DISPATCH(dt, T, launch<1, bool, T>("logical_not", out, &x, LogicalNotOp<T>{}));
    return;
  }
  MC_CHECK(out.dtype() == dt, "unary: output dtype ", dtype_name(out.dtype()), " differs from the input's ",
           dtype_name(dt));
  if (!is_floating(dt)) {
    bool done = false;
    MC_CUDA_DISPATCH(dt, T, done = unary_integral<T>(op, out, x, a, b));
    MC_CHECK(done, "unary op ", int(op), ": not defined for dtype ", dtype_name(dt));
    return;
  }
  MC_CUDA_DISPATCH_FLOAT(dt, "unary", T, {
    using C = comp_t<T>;
    switch (op) {
      case UnaryOp::Neg: run_unary<T>(out, x, UNeg{}); break;
      case UnaryOp::Exp: run_unary<T>(out, x, UExp{}); break;
      case UnaryOp::Log: run_unary<T>(out, x, ULog{}); break;
      case UnaryOp::Log1p: run_unary<T>(out, x, ULog1p{}); break;
      case UnaryOp::Sqrt: run_unary<T>(out, x, USqrt{}); break;
      case UnaryOp::Rsqrt: run_unary<T>(out, x, URsqrt{}); break;
      case UnaryOp::Abs: run_unary<T>(out, x, UAbs{}); break;
      case UnaryOp::Sign: run_unary<T>(out, x, USign{}); break;
      case UnaryOp::Tanh: run_unary<T>(out, x, UTanh{}); break;
      case UnaryOp::Sigmoid: run_unary<T>(out, x, USigmoid{}); break;
      case UnaryOp::Relu: run_unary<T>(out, x, URelu{}); break;
      case UnaryOp::GeluErf: run_unary<T>(out, x, UGeluErf{}); break;
      case UnaryOp::GeluTanh: run_unary<T>(out, x, UGeluTanh{}); break;
      case UnaryOp::QuickGelu: run_unary<T>(out, x, UQuickGelu{}); break;
      case UnaryOp::Sin: run_unary<T>(out, x, USin{}); break;
      case UnaryOp::Cos: run_unary<T>(out, x, UCos{}); break;
      case UnaryOp::Reciprocal: run_unary<T>(out, x, UReciprocal{}); break;
      case UnaryOp::Floor: run_unary<T>(out, x, UFloor{}); break;
      case UnaryOp::Clamp: run_unary<T>(out, x, UClamp<C>{C(a), C(b)}); break;
      case UnaryOp::PowScalar:
        if (a == 2) run_unary<T>(out, x, USquare{});
        else if (a == 0.5) run_unary<T>(out, x, USqrt{});
        else run_unary<T>(out, x, UPow<C>{C(a)});
        break;
      case UnaryOp::LogicalNot: break;  // handled above
    }
  });
}

void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b) {
  const DType dt = a.dtype();
  MC_CHECK(b.dtype() == dt, "binary: operand dtypes differ (", dtype_name(dt), ", ", dtype_name(b.dtype()), ")");
  check_same_shape("binary", out, a);
  check_same_shape("binary", out, b);
  const Tensor ab[2] = {a, b};
  const bool compare = op >= BinaryOp::Eq && op <= BinaryOp::LogicalOr;
  if (compare) {
    MC_CHECK(out.dtype() == DType::Bool, "binary: comparison output must be bool, got ", dtype_name(out.dtype()));
    MC_CUDA_DISPATCH(dt, T, {
      switch (op) {
        case BinaryOp::Eq: launch<2, bool, T, T>("eq", out, ab, Compare<T, BEq>{}); break;
        case BinaryOp::Ne: launch<2, bool, T, T>("ne", out, ab, Compare<T, BNe>{}); break;
        case BinaryOp::Lt: launch<2, bool, T, T>("lt", out, ab, Compare<T, BLt>{}); break;
        case BinaryOp::Le: launch<2, bool, T, T>("le", out, ab, Compare<T, BLe>{}); break;
        case BinaryOp::Gt: launch<2, bool, T, T>("gt", out, ab, Compare<T, BGt>{}); break;
        case BinaryOp::Ge: launch<2, bool, T, T>("ge", out, ab, Compare<T, BGe>{}); break;
        case BinaryOp::LogicalAnd: launch<2, bool, T, T>("logical_and", out, ab, Compare<T, BAnd>{}); break;
        case BinaryOp::LogicalOr: launch<2, bool, T, T>("logical_or", out, ab, Compare<T, BOr>{}); break;
        default: break;
      }
    });
    return;
  }
  MC_CHECK(out.dtype() == dt, "binary: output dtype ", dtype_name(out.dtype()), " differs from the operands' ",
           dtype_name(dt));
  if (!is_floating(dt)) {
    bool done = false;
    MC_CUDA_DISPATCH(dt, T, done = binary_integral<T>(op, out, ab));
    MC_CHECK(done, "binary op ", int(op), ": not defined for dtype ", dtype_name(dt));
    return;
  }
  MC_CUDA_DISPATCH_FLOAT(dt, "binary", T, {
    auto run = [&](auto f) { launch<2, T, T, T>("binary", out, ab, FloatBinary<T, decltype(f)>{f}); };
    switch (op) {
      case BinaryOp::Add: run(BAdd{}); break;
      case BinaryOp::Sub: run(BSub{}); break;
      case BinaryOp::Mul: run(BMul{}); break;
      case BinaryOp::Div: run(BDiv{}); break;
      case BinaryOp::Pow: run(BPow{}); break;
      case BinaryOp::Maximum: run(BMax{}); break;
      case BinaryOp::Minimum: run(BMin{}); break;
      case BinaryOp::ReluBackward: run(BReluBwd{}); break;
      case BinaryOp::GeluErfBackward: run(BGeluErfBwd{}); break;
      case BinaryOp::GeluTanhBackward: run(BGeluTanhBwd{}); break;
      case BinaryOp::QuickGeluBackward: run(BQuickGeluBwd{}); break;
      case BinaryOp::SigmoidBackward: run(BSigmoidBwd{}); break;
      case BinaryOp::TanhBackward: run(BTanhBwd{}); break;
      default: break;
    }
  });
}

void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b) {
  MC_CHECK(cond.dtype() == DType::Bool, "where: condition must be bool, got ", dtype_name(cond.dtype()));
  MC_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), "where: operand dtypes (", dtype_name(a.dtype()),
           ", ", dtype_name(b.dtype()), ") differ from the output's ", dtype_name(out.dtype()));
  check_same_shape("where", out, cond);
  check_same_shape("where", out, a);
  check_same_shape("where", out, b);
  const Tensor in[3] = {cond, a, b};
  MC_CUDA_DISPATCH(out.dtype(), T, launch<3, T, bool, T, T>("where", out, in, WhereOp<T>{}));
}

}  // namespace mc::cuda
