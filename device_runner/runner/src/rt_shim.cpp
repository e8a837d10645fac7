// The real-time audit's counting hooks as a library preloaded (LD_PRELOAD) into a Python
// worker, for runtimes that are hosted in Python (ONNX Runtime, LiteRT, ExecuTorch, torch,
// IREE): the same hooks and the same "rt_safety" section as the native runner's audit pass,
// driven through a small C API (device_runner/rt_shim.py loads it with ctypes). The worker
// brackets only the runtime's call with auditor_rt_begin / auditor_rt_end; calls whose caller
// is the Python interpreter (or another host range the worker names) are counted apart.

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>

#include "json.h"
#include "realtime.h"
#include "rt_audit.h"
#include "rt_hooks.h"

#define API extern "C" __attribute__((visibility("default"), used))

namespace {
auditor::RtAuditor *g_auditor = nullptr;
}

// 1 when this library's malloc is the one the process calls (it was preloaded), else 0.
API int auditor_rt_interposed()
{
   void *seen = dlsym(RTLD_DEFAULT, "malloc");
   return seen == reinterpret_cast<void *>(&malloc) ? 1 : 0;
}

// Calls from [lo, hi) are the host's: counted apart (host_*), no stacks kept. 0 when full.
API int auditor_rt_add_host_range(std::uint64_t lo, std::uint64_t hi)
{
   return auditor::rt::add_host_range(static_cast<std::uintptr_t>(lo), static_cast<std::uintptr_t>(hi)) ? 1 : 0;
}

// A new audit of `runs` steady inferences (after `warmup`); markers: close(-31001)/close(-31002)
// around the first and the steady inferences, for a syscall trace. 0 on success.
API int auditor_rt_prepare(int runs, int warmup, int markers)
{
   if (runs < 1 || warmup < 0)
      return 1;
   delete g_auditor;
   g_auditor = new (std::nothrow) auditor::RtAuditor({runs, warmup, markers != 0});
   return g_auditor ? 0 : 1;
}

// phase: 0 the first inference, 1 a warm-up one, 2 an audited one.
API void auditor_rt_begin(int phase)
{
   if (g_auditor)
      g_auditor->begin(static_cast<auditor::RtAuditor::Phase>(phase));
}

// 1 when the inference was kept.
API int auditor_rt_end(int phase)
{
   return g_auditor && g_auditor->end(static_cast<auditor::RtAuditor::Phase>(phase)) ? 1 : 0;
}

// The runner's mitigations, in this process: mlockall (and a pre-faulted stack), heap kept.
// Returns bit 1 when memory was locked, bit 2 when the heap is kept; what was refused goes to
// notes (joined by "; ", cut to size).
API int auditor_rt_apply(int mlockall, int malloc_keep, char *notes, int size)
{
   const auditor::Scheduling s = auditor::apply_scheduling(0, -1, mlockall != 0, malloc_keep != 0);
   std::string joined;
   for (const std::string &n : s.notes)
      joined += (joined.empty() ? "" : "; ") + n;
   if (notes && size > 0)
      std::snprintf(notes, static_cast<std::size_t>(size), "%s", joined.c_str());
   return (s.memory_locked ? 1 : 0) | (s.heap_kept ? 2 : 0);
}

// Writes {"rt_safety": {...}} to path; host_note says what the host ranges are. 0 on success.
API int auditor_rt_write(const char *path, const char *host_note)
{
   if (!g_auditor)
      return 1;
   auditor::Json j;
   j.begin_object();
   g_auditor->write(j, host_note);
   j.end_object();
   std::FILE *f = std::fopen(path, "w");
   if (!f)
      return 2;
   const std::string &s = j.str();
   const bool ok = std::fwrite(s.data(), 1, s.size(), f) == s.size();
   return (std::fclose(f) == 0 && ok) ? 0 : 2;
}
