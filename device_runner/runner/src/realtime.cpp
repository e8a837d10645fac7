#include "realtime.h"

#include <malloc.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>

namespace auditor {
namespace {

// Touches the stack the inferences will use, so its pages are present (and, locked, stay).
__attribute__((noinline)) void prefault_stack()
{
   volatile char page[256 * 1024];
   for (std::size_t i = 0; i < sizeof page; i += 4096)
      page[i] = 0;
}

// Why mlockall(MCL_FUTURE) must not be asked for here, or "" when it may: with a finite
// RLIMIT_MEMLOCK an unprivileged process gets every later allocation past the limit refused
// (a crash inside the model, far from the cause).
std::string memlock_refusal()
{
   struct rlimit lim {};
   if (getrlimit(RLIMIT_MEMLOCK, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY || geteuid() == 0)
      return "";
   return "mlockall not applied: RLIMIT_MEMLOCK is " + std::to_string(lim.rlim_cur / 1024) +
          " KiB and this process is not root, so with MCL_FUTURE every allocation past it would fail; "
          "raise it (ulimit -l unlimited, or memlock in /etc/security/limits.conf) or run as root";
}

}  // namespace

Scheduling apply_scheduling(int fifo_priority, int cpu, bool lock_memory, bool keep_heap)
{
   Scheduling s;
   if (keep_heap) {
      if (mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1)
         s.heap_kept = true;
      else
         s.notes.push_back("mallopt refused M_MMAP_MAX/M_TRIM_THRESHOLD; heap not kept");
   }
   const std::string refusal = lock_memory ? memlock_refusal() : "";
   if (!refusal.empty()) {
      s.notes.push_back(refusal);
   } else if (lock_memory) {
      if (mlockall(MCL_CURRENT | MCL_FUTURE) == 0) {
         prefault_stack();
         s.memory_locked = true;
      } else {
         s.notes.push_back(std::string("mlockall refused: ") + std::strerror(errno) + "; memory not locked");
      }
   }
   if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      if (sched_setaffinity(0, sizeof set, &set) == 0)
         s.cpu = cpu;
      else
         s.notes.push_back("pinning to CPU " + std::to_string(cpu) + " refused: " + std::strerror(errno) +
                           "; not pinned");
   }
   if (fifo_priority > 0) {
      struct sched_param p {};
      p.sched_priority = fifo_priority;
      if (sched_setscheduler(0, SCHED_FIFO, &p) == 0) {
         s.policy = "SCHED_FIFO";
         s.priority = fifo_priority;
         // mlockall is its own switch: it makes every mapped page resident and the RSS
         // figures incomparable with runs without it.
      } else {
         s.notes.push_back("SCHED_FIFO priority " + std::to_string(fifo_priority) + " refused: " +
                           std::strerror(errno) + "; timed under SCHED_OTHER");
      }
   }
   return s;
}

}  // namespace auditor

