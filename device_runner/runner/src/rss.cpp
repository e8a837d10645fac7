#include "rss.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <cstdio>

namespace auditor {
namespace {
long long now_ns()
{
   return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

long long current_rss_kb()
{
   std::FILE *f = std::fopen("/proc/self/statm", "r");
   if (!f)
      return -1;
   long long size = 0, resident = 0;
   const int n = std::fscanf(f, "%lld %lld", &size, &resident);
   std::fclose(f);
   if (n != 2)
      return -1;
   return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

long long max_rss_kb()
{
   struct rusage ru {};
   getrusage(RUSAGE_SELF, &ru);
   return ru.ru_maxrss;  // kilobytes on Linux
}

RssSampler::RssSampler(double interval_ms) : interval_ms_(interval_ms) {}

RssSampler::~RssSampler() { stop(); }

void RssSampler::start()
{
   t0_ns_ = now_ns();
   samples_.clear();
   samples_.emplace_back(0.0, current_rss_kb());
   if (interval_ms_ <= 0)
      return;
   samples_.reserve(1 << 16);
   running_ = true;
   // Under SCHED_FIFO the sampler must start one priority step above the timed loop, or a
   // busy loop on the same CPU never lets it run (explicit attributes: an inherited policy
   // would leave it waiting behind the loop before it could raise itself).
   pthread_attr_t attr;
   pthread_attr_init(&attr);
   int policy = 0;
   struct sched_param param {};
   if (pthread_getschedparam(pthread_self(), &policy, &param) == 0 && policy == SCHED_FIFO) {
      param.sched_priority = std::min(param.sched_priority + 1, sched_get_priority_max(SCHED_FIFO));
      pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED);
      pthread_attr_setschedpolicy(&attr, SCHED_FIFO);
      pthread_attr_setschedparam(&attr, &param);
   }
   const int rc = pthread_create(&thread_, &attr, [](void *self) -> void * {
      static_cast<RssSampler *>(self)->loop();
      return nullptr;
   }, this);
   pthread_attr_destroy(&attr);
   if (rc != 0)
      running_ = false;
   started_ = rc == 0;
}

void RssSampler::stop()
{
   running_ = false;
   if (started_) {
      pthread_join(thread_, nullptr);
      started_ = false;
   }
   if (t0_ns_ != 0) {
      samples_.emplace_back((now_ns() - t0_ns_) / 1e6, current_rss_kb());
      t0_ns_ = 0;
   }
}

void RssSampler::loop()
{
   const auto period = std::chrono::nanoseconds(static_cast<long long>(interval_ms_ * 1e6));
   auto next = std::chrono::steady_clock::now() + period;
   while (running_) {
      std::this_thread::sleep_until(next);
      next += period;
      if (samples_.size() < (1u << 20))  // bounded: about 16 MB of samples at most
         samples_.emplace_back((now_ns() - t0_ns_) / 1e6, current_rss_kb());
   }
}

}  // namespace auditor
