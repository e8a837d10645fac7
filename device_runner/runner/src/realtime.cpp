#include "realtime.h"

#include <sched.h>

#include <cerrno>
#include <cstring>

namespace auditor {

Scheduling apply_scheduling(int fifo_priority, int cpu)
{
   Scheduling s;
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
         // No mlockall: it would make every mapped page resident and the RSS figures
         // incomparable with runs under SCHED_OTHER.
      } else {
         s.notes.push_back("SCHED_FIFO priority " + std::to_string(fifo_priority) + " refused: " +
                           std::strerror(errno) + "; timed under SCHED_OTHER");
      }
   }
   return s;
}

}  // namespace auditor

