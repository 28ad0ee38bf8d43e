// kernels/gemm.cu — batched matmul and the fused linear layer on cuBLASLt.
//
// Row-major to column-major: a row-major [M, N] matrix is the column-major [N, M] matrix with the same
// memory, so out = a @ b is computed as out^T = b^T a^T. More generally, a logical r x c matrix whose
// element (i, j) sits at i*si + j*sj is a cuBLAS operand when one of si, sj is 1: si == 1 is a stored
// column-major r x c matrix (op N, ld = sj), sj == 1 the transpose of a stored c x r one (op T, ld = si).
// The output takes whichever orientation gives it a unit stride (out^T = b^T a^T when its rows are
// dense, out = a b when its columns are), or goes through a contiguous temporary. Operands that are no
// cuBLAS matrix (no unit stride, overlapping rows) are copied to contiguous memory first; batch strides
// may be anything non-negative, 0 included (a broadcast operand).
//
// cuBLASLt runs every product: one handle, per-shape cached descriptors and heuristic algorithm (keyed
// also by the pointer alignments, which the heuristic depends on), workspace from the caching allocator,
// everything on stream(). f32 computes in f32 (TF32 tensor cores only when cuda::tf32() is on), bf16/f16
// in f32 with one rounding at the store and no split-K reduction in the half type, f64 in f64. Should
// the heuristic offer no algorithm, the classic cublasGemmStridedBatchedEx runs the product instead.
//
// linear_fused (out = x @ w^T with a bias / GELU epilogue) runs out^T = w x^T so that cuBLASLt's bias runs
// along the output features. cuBLASLt's GELU is the tanh form; f64 GELU and unsupported cases take a plain
// product followed by an exact epilogue kernel.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "common.cuh"
#include "kernels.cuh"

namespace mc::cuda {
namespace {

#define MC_CUBLAS_CHECK(call, what)                                                                            \
  do {                                                                                                         \
    cublasStatus_t mc_st_ = (call);                                                                            \
    if (mc_st_ != CUBLAS_STATUS_SUCCESS)                                                                       \
      ::mc::fail(what, ": ", #call, " failed: ", cublasLtGetStatusString(mc_st_), " (", int(mc_st_), ")"); \
  } while (0)

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // most workspace an algorithm may ask for
constexpr int64_t kMaxBatch = 65535;                   // batches are issued in chunks of at most this many
constexpr int64_t kIntMax = 2147483647;

// ---- operands ----

// A cuBLAS operand: the stored column-major rows x cols matrix (leading dimension ld) and the op
// that turns it into the logical matrix.
struct Operand {
  cublasOperation_t op = CUBLAS_OP_N;
  int64_t rows = 0, cols = 0, ld = 0;
};

// The logical r x c matrix with element (i, j) at i*si + j*sj as an operand; false when it is none.
// allow_t = false asks for op N (the output matrix cannot be transposed).
bool as_operand(int64_t r, int64_t c, int64_t si, int64_t sj, bool allow_t, Operand& o) {
  if (si == 1 || r == 1) {
    const int64_t ld = c == 1 ? std::max<int64_t>(r, 1) : sj;
    if (ld >= std::max<int64_t>(r, 1)) {
      o = {CUBLAS_OP_N, r, c, ld};
      return true;
    }
  }
  if (allow_t && (sj == 1 || c == 1)) {
    const int64_t ld = r == 1 ? std::max<int64_t>(c, 1) : si;
    if (ld >= std::max<int64_t>(c, 1)) {
      o = {CUBLAS_OP_T, c, r, ld};
      return true;
    }
  }
  return false;
}

// Elements one stored matrix spans (from its first to past its last element).
int64_t span(const Operand& o) { return o.ld * (o.cols - 1) + o.rows; }

// A [B, R, C] tensor whose matrices are cuBLAS operands (in either orientation) and whose batch stride is
// usable; otherwise a contiguous copy is needed.
bool operand_ok(const Tensor& t) {
  Operand o;
  return t.stride(0) >= 0 && as_operand(t.size(1), t.size(2), t.stride(1), t.stride(2), true, o);
}

// The largest power of two (at most 256) that divides the address of every matrix of a batch.
int alignment(const void* p, int64_t batch_stride_bytes) {
  uint64_t v = uint64_t(reinterpret_cast<uintptr_t>(p)) | 256u | uint64_t(batch_stride_bytes);
  return int(v & (~v + 1));
}

cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::F32: return CUDA_R_32F;
    case DType::F64: return CUDA_R_64F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default: fail("matmul: expected a floating dtype, got ", dtype_name(dt));
  }
}

cublasComputeType_t compute_type(DType dt) {
  if (dt == DType::F64) return CUBLAS_COMPUTE_64F;
  if (dt == DType::F32 && tf32()) return CUBLAS_COMPUTE_32F_FAST_TF32;
  return CUBLAS_COMPUTE_32F;
}

// One strided-batched product D = op(A) op(B) (column-major, m x n, depth k) with an optional epilogue.
struct Gemm {
  DType dt = DType::F32;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  Operand A, B, D;
  const char* pa = nullptr;
  const char* pb = nullptr;
  char* pd = nullptr;
  int64_t sa = 0, sb = 0, sd = 0;  // batch strides in elements
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;  // [m], D's dtype, contiguous
  void* aux = nullptr;         // GELU input, column-major m x n with leading dimension aux_ld
  int64_t aux_ld = 0;
};

// ---- cuBLASLt: handle, cache of descriptors + algorithms ----

struct LtKey {
  int64_t v[26];
  bool operator==(const LtKey& o) const { return std::memcmp(v, o.v, sizeof(v)) == 0; }
};
struct LtKeyHash {
  size_t operator()(const LtKey& k) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t x : k.v) h = (h ^ uint64_t(x)) * 1099511628211ull;
    return size_t(h);
  }
};

struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  bool found = false;  // false: cuBLASLt has no algorithm for it (the classic cuBLAS call runs instead)
};

struct LtState {
  std::mutex mu;
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t classic = nullptr;
  std::unordered_map<LtKey, LtPlan, LtKeyHash> plans;
};

LtState& lt_state() {
  static LtState* s = [] {
    auto* st = new LtState();  // lives for the process: the handles must outlive every static tensor
    MC_CUBLAS_CHECK(cublasLtCreate(&st->lt), "matmul");
    return st;
  }();
  return *s;
}

void destroy_plan(LtPlan& p) {
  if (p.la) cublasLtMatrixLayoutDestroy(p.la);
  if (p.lb) cublasLtMatrixLayoutDestroy(p.lb);
  if (p.ld) cublasLtMatrixLayoutDestroy(p.ld);
  if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  p = LtPlan{};
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t t, const Operand& o, int64_t batch, int64_t stride,
                                   const char* what) {
  cublasLtMatrixLayout_t l = nullptr;
  MC_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, t, uint64_t(o.rows), uint64_t(o.cols), o.ld), what);
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    MC_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)),
                    what);
    MC_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)),
        what);
  }
  return l;
}

template <class Attr, class V>
void set_desc(cublasLtMatmulDesc_t d, Attr a, const V& v, const char* what) {
  MC_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, a, &v, sizeof(v)), what);
}

// Builds descriptors and asks the heuristic for the best algorithm (called with the state's lock held).
LtPlan make_plan(LtState& st, const Gemm& g, const char* what) {
  LtPlan p;
  const cudaDataType_t t = cuda_type(g.dt);
  const cublasComputeType_t ct = compute_type(g.dt);
  const cudaDataType_t scale = g.dt == DType::F64 ? CUDA_R_64F : CUDA_R_32F;
  const size_t es = dtype_size(g.dt);
  try {
    MC_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, ct, scale), what);
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(g.A.op), what);
    set_desc(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(g.B.op), what);
    if (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
      set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(g.epilogue), what);
      if (g.bias) set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias, what);
      if (g.aux) {
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<const void*>(g.aux), what);
        set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, g.aux_ld, what);
      }
    }
    p.la = make_layout(t, g.A, g.batch, g.sa, what);
    p.lb = make_layout(t, g.B, g.batch, g.sb, what);
    p.ld = make_layout(t, g.D, g.batch, g.sd, what);

    cublasLtMatmulPreference_t pref = nullptr;
    MC_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref), what);
    cublasLtMatmulHeuristicResult_t res{};
    int returned = 0;
    cublasStatus_t hs = CUBLAS_STATUS_SUCCESS;
    {
      const uint64_t ws = kWorkspaceBytes;
      const uint32_t red = CUBLASLT_REDUCTION_SCHEME_MASK & ~uint32_t(CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE);
      const uint32_t al_a = uint32_t(alignment(g.pa, g.batch > 1 ? g.sa * int64_t(es) : 0));
      const uint32_t al_b = uint32_t(alignment(g.pb, g.batch > 1 ? g.sb * int64_t(es) : 0));
      const uint32_t al_d = uint32_t(alignment(g.pd, g.batch > 1 ? g.sd * int64_t(es) : 0));
      hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
      if (hs == CUBLAS_STATUS_SUCCESS)
        hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof(red));
      if (hs == CUBLAS_STATUS_SUCCESS)
        hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a));
      if (hs == CUBLAS_STATUS_SUCCESS)
        hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b));
      if (hs == CUBLAS_STATUS_SUCCESS)
        hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d));
      if (hs == CUBLAS_STATUS_SUCCESS)
        hs = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d));
      if (hs == CUBLAS_STATUS_SUCCESS)
        hs = cublasLtMatmulAlgoGetHeuristic(st.lt, p.desc, p.la, p.lb, p.ld, p.ld, pref, 1, &res, &returned);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    // NOT_SUPPORTED (or an empty answer) means no algorithm: the caller falls back.
    if (hs != CUBLAS_STATUS_SUCCESS && hs != CUBLAS_STATUS_NOT_SUPPORTED)
      fail(what, ": cublasLtMatmulAlgoGetHeuristic failed: ", cublasLtGetStatusString(hs));
    if (hs == CUBLAS_STATUS_SUCCESS && returned > 0 && res.state == CUBLAS_STATUS_SUCCESS) {
      p.algo = res.algo;
      p.workspace = res.workspaceSize;
      p.found = true;
    }
  } catch (...) {
    destroy_plan(p);
    throw;
  }
  return p;
}

LtKey make_key(const Gemm& g) {
  const int64_t es = int64_t(dtype_size(g.dt));
  const bool b = g.batch > 1;
  LtKey k{{int64_t(g.dt), int64_t(compute_type(g.dt)), g.m, g.n, g.k, g.batch, int64_t(g.A.op), g.A.ld,
           int64_t(g.B.op), g.B.ld, g.D.ld, b ? g.sa : 0, b ? g.sb : 0, b ? g.sd : 0,
           alignment(g.pa, b ? g.sa * es : 0), alignment(g.pb, b ? g.sb * es : 0), alignment(g.pd, b ? g.sd * es : 0),
           int64_t(g.epilogue), g.bias ? alignment(g.bias, 0) : 0, g.aux ? alignment(g.aux, 0) : 0, g.aux_ld,
           g.A.rows, g.B.rows, 0, 0, 0}};
  return k;
}

// Runs g on cuBLASLt; false when cuBLASLt has no algorithm for it.
bool run_lt(const Gemm& g, const char* what) {
  LtState& st = lt_state();
  std::lock_guard<std::mutex> lock(st.mu);
  const LtKey key = make_key(g);
  auto it = st.plans.find(key);
  if (it == st.plans.end()) {
    if (st.plans.size() >= 4096) {  // unbounded shape streams: start over rather than grow forever
      for (auto& kv : st.plans) destroy_plan(kv.second);
      st.plans.clear();
    }
    it = st.plans.emplace(key, make_plan(st, g, what)).first;
  }
  LtPlan& p = it->second;
  if (!p.found) return false;
  // The pointers of this call (the cached descriptor may hold another call's).
  if (g.bias) set_desc(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias, what);
  if (g.aux) set_desc(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<const void*>(g.aux), what);
  Tensor ws;
  if (p.workspace > 0) ws = scratch(int64_t(p.workspace));
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const bool f64 = g.dt == DType::F64;
  const cublasStatus_t s = cublasLtMatmul(
      st.lt, p.desc, f64 ? static_cast<const void*>(&one_d) : &one_f, g.pa, p.la, g.pb, p.lb,
      f64 ? static_cast<const void*>(&zero_d) : &zero_f, g.pd, p.ld, g.pd, p.ld, &p.algo,
      ws.defined() ? ws.raw_data() : nullptr, p.workspace, stream());
  if (s != CUBLAS_STATUS_SUCCESS)
    fail(what, ": cublasLtMatmul failed (", cublasLtGetStatusString(s), ") for m=", g.m, " n=", g.n, " k=", g.k,
         " batch=", g.batch, " dtype ", dtype_name(g.dt), " lda=", g.A.ld, " ldb=", g.B.ld, " ldd=", g.D.ld);
  return true;
}

// The classic cuBLAS call (no epilogue), for products cuBLASLt declines.
void run_classic(const Gemm& g, const char* what) {
  MC_CHECK(g.epilogue == CUBLASLT_EPILOGUE_DEFAULT, what, ": internal error: epilogue on the classic path");
  MC_CHECK(g.m <= kIntMax && g.n <= kIntMax && g.k <= kIntMax && g.A.ld <= kIntMax && g.B.ld <= kIntMax &&
               g.D.ld <= kIntMax,
           what, ": matrix too large for cuBLAS (m=", g.m, " n=", g.n, " k=", g.k, ")");
  LtState& st = lt_state();
  std::lock_guard<std::mutex> lock(st.mu);
  if (!st.classic) {
    MC_CUBLAS_CHECK(cublasCreate(&st.classic), what);
    MC_CUBLAS_CHECK(cublasSetMathMode(st.classic, cublasMath_t(CUBLAS_DEFAULT_MATH |
                                                               CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
                    what);
  }
  MC_CUBLAS_CHECK(cublasSetStream(st.classic, stream()), what);
  const cudaDataType_t t = cuda_type(g.dt);
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const bool f64 = g.dt == DType::F64;
  MC_CUBLAS_CHECK(cublasGemmStridedBatchedEx(st.classic, g.A.op, g.B.op, int(g.m), int(g.n), int(g.k),
                                             f64 ? static_cast<const void*>(&one_d) : &one_f, g.pa, t, int(g.A.ld),
                                             g.sa, g.pb, t, int(g.B.ld), g.sb,
                                             f64 ? static_cast<const void*>(&zero_d) : &zero_f, g.pd, t,
                                             int(g.D.ld), g.sd, int(g.batch), compute_type(g.dt), CUBLAS_GEMM_DEFAULT),
                  what);
}

// Runs g in chunks of at most kMaxBatch matrices; returns false (nothing run) when cuBLASLt has no
// algorithm and `classic_ok` is false.
bool run_gemm(Gemm g, bool classic_ok, const char* what) {
  const int64_t total = g.batch;
  const size_t es = dtype_size(g.dt);
  for (int64_t b0 = 0; b0 < total; b0 += kMaxBatch) {
    Gemm c = g;
    c.batch = std::min(kMaxBatch, total - b0);
    c.pa = g.pa + b0 * g.sa * int64_t(es);
    c.pb = g.pb + b0 * g.sb * int64_t(es);
    c.pd = g.pd + b0 * g.sd * int64_t(es);
    if (c.batch == 1) c.sa = c.sb = c.sd = 0;
    if (!run_lt(c, what)) {
      if (!classic_ok) {
        MC_CHECK(b0 == 0, what, ": internal error: cuBLASLt declined part of a batch");
        return false;
      }
      run_classic(c, what);
    }
  }
  return true;
}

// Plans out = a @ b for 3-d views (out [B, M, N], a [B, M, K], b [B, K, N]) with every matrix a valid
// operand; `bias_rows` asks for out^T = b^T a^T (the orientation where an epilogue bias runs along N).
// False when out itself cannot be D.
bool plan_product(const Tensor& out, const Tensor& a, const Tensor& b, bool bias_rows, Gemm& g) {
  const int64_t B = out.size(0), M = out.size(1), N = out.size(2), K = a.size(2);
  g.dt = out.dtype();
  g.batch = B;
  g.k = K;
  g.pa = static_cast<const char*>(a.raw_data());
  g.pb = static_cast<const char*>(b.raw_data());
  g.pd = static_cast<char*>(out.raw_data());
  g.sa = a.stride(0);
  g.sb = b.stride(0);
  g.sd = out.stride(0);
  Operand D;
  // out^T (N x M): element (j, i) at i*out.stride(1) + j*out.stride(2).
  if (as_operand(N, M, out.stride(2), out.stride(1), false, D)) {
    g.m = N;
    g.n = M;
    g.D = D;
    // A = b^T (N x K), B = a^T (K x M).
    if (!as_operand(N, K, b.stride(2), b.stride(1), true, g.A) || !as_operand(K, M, a.stride(2), a.stride(1), true, g.B))
      return false;
    std::swap(g.pa, g.pb);
    std::swap(g.sa, g.sb);
  } else if (!bias_rows && as_operand(M, N, out.stride(1), out.stride(2), false, D)) {
    g.m = M;
    g.n = N;
    g.D = D;
    if (!as_operand(M, K, a.stride(1), a.stride(2), true, g.A) || !as_operand(K, N, b.stride(1), b.stride(2), true, g.B))
      return false;
  } else {
    return false;
  }
  // Matrices of one batch must not overlap in the output.
  if (B > 1 && (g.sd <= 0 || g.sd < span(g.D))) return false;
  return true;
}

void check_matmul_args(const char* what, const Tensor& out, const Tensor& a, const Tensor& b) {
  MC_CHECK(out.dim() == 3 && a.dim() == 3 && b.dim() == 3, what, ": expects 3-d tensors, got ",
           shape_str(out.shape()), ", ", shape_str(a.shape()), ", ", shape_str(b.shape()));
  MC_CHECK(a.size(0) == out.size(0) && b.size(0) == out.size(0) && a.size(1) == out.size(1) &&
               b.size(2) == out.size(2) && a.size(2) == b.size(1),
           what, ": shapes ", shape_str(a.shape()), " @ ", shape_str(b.shape()), " -> ", shape_str(out.shape()),
           " do not match");
  MC_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), what, ": dtypes differ (", dtype_name(a.dtype()),
           ", ", dtype_name(b.dtype()), ", ", dtype_name(out.dtype()), ")");
  const DType dt = out.dtype();
  MC_CHECK(dt == DType::F32 || dt == DType::F64 || dt == DType::BF16 || dt == DType::F16, what,
           ": not defined for dtype ", dtype_name(dt));
  MC_CHECK(a.size(1) <= kIntMax && a.size(2) <= kIntMax && b.size(2) <= kIntMax, what, ": matrix dimensions of ",
           shape_str(a.shape()), " @ ", shape_str(b.shape()), " exceed 2^31 - 1");
}

// out = epilogue(a @ b) with any views; `ep` other than DEFAULT needs bias_rows orientation. Returns
// false (nothing written) when cuBLASLt has no algorithm and the classic path cannot stand in (epilogues).
bool product(const Tensor& out, const Tensor& a_in, const Tensor& b_in, cublasLtEpilogue_t ep, const void* bias,
             const Tensor& aux, const char* what) {
  const Tensor a = operand_ok(a_in) ? a_in : contiguous(a_in);
  const Tensor b = operand_ok(b_in) ? b_in : contiguous(b_in);
  const bool with_ep = ep != CUBLASLT_EPILOGUE_DEFAULT;
  Gemm g;
  Tensor target = out;
  if (!plan_product(target, a, b, with_ep, g)) {
    target = Tensor::empty(out.shape(), out.dtype(), Device::cuda(0));
    g = Gemm{};
    MC_CHECK(plan_product(target, a, b, with_ep, g), what, ": internal error planning ", shape_str(a.shape()),
             " @ ", shape_str(b.shape()));
  }
  g.epilogue = ep;
  g.bias = bias;
  if (aux.defined()) {
    g.aux = aux.raw_data();
    g.aux_ld = aux.stride(0);
  }
  if (!run_gemm(g, !with_ep, what)) return false;
  if (!target.is_same(out)) copy(out, target);
  return true;
}

// ---- the fallback epilogue (when cuBLASLt declines a fused one): out = act(out + bias), aux = out + bias ----

template <class C, class T>
__device__ __forceinline__ C load_c(T v) {
  if constexpr (std::is_same_v<T, double>) return v; else return C(to_float(v));
}
template <class T, class C>
__device__ __forceinline__ T store_c(C v) {
  if constexpr (std::is_same_v<T, double>) return v; else return from_float<T>(float(v));
}

// out (rows x cols, row stride ld) = act(out + bias[col]); aux (contiguous) receives out + bias. GELU is
// the tanh form, as cuBLASLt's epilogue.
template <class T, class C>
__global__ void epilogue_kernel(T* out, int64_t rows, int64_t cols, int64_t ld, const T* bias, T* aux, bool gelu) {
  const int64_t total = rows * cols;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    C v = load_c<C>(out[r * ld + c]);
    if (bias) v += load_c<C>(bias[c]);
    if (aux) aux[i] = store_c<T>(v);
    if (gelu) {
      const C k = C(0.79788456080286535588);
      v = C(0.5) * v * (C(1) + tanh(k * (v + C(0.044715) * v * v * v)));
    }
    out[r * ld + c] = store_c<T>(v);
  }
}

}  // namespace

void matmul(const Tensor& out, const Tensor& a, const Tensor& b) {
  check_matmul_args("matmul", out, a, b);
  if (out.numel() == 0) return;
  if (a.size(2) == 0) {
    fill(out, 0);
    return;
  }
  product(out, a, b, CUBLASLT_EPILOGUE_DEFAULT, nullptr, Tensor(), "matmul");
}

void linear_fused(const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias, LinearEpilogue epilogue,
                  const Tensor& aux) {
  const char* what = "linear_fused";
  MC_CHECK(out.dim() == 2 && x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1) && out.size(0) == x.size(0) &&
               out.size(1) == w.size(0),
           what, ": expects out [M, N] = x [M, K] @ w[N, K]^T, got ", shape_str(out.shape()), ", ",
           shape_str(x.shape()), ", ", shape_str(w.shape()));
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const bool want_bias = epilogue == LinearEpilogue::Bias || epilogue == LinearEpilogue::GeluBias ||
                         epilogue == LinearEpilogue::GeluAuxBias;
  const bool gelu = epilogue == LinearEpilogue::Gelu || epilogue == LinearEpilogue::GeluBias ||
                    epilogue == LinearEpilogue::GeluAuxBias;
  const bool want_aux = epilogue == LinearEpilogue::GeluAuxBias;
  MC_CHECK(!want_bias || (bias.defined() && bias.dim() == 1 && bias.size(0) == N && bias.dtype() == out.dtype()),
           what, ": this epilogue needs a bias [", N, "] of dtype ", dtype_name(out.dtype()));
  MC_CHECK(!want_aux || (aux.defined() && aux.dim() == 2 && aux.size(0) == M && aux.size(1) == N &&
                         aux.dtype() == out.dtype() && aux.is_contiguous()),
           what, ": GeluAuxBias needs a contiguous aux [", M, ", ", N, "] of dtype ", dtype_name(out.dtype()));
  // 3-d views: out [1, M, N], x [1, M, K], w^T [1, K, N].
  const Tensor o3 = Tensor::view_of(out.storage(), out.dtype(), {1, M, N}, {0, out.stride(0), out.stride(1)},
                                    out.offset());
  const Tensor x3 = Tensor::view_of(x.storage(), x.dtype(), {1, M, K}, {0, x.stride(0), x.stride(1)}, x.offset());
  const Tensor w3 = Tensor::view_of(w.storage(), w.dtype(), {1, K, N}, {0, w.stride(1), w.stride(0)}, w.offset());
  check_matmul_args(what, o3, x3, w3);
  if (out.numel() == 0) return;
  const Tensor bc = want_bias ? contiguous(bias) : Tensor();
  if (K > 0) {
    cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_DEFAULT;
    switch (epilogue) {
      case LinearEpilogue::None: break;
      case LinearEpilogue::Bias: ep = CUBLASLT_EPILOGUE_BIAS; break;
      case LinearEpilogue::Gelu: ep = CUBLASLT_EPILOGUE_GELU; break;
      case LinearEpilogue::GeluBias: ep = CUBLASLT_EPILOGUE_GELU_BIAS; break;
      case LinearEpilogue::GeluAuxBias: ep = CUBLASLT_EPILOGUE_GELU_AUX_BIAS; break;
    }
    // cuBLASLt's GELU input buffer: ld a multiple of 8, at least the rows of D (N). Its f64 GELU is not
    // accurate to f64 precision (~1e-10), so f64 takes the exact kernel below.
    const bool aux_ok = !want_aux || (N % 8 == 0 && alignment(aux.raw_data(), 0) >= 16);
    const bool fused_ok = aux_ok && !(gelu && out.dtype() == DType::F64);
    if (fused_ok && product(o3, x3, w3, ep, want_bias ? bc.raw_data() : nullptr, want_aux ? aux : Tensor(), what))
      return;
    // No fused algorithm: plain product, then the epilogue kernel.
    product(o3, x3, w3, CUBLASLT_EPILOGUE_DEFAULT, nullptr, Tensor(), what);
  } else {
    fill(out, 0);
  }
  if (epilogue == LinearEpilogue::None) return;
  // The kernel needs dense rows in out; go through a contiguous temporary otherwise.
  const bool dense = out.stride(1) == 1 && (M == 1 || out.stride(0) >= N);
  const Tensor o = dense ? out : contiguous(out);
  MC_CUDA_DISPATCH_FLOAT(out.dtype(), what, T, {
    using C = acc_of<T>;
    epilogue_kernel<T, C><<<blocks_for(M * N, 256), 256, 0, stream()>>>(
        dptr<T>(o), M, N, o.stride(0), want_bias ? dptr<const T>(bc) : nullptr, want_aux ? dptr<T>(aux) : nullptr,
        gelu);
    MC_CUDA_LAUNCHED(what);
  });
  if (!dense) copy(out, o);
}

}  // namespace mc::cuda
