#include "rt_audit.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "rt_hooks.h"
#include "rt_symbols.h"

namespace auditor {
namespace {

// Everything counted about one inference, flat, in the order the JSON lists it.
constexpr const char *kCounters[] = {
   "allocs", "alloc_bytes", "frees", "free_bytes", "locks", "waits", "wakeups", "threads_created",
   "minor_faults", "major_faults", "voluntary_switches", "involuntary_switches",
   "other_allocs", "other_alloc_bytes", "other_frees", "other_locks", "other_waits", "other_wakeups",
   "other_threads_created", "other_minor_faults", "other_major_faults", "other_voluntary_switches",
   "other_involuntary_switches"};
constexpr int kN = sizeof kCounters / sizeof kCounters[0];

struct Usage {
   long long minflt, majflt, nvcsw, nivcsw;
};

Usage usage(int who)
{
   struct rusage ru {};
   getrusage(who, &ru);
   return {ru.ru_minflt, ru.ru_majflt, ru.ru_nvcsw, ru.ru_nivcsw};
}

struct Row {
   long long v[kN] = {};
};

Row audited_run(Backend &b, int table, bool markers)
{
   // The thread's reads nested inside the process's: other_* (process minus thread) can then
   // not go negative, and holds at most this thread's events between two adjacent reads.
   const Usage p0 = usage(RUSAGE_SELF), t0 = usage(RUSAGE_THREAD);
   rt::open_window(table);
   if (markers)
      close(kMarkerBegin);
   try {
      b.run();
   } catch (...) {
      rt::close_window();  // the runner's error path must not be counted or unwound
      throw;
   }
   if (markers)
      close(kMarkerEnd);
   const rt::WindowCounts w = rt::close_window();
   const Usage t1 = usage(RUSAGE_THREAD), p1 = usage(RUSAGE_SELF);
   const rt::Counts &s = w.self, &o = w.other;
   const long long th[4] = {t1.minflt - t0.minflt, t1.majflt - t0.majflt, t1.nvcsw - t0.nvcsw, t1.nivcsw - t0.nivcsw};
   const long long pr[4] = {p1.minflt - p0.minflt, p1.majflt - p0.majflt, p1.nvcsw - p0.nvcsw, p1.nivcsw - p0.nivcsw};
   Row r;
   const long long values[kN] = {
      s.allocs, s.alloc_bytes, s.frees, s.free_bytes, s.locks, s.waits, s.wakeups, s.threads_created,
      th[0], th[1], th[2], th[3],
      o.allocs, o.alloc_bytes, o.frees, o.locks, o.waits, o.wakeups, o.threads_created,
      pr[0] - th[0], pr[1] - th[1], pr[2] - th[2], pr[3] - th[3]};
   std::copy(values, values + kN, r.v);
   return r;
}

std::string hex(std::uintptr_t a)
{
   char buf[32];
   std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(a));
   return buf;
}

void sites_json(Json &j, int table, rt::Kind kind)
{
   const rt::SiteTable &t = rt::sites(table, kind);
   std::vector<std::uintptr_t> addresses;
   for (int s = 0; s < t.used; ++s)
      addresses.insert(addresses.end(), t.sites[s].frames, t.sites[s].frames + t.sites[s].depth);
   const std::vector<rt::Frame> frames = rt::symbolize(addresses);
   std::size_t k = 0;
   j.begin_object().key("dropped").value(t.dropped).key("sites").begin_array();
   for (int s = 0; s < t.used; ++s) {
      j.begin_object().key("count").value(t.sites[s].count).key("bytes").value(t.sites[s].bytes)
         .key("frames").begin_array();
      for (int d = 0; d < t.sites[s].depth; ++d, ++k) {
         const rt::Frame &f = frames[k];
         j.begin_object().key("address").value(hex(f.address)).key("object").value(f.object)
            .key("offset").value(hex(f.offset)).key("function").value(f.function)
            .key("symbols").value(f.symbol_table).end_object();
      }
      j.end_array().end_object();
   }
   j.end_array().end_object();
}

void counts_json(Json &j, const Row &r)
{
   j.begin_object();
   for (int c = 0; c < kN; ++c)
      j.key(kCounters[c]).value(r.v[c]);
   j.end_object();
}

}  // namespace

void rt_audit_pass(Backend &b, const RtAuditSettings &s, Json &j)
{
   const double inert_ns = rt::inert_cost_ns();
   rt::reset_sites(rt::kFirstTable);
   rt::reset_sites(rt::kSteadyTable);
   rt::warm_recorder();
   std::vector<Row> rows(static_cast<std::size_t>(s.runs));  // allocated before any window opens

   const Row first = audited_run(b, rt::kFirstTable, s.markers);
   // Warm-up runs are audited too (into the steady table, emptied afterwards): the stack
   // recorder's own first unwinding through the model's code then happens before the counted runs.
   for (int i = 0; i < s.warmup; ++i)
      audited_run(b, rt::kSteadyTable, false);
   rt::reset_sites(rt::kSteadyTable);
   for (int i = 0; i < s.runs; ++i)
      rows[i] = audited_run(b, rt::kSteadyTable, s.markers);

   j.key("rt_safety").begin_object()
      .key("runs").value(s.runs).key("warmup").value(s.warmup).key("markers").value(s.markers)
      .key("marker_calls").begin_array().value(kMarkerBegin).value(kMarkerEnd).end_array();
   j.key("methods").begin_object()
      .key("heap").value(std::string(rt::hook_method()) + ": malloc, calloc, realloc, posix_memalign, "
                         "aligned_alloc, memalign, valloc (operator new reaches malloc); bytes asked for; "
                         "free_bytes by malloc_usable_size")
      .key("locks").value(std::string(rt::hook_method()) + ": pthread_mutex_lock/trylock, "
                          "pthread_rwlock_rdlock/wrlock, pthread_spin_lock (glibc-internal locks, e.g. "
                          "malloc's arena lock, are not pthread calls: see the syscall trace's futex)")
      .key("waits").value("the same hooks: pthread_cond_wait/timedwait, sem_wait")
      .key("wakeups").value("the same hooks: pthread_cond_signal/broadcast, sem_post")
      .key("threads_created").value("the same hooks: pthread_create")
      .key("faults").value("getrusage(RUSAGE_THREAD) ru_minflt/ru_majflt deltas around each inference; "
                           "other_*: RUSAGE_SELF minus RUSAGE_THREAD")
      .key("switches").value("getrusage(RUSAGE_THREAD) ru_nvcsw/ru_nivcsw deltas around each inference; "
                             "other_*: RUSAGE_SELF minus RUSAGE_THREAD")
      .key("call_sites").value("_Unwind_Backtrace in the allocation and lock hooks (inference thread only), "
                               "named from the objects' ELF symbol tables after the pass")
      .key("syscalls").value("not counted by the runner: a separate traced pass (--rt-markers 1) does")
      .end_object();
   j.key("inert_hook_cost_ns").value(inert_ns);
   j.key("first");
   counts_json(j, first);
   Row sum, max;
   for (const Row &r : rows)
      for (int c = 0; c < kN; ++c) {
         sum.v[c] += r.v[c];
         max.v[c] = std::max(max.v[c], r.v[c]);
      }
   j.key("steady").begin_object().key("total");
   counts_json(j, sum);
   j.key("max");
   counts_json(j, max);
   j.key("per_run").begin_object();
   for (int c = 0; c < kN; ++c) {
      std::vector<long long> series;
      for (const Row &r : rows)
         series.push_back(r.v[c]);
      j.key(kCounters[c]).values(series);
   }
   j.end_object().end_object();
   j.key("sites").begin_object().key("first");
   sites_json(j, rt::kFirstTable, rt::kAllocKind);
   j.key("steady");
   sites_json(j, rt::kSteadyTable, rt::kAllocKind);
   j.end_object();
   j.key("lock_sites").begin_object().key("first");
   sites_json(j, rt::kFirstTable, rt::kLockKind);
   j.key("steady");
   sites_json(j, rt::kSteadyTable, rt::kLockKind);
   j.end_object().end_object();
}

}  // namespace auditor
