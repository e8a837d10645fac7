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
   "other_involuntary_switches",
   "host_allocs", "host_alloc_bytes", "host_frees", "host_locks", "host_waits", "host_wakeups"};
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

// One inference's counts, from the reads taken before it (begin) and after it (end). The
// thread's reads nest inside the process's: other_* (process minus thread) can then not go
// negative, and holds at most this thread's events between two adjacent reads.
struct Open {
   Usage p0, t0;
};

Open begin_run(int table, bool markers)
{
   Open o{usage(RUSAGE_SELF), usage(RUSAGE_THREAD)};
   rt::open_window(table);
   if (markers)
      close(kMarkerBegin);
   return o;
}

Row end_run(const Open &o, bool markers)
{
   if (markers)
      close(kMarkerEnd);
   const rt::WindowCounts w = rt::close_window();
   const Usage t1 = usage(RUSAGE_THREAD), p1 = usage(RUSAGE_SELF);
   const Usage &t0 = o.t0, &p0 = o.p0;
   const rt::Counts &s = w.self, &x = w.other, &h = w.host;
   const long long th[4] = {t1.minflt - t0.minflt, t1.majflt - t0.majflt, t1.nvcsw - t0.nvcsw, t1.nivcsw - t0.nivcsw};
   const long long pr[4] = {p1.minflt - p0.minflt, p1.majflt - p0.majflt, p1.nvcsw - p0.nvcsw, p1.nivcsw - p0.nivcsw};
   Row r;
   const long long values[kN] = {
      s.allocs, s.alloc_bytes, s.frees, s.free_bytes, s.locks, s.waits, s.wakeups, s.threads_created,
      th[0], th[1], th[2], th[3],
      x.allocs, x.alloc_bytes, x.frees, x.locks, x.waits, x.wakeups, x.threads_created,
      pr[0] - th[0], pr[1] - th[1], pr[2] - th[2], pr[3] - th[3],
      h.allocs, h.alloc_bytes, h.frees, h.locks, h.waits, h.wakeups};
   std::copy(values, values + kN, r.v);
   return r;
}

Row audited_run(Backend &b, int table, bool markers)
{
   const Open o = begin_run(table, markers);
   try {
      b.run();
   } catch (...) {
      rt::close_window();  // the runner's error path must not be counted or unwound
      throw;
   }
   return end_run(o, markers);
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

static void write_section(Json &j, const RtAuditSettings &s, double inert_ns, const Row &first,
                   const std::vector<Row> &rows, const char *methods_note)
{
   const std::string note = methods_note ? methods_note : "";
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
      .key("syscalls").value("not counted by the hooks: a separate traced pass with markers does");
   if (!note.empty())
      j.key("host").value(note);
   j.end_object();
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
   write_section(j, s, inert_ns, first, rows, nullptr);
}

struct RtAuditor::State {
   RtAuditSettings settings;
   double inert_ns = 0;
   Row first;
   std::vector<Row> rows;
   int ended = 0;
   bool warm_done = false;
   Open open{};
};

RtAuditor::RtAuditor(const RtAuditSettings &s) : st_(new State)
{
   st_->settings = s;
   st_->inert_ns = rt::inert_cost_ns();
   st_->rows.resize(static_cast<std::size_t>(s.runs));
   rt::reset_sites(rt::kFirstTable);
   rt::reset_sites(rt::kSteadyTable);
   rt::warm_recorder();
}

RtAuditor::~RtAuditor() { delete st_; }

void RtAuditor::begin(Phase phase)
{
   if (phase == kSteady && !st_->warm_done) {
      rt::reset_sites(rt::kSteadyTable);  // the warm-up's stacks are not the steady state's
      st_->warm_done = true;
   }
   const bool markers = st_->settings.markers && phase != kWarmup;
   st_->open = begin_run(phase == kFirst ? rt::kFirstTable : rt::kSteadyTable, markers);
}

bool RtAuditor::end(Phase phase)
{
   const bool markers = st_->settings.markers && phase != kWarmup;
   const Row r = end_run(st_->open, markers);
   if (phase == kFirst)
      st_->first = r;
   else if (phase == kSteady) {
      if (st_->ended >= static_cast<int>(st_->rows.size()))
         return false;
      st_->rows[st_->ended++] = r;
   }
   return true;
}

int RtAuditor::steady_runs() const { return st_->ended; }

void RtAuditor::write(Json &j, const char *methods_note) const
{
   RtAuditSettings s = st_->settings;
   s.runs = st_->ended;
   std::vector<Row> rows(st_->rows.begin(), st_->rows.begin() + st_->ended);
   write_section(j, s, st_->inert_ns, st_->first, rows, methods_note);
}

}  // namespace auditor
