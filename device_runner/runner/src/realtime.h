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
   bool memory_locked = false;  // mlockall(MCL_CURRENT | MCL_FUTURE) applied, stack pre-faulted
   bool heap_kept = false;      // glibc told never to return freed heap to the OS
   std::vector<std::string> notes;
};

// priority 0: leave the policy alone; cpu -1: leave the affinity alone; lock_memory: mlockall
// every current and future mapping and pre-fault 256 KiB of stack, as a real-time audio
// program does before its first callback; keep_heap: mallopt(M_MMAP_MAX, 0) and
// mallopt(M_TRIM_THRESHOLD, -1), so freed heap stays mapped (no mmap/munmap, no re-faulting).
Scheduling apply_scheduling(int fifo_priority, int cpu, bool lock_memory, bool keep_heap);

}  // namespace auditor
