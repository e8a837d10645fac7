// Resident memory of this process: a sampling thread reading /proc/self/statm at a fixed
// interval (average and peak while timing) and the OS's own peak (getrusage).
#pragma once

#include <atomic>
#include <pthread.h>
#include <utility>
#include <vector>

namespace auditor {

long long current_rss_kb();  // -1 when /proc is not readable
long long max_rss_kb();      // getrusage ru_maxrss

class RssSampler {
 public:
   explicit RssSampler(double interval_ms);
   ~RssSampler();
   void start();
   void stop();
   // (milliseconds since start, RSS in kB); the first and last samples are taken synchronously.
   const std::vector<std::pair<double, long long>> &samples() const { return samples_; }
   double interval_ms() const { return interval_ms_; }

 private:
   void loop();
   bool started_ = false;
   double interval_ms_;
   std::atomic<bool> running_{false};
   pthread_t thread_{};
   std::vector<std::pair<double, long long>> samples_;
   long long t0_ns_ = 0;
};

}  // namespace auditor
