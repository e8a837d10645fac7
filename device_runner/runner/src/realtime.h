// Real-time scheduling and CPU pinning for the timed loop, as an audio thread on the board
// would run; when the OS refuses, the run goes on and the refusal is reported.
#pragma once

#include <string>
#include <vector>

namespace auditor {

struct Scheduling {
   std::string policy = "SCHED_OTHER";
   int priority = 0;
   int cpu = -1;  // -1: not pinned
   std::vector<std::string> notes;
};

// priority 0: leave the policy alone; cpu -1: leave the affinity alone.
Scheduling apply_scheduling(int fifo_priority, int cpu);

}  // namespace auditor
