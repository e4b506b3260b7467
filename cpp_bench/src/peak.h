// srbench --peak: measured FP32 FMA peak of this machine (see peak.cpp).
#pragma once

#include <string>

#include "common.h"

namespace srbench {

struct PeakResult {
  std::string isa;       // the FMA kernel used: avx512f, avx2+fma or scalar
  int threads = 0;
  double gflops = 0.0;   // best round, all threads together
  double seconds = 0.0;  // total measuring time
  double checksum = 0.0; // keeps the compiler from dropping the chains
};

// Runs FMA chains on `threads` threads for about `seconds` (3 rounds; the best is kept).
PeakResult measure_fma_peak(int threads, double seconds);

}  // namespace srbench
