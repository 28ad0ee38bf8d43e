// Tests for mc::cpu::gemm / gemm_batched against a naive double-precision reference.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include "mc/cpu/gemm.hpp"

namespace {

// A strided matrix view over its own storage: element (i, j) at data[i*rs + j*cs].
template <class T>
struct Mat {
  int64_t rows, cols, rs, cs;
  std::vector<T> data;
  T& at(int64_t i, int64_t j) { return data[size_t(i * rs + j * cs)]; }
  T at(int64_t i, int64_t j) const { return data[size_t(i * rs + j * cs)]; }
};

// Layout: 0 = row-major, 1 = column-major (transposed storage), 2 = row-major with padded rows,
// 3 = both strides > 1 (every other element of a bigger buffer).
template <class T>
Mat<T> make(int64_t rows, int64_t cols, int layout, std::mt19937& rng, T fill = T(0), bool random = true) {
  Mat<T> m{rows, cols, 0, 0, {}};
  switch (layout) {
    case 0: m.rs = cols; m.cs = 1; break;
    case 1: m.rs = 1; m.cs = rows; break;
    case 2: m.rs = cols + 3; m.cs = 1; break;
    default: m.rs = 2 * cols + 1; m.cs = 2; break;
  }
  int64_t span = rows == 0 || cols == 0 ? 1 : (rows - 1) * m.rs + (cols - 1) * m.cs + 1;
  m.data.assign(size_t(span), fill);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  if (random)
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) m.at(i, j) = T(dist(rng));
  return m;
}

// Checks C_out against alpha*A*B + beta*C_in computed in double; the tolerance per element is
// relative to sum_k |a||b| (+ |beta c|), the natural scale of the rounding error.
template <class T>
void check(const Mat<T>& A, const Mat<T>& B, const Mat<T>& Cin, const Mat<T>& Cout, T alpha, T beta, double rel) {
  const int64_t M = A.rows, K = A.cols, N = B.cols;
  int64_t bad = 0;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        double p = double(A.at(i, k)) * double(B.at(k, j));
        s += p;
        mag += std::fabs(p);
      }
      double ref = double(alpha) * s, scale = std::fabs(double(alpha)) * mag;
      if (beta != T(0)) {
        ref += double(beta) * double(Cin.at(i, j));
        scale += std::fabs(double(beta) * double(Cin.at(i, j)));
      }
      double got = double(Cout.at(i, j));
      if (!(std::fabs(got - ref) <= rel * scale + 1e-30)) {
        if (bad < 5) UNSCOPED_INFO("C(" << i << "," << j << ") = " << got << ", expected " << ref);
        ++bad;
      }
    }
  CHECK(bad == 0);
  // Elements of C's buffer outside the matrix (padding) must be untouched.
  std::vector<char> inside(Cout.data.size(), 0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) inside[size_t(i * Cout.rs + j * Cout.cs)] = 1;
  int64_t touched = 0;
  for (size_t p = 0; p < inside.size(); ++p)
    if (!inside[p] && !(Cout.data[p] == Cin.data[p] || (std::isnan(Cout.data[p]) && std::isnan(Cin.data[p]))))
      ++touched;
  CHECK(touched == 0);
}

template <class T>
void run_one(int64_t M, int64_t N, int64_t K, int la, int lb, int lc, T alpha, T beta, std::mt19937& rng) {
  INFO("M=" << M << " N=" << N << " K=" << K << " layouts A=" << la << " B=" << lb << " C=" << lc
            << " alpha=" << alpha << " beta=" << beta);
  Mat<T> A = make<T>(M, K, la, rng), B = make<T>(K, N, lb, rng);
  // beta == 0: C starts as NaN everywhere, and none of it may leak into the result.
  Mat<T> C = beta == T(0) ? make<T>(M, N, lc, rng, std::numeric_limits<T>::quiet_NaN(), false)
                          : make<T>(M, N, lc, rng);
  Mat<T> Cin = C;
  mc::cpu::gemm(M, N, K, alpha, A.data.data(), A.rs, A.cs, B.data.data(), B.rs, B.cs, beta, C.data.data(), C.rs,
                C.cs);
  check(A, B, Cin, C, alpha, beta, std::is_same_v<T, float> ? 1e-5 : 1e-12);
}

}  // namespace

TEST_CASE("gemm f32: odd shapes, row-major", "[gemm]") {
  std::mt19937 rng(1);
  const int64_t shapes[][3] = {{1, 1, 1},    {1, 1, 7},     {7, 13, 5},   {5, 1, 9},     {1, 33, 17},
                               {6, 16, 4},   {12, 32, 3},   {13, 17, 19}, {31, 47, 64},  {50, 50, 64},
                               {67, 131, 259}, {300, 17, 1000}, {17, 300, 700}, {129, 65, 400}, {2, 515, 3},
                               {1, 515, 260}, {260, 1, 515}, {99, 48, 64}};
  for (auto& s : shapes) run_one<float>(s[0], s[1], s[2], 0, 0, 0, 1.f, 0.f, rng);
}

TEST_CASE("gemm f32: transposes and strides", "[gemm]") {
  std::mt19937 rng(2);
  for (int la = 0; la < 4; ++la)
    for (int lb = 0; lb < 4; ++lb) {
      run_one<float>(37, 53, 71, la, lb, 0, 1.f, 0.f, rng);
      run_one<float>(70, 41, 300, la, lb, (la + lb) % 4, 0.5f, 0.f, rng);
    }
  for (int lc = 0; lc < 4; ++lc) run_one<float>(45, 90, 33, 0, 0, lc, 1.f, 1.f, rng);
}

TEST_CASE("gemm f32: alpha and beta", "[gemm]") {
  std::mt19937 rng(3);
  for (float alpha : {1.f, -2.f, 0.25f})
    for (float beta : {0.f, 1.f, -0.5f}) {
      run_one<float>(23, 29, 31, 0, 0, 0, alpha, beta, rng);
      run_one<float>(97, 83, 520, 1, 1, 1, alpha, beta, rng);  // several K blocks: beta only once
    }
}

TEST_CASE("gemm f32: large enough to use threads and several blocks", "[gemm]") {
  std::mt19937 rng(4);
  run_one<float>(203, 411, 397, 0, 0, 0, 1.f, 0.f, rng);
  run_one<float>(411, 203, 397, 1, 1, 2, 1.f, 1.f, rng);
  run_one<float>(20, 900, 150, 0, 1, 0, 1.f, 0.f, rng);   // wide: the N cut
  run_one<float>(900, 20, 150, 1, 0, 1, 1.f, 0.5f, rng);  // tall: the M cut
}

TEST_CASE("gemm: matrix-vector shapes (M == 1 or N == 1)", "[gemm]") {
  std::mt19937 rng(8);
  for (int la = 0; la < 4; ++la)
    for (int lb = 0; lb < 4; ++lb) {
      const int lc = (la + lb) % 4;
      run_one<float>(1, 45, 37, la, lb, lc, 1.f, 0.f, rng);
      run_one<float>(45, 1, 37, la, lb, lc, -0.5f, 2.f, rng);
      run_one<double>(1, 19, 23, la, lb, lc, 1.0, 1.0, rng);
      run_one<double>(19, 1, 23, la, lb, lc, 2.0, 0.0, rng);
    }
  run_one<float>(1, 1, 100, 0, 1, 0, 1.f, 0.f, rng);
  run_one<float>(1, 1300, 400, 0, 0, 0, 1.f, 0.f, rng);  // long enough for threads and two y blocks
  run_one<float>(1, 700, 400, 0, 1, 0, 1.f, 1.f, rng);
  run_one<float>(700, 1, 400, 0, 0, 2, 1.f, 0.f, rng);
  run_one<float>(700, 1, 400, 1, 0, 1, 0.5f, -1.f, rng);
}

TEST_CASE("gemm: zero sizes", "[gemm]") {
  std::mt19937 rng(5);
  // K = 0: C = beta * C; with beta = 0 the NaNs are overwritten by zeros.
  Mat<float> C = make<float>(4, 5, 2, rng);
  Mat<float> Cin = C;
  float dummy = 0;
  mc::cpu::gemm(4, 5, 0, 1.f, &dummy, 1, 1, &dummy, 1, 1, 2.f, C.data.data(), C.rs, C.cs);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 5; ++j) CHECK(C.at(i, j) == 2.f * Cin.at(i, j));
  Mat<float> Cn = make<float>(4, 5, 3, rng, std::numeric_limits<float>::quiet_NaN(), false);
  mc::cpu::gemm(4, 5, 0, 1.f, &dummy, 1, 1, &dummy, 1, 1, 0.f, Cn.data.data(), Cn.rs, Cn.cs);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 5; ++j) CHECK(Cn.at(i, j) == 0.f);
  // M = 0 or N = 0: nothing happens (null pointers are fine).
  mc::cpu::gemm(0, 5, 3, 1.f, nullptr, 3, 1, nullptr, 5, 1, 0.f, nullptr, 5, 1);
  mc::cpu::gemm(4, 0, 3, 1.0, static_cast<const double*>(nullptr), 3, 1, nullptr, 5, 1, 0.0, nullptr, 5, 1);
  run_one<float>(1, 1, 0, 0, 0, 0, 1.f, 0.f, rng);
  run_one<double>(3, 2, 0, 0, 0, 0, 1.0, 0.5, rng);
}

TEST_CASE("gemm f64", "[gemm]") {
  std::mt19937 rng(6);
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {67, 131, 259}, {300, 17, 300}, {130, 70, 90}};
  for (auto& s : shapes) run_one<double>(s[0], s[1], s[2], 0, 0, 0, 1.0, 0.0, rng);
  for (int la = 0; la < 4; ++la)
    for (int lb = 0; lb < 4; ++lb) run_one<double>(29, 43, 37, la, lb, (la + 2 * lb) % 4, -1.5, 0.5, rng);
}

TEST_CASE("gemm_batched", "[gemm]") {
  std::mt19937 rng(7);
  auto run = [&](int64_t batch, int64_t M, int64_t N, int64_t K, bool transB, float beta) {
    INFO("batch=" << batch << " M=" << M << " N=" << N << " K=" << K << " transB=" << transB);
    // One buffer per operand, problems laid out back to back with a gap.
    const int64_t sa = M * K + 5, sb = K * N + 3, sc = M * N + 7;
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    std::vector<float> A(size_t(batch * sa)), B(size_t(batch * sb)), C(size_t(batch * sc));
    for (auto& x : A) x = dist(rng);
    for (auto& x : B) x = dist(rng);
    for (auto& x : C) x = beta == 0.f ? std::numeric_limits<float>::quiet_NaN() : dist(rng);
    std::vector<float> Cin = C;
    const int64_t rsb = transB ? 1 : N, csb = transB ? K : 1;
    mc::cpu::gemm_batched<float>(batch, M, N, K, 1.f, A.data(), sa, K, 1, B.data(), sb, rsb, csb, beta, C.data(),
                                 sc, N, 1);
    for (int64_t b = 0; b < batch; ++b) {
      Mat<float> Am{M, K, K, 1, std::vector<float>(A.begin() + b * sa, A.begin() + b * sa + M * K)};
      Mat<float> Bm{K, N, rsb, csb, std::vector<float>(B.begin() + b * sb, B.begin() + b * sb + K * N)};
      Mat<float> Ci{M, N, N, 1, std::vector<float>(Cin.begin() + b * sc, Cin.begin() + b * sc + M * N)};
      Mat<float> Co{M, N, N, 1, std::vector<float>(C.begin() + b * sc, C.begin() + b * sc + M * N)};
      check(Am, Bm, Ci, Co, 1.f, beta, 1e-5);
    }
    for (int64_t b = 0; b < batch; ++b)  // gaps untouched
      for (int64_t p = M * N; p < sc; ++p) CHECK(std::isnan(C[size_t(b * sc + p)]) == std::isnan(Cin[size_t(b * sc + p)]));
  };
  run(12, 50, 50, 64, false, 0.f);  // attention-sized: parallel across the batch
  run(5, 50, 64, 50, true, 1.f);
  run(3, 150, 140, 300, false, 0.f);  // large: parallel inside each problem
  run(1, 9, 7, 5, false, 0.f);
  run(0, 9, 7, 5, false, 0.f);
  // double
  std::vector<double> A(2 * 6 * 4), B(2 * 4 * 5), C(2 * 6 * 5, std::numeric_limits<double>::quiet_NaN());
  for (size_t i = 0; i < A.size(); ++i) A[i] = double(i % 7) - 3;
  for (size_t i = 0; i < B.size(); ++i) B[i] = double(i % 5) - 2;
  mc::cpu::gemm_batched<double>(2, 6, 5, 4, 1.0, A.data(), 24, 4, 1, B.data(), 20, 5, 1, 0.0, C.data(), 30, 5, 1);
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 5; ++j) {
        double s = 0;
        for (int k = 0; k < 4; ++k) s += A[size_t(b * 24 + i * 4 + k)] * B[size_t(b * 20 + k * 5 + j)];
        CHECK(C[size_t(b * 30 + i * 5 + j)] == s);
      }
}

TEST_CASE("gemm: concurrent calls from several threads", "[gemm]") {
  const int64_t M = 130, N = 90, K = 200;
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::vector<float> A(size_t(M * K)), B(size_t(K * N)), C(size_t(M * N));
      for (int64_t i = 0; i < M * K; ++i) A[size_t(i)] = float((i * (t + 3)) % 11) - 5.f;
      for (int64_t i = 0; i < K * N; ++i) B[size_t(i)] = float((i * (t + 1)) % 7) - 3.f;
      bool good = true;
      for (int rep = 0; rep < 3; ++rep) {
        mc::cpu::gemm(M, N, K, 1.f, A.data(), K, 1, B.data(), N, 1, 0.f, C.data(), N, 1);
        for (int64_t i = 0; i < M; i += 7)
          for (int64_t j = 0; j < N; j += 5) {
            float s = 0;  // small integers: exact in f32
            for (int64_t k = 0; k < K; ++k) s += A[size_t(i * K + k)] * B[size_t(k * N + j)];
            good = good && C[size_t(i * N + j)] == s;
          }
      }
      ok[size_t(t)] = good;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) CHECK(ok[size_t(t)] == 1);
}

TEST_CASE("gemm: invalid sizes throw", "[gemm]") {
  float x = 0;
  CHECK_THROWS_AS(mc::cpu::gemm(-1, 2, 2, 1.f, &x, 1, 1, &x, 1, 1, 0.f, &x, 1, 1), mc::Error);
}
