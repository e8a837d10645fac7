// The per-operator clock: read once per kernel, so it must cost as little as possible.
//
// x86-64: the TSC (rdtsc: ~10 ns on this VM against ~23 ns for steady_clock through the
// vDSO), converted with a rate calibrated once against steady_clock over 5 ms; Linux exposes
// an invariant TSC as "constant_tsc nonstop_tsc". Elsewhere steady_clock itself (a Cortex-A8
// has no counter user space may read). Header-only: the SOFIE glue and the runner's backends
// both use it, the glue also in the library the Python harness loads.
#pragma once

#include <chrono>
#include <cstdint>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

namespace auditor {

inline std::uint64_t op_ticks()
{
#if defined(__x86_64__)
   return __rdtsc();
#else
   return static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
#endif
}

// Nanoseconds per tick of op_ticks(); the first call on x86-64 spends 5 ms calibrating.
inline double op_ns_per_tick()
{
#if defined(__x86_64__)
   static const double rate = [] {
      using Clock = std::chrono::steady_clock;
      const Clock::time_point c0 = Clock::now();
      const std::uint64_t t0 = __rdtsc();
      Clock::time_point c1 = c0;
      while (c1 - c0 < std::chrono::milliseconds(5))
         c1 = Clock::now();
      const std::uint64_t t1 = __rdtsc();
      return std::chrono::duration<double, std::nano>(c1 - c0).count() / static_cast<double>(t1 - t0);
   }();
   return rate;
#else
   using P = std::chrono::steady_clock::period;
   return 1e9 * static_cast<double>(P::num) / static_cast<double>(P::den);
#endif
}

// What one op_ticks() read costs here, in ns (4096 back-to-back reads, averaged):
// each instrumented kernel boundary adds about this much to the inference.
inline double op_read_cost_ns()
{
   static const double cost = [] {
      constexpr int kReads = 4096;
      volatile std::uint64_t sink = 0;
      const std::uint64_t t0 = op_ticks();
      for (int i = 0; i < kReads; ++i)
         sink = op_ticks();
      (void)sink;
      return static_cast<double>(op_ticks() - t0) * op_ns_per_tick() / kReads;
   }();
   return cost;
}

inline const char *op_clock_name()
{
#if defined(__x86_64__)
   return "rdtsc, calibrated against steady_clock";
#else
   return "steady_clock";
#endif
}

}  // namespace auditor
