// srbench --peak: the machine's FP32 fused-multiply-add peak, measured.
//
// Each thread runs independent FMA chains on vector registers (no memory traffic): enough
// chains to cover the FMA latency on two FMA ports (16 x 512-bit with AVX-512: 32 registers;
// 12 x 256-bit with AVX2+FMA: 16 registers). The widest ISA the CPU reports is used, chosen at
// run time, so the binary still runs on any x86-64 (and on other CPUs through a scalar loop
// the compiler vectorises as it can). FLOPs = 2 per lane per FMA. The best of several rounds
// is reported, as for any peak: the machine may be shared.
#include "peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SRBENCH_X86 1
#endif

namespace srbench {
namespace {

constexpr long kInner = 1 << 14;  // FMA rounds between clock reads

#ifdef SRBENCH_X86
__attribute__((target("avx512f"))) double fma_avx512(long rounds) {
  __m512 a[16];
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < 16; ++i) a[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
  for (long r = 0; r < rounds; ++r)
    for (int i = 0; i < 16; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  __m512 s = a[0];
  for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, a[i]);
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  return out[0];  // keeps the chains alive
}

__attribute__((target("avx2,fma"))) double fma_avx2(long rounds) {
  __m256 a[12];
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
  for (long r = 0; r < rounds; ++r)
    for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  __m256 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, a[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return out[0];
}
#endif

double fma_scalar(long rounds) {
  float a[32];
  for (int i = 0; i < 32; ++i) a[i] = 1.0f + i * 1e-3f;
  for (long r = 0; r < rounds; ++r)
    for (int i = 0; i < 32; ++i) a[i] = a[i] * 0.999999f + 1e-7f;
  float s = 0;
  for (float v : a) s += v;
  return s;
}

struct Kernel {
  const char* isa;
  int flops_per_round;  // 2 * lanes * chains
  double (*fn)(long);
};

Kernel pick_kernel() {
#ifdef SRBENCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {"avx512f", 2 * 16 * 16, fma_avx512};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {"avx2+fma", 2 * 8 * 12, fma_avx2};
#endif
  return {"scalar (compiler-vectorised)", 2 * 32, fma_scalar};
}

}  // namespace

PeakResult measure_fma_peak(int threads, double seconds) {
  if (threads < 1) throw UserError("--peak: --threads must be >= 1");
  if (!(seconds > 0)) throw UserError("--peak: duration must be > 0");
  const Kernel k = pick_kernel();
  PeakResult res;
  res.isa = k.isa;
  res.threads = threads;
  k.fn(kInner);  // warm the core up (frequency, page in the code)
  for (int round = 0; round < 3; ++round) {
    std::atomic<bool> go{false};
    std::vector<long> done(threads, 0);
    std::vector<double> sink(threads, 0);
    std::vector<std::thread> pool;
    const double per_round = seconds / 3;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        while (!go.load()) std::this_thread::yield();
        const auto t0 = std::chrono::steady_clock::now();
        long n = 0;
        double s = 0;
        while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < per_round) {
          s += k.fn(kInner);
          n += kInner;
        }
        done[t] = n;
        sink[t] = s;
      });
    }
    const auto t0 = std::chrono::steady_clock::now();
    go = true;
    for (auto& th : pool) th.join();
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double flops = 0;
    for (int t = 0; t < threads; ++t) flops += static_cast<double>(done[t]) * k.flops_per_round;
    res.gflops = std::max(res.gflops, flops / elapsed / 1e9);
    res.checksum += sink[0];
  }
  res.seconds = seconds;
  return res;
}

}  // namespace srbench
