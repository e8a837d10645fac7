// The counting hooks (rt_hooks.h). Each hook forwards to the C library; while a window is open
// it also counts, and on the window's thread records the allocation's call stack.
//
// AUDITOR_RT_WRAP (static runners, linked with -Wl,--wrap=<name> for every name hooked here):
// the hooks are __wrap_<name> and the C library's own entry points __real_<name>.
// Otherwise (dynamic runners, which export these names): the hooks are the entry points
// themselves; heap calls forward to glibc's exported __libc_* twins (no dlsym: dlsym may
// allocate), the pthread/semaphore calls to the next definition found by dlsym(RTLD_NEXT).

#include "rt_hooks.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <unwind.h>

using auditor::rt::Counts;
using auditor::rt::Site;
using auditor::rt::SiteTable;

namespace {

struct AtomicCounts {
   std::atomic<long long> allocs{0}, alloc_bytes{0}, frees{0}, free_bytes{0}, locks{0}, waits{0},
      wakeups{0}, threads_created{0};

   void zero()
   {
      for (auto *c : {&allocs, &alloc_bytes, &frees, &free_bytes, &locks, &waits, &wakeups, &threads_created})
         c->store(0, std::memory_order_relaxed);
   }
   Counts load() const
   {
      constexpr auto r = std::memory_order_relaxed;
      Counts c;
      c.allocs = allocs.load(r);
      c.alloc_bytes = alloc_bytes.load(r);
      c.frees = frees.load(r);
      c.free_bytes = free_bytes.load(r);
      c.locks = locks.load(r);
      c.waits = waits.load(r);
      c.wakeups = wakeups.load(r);
      c.threads_created = threads_created.load(r);
      return c;
   }
};

std::atomic<int> g_open{0};
pthread_t g_thread{};
int g_table = 0;
AtomicCounts g_self, g_other, g_host;
struct Range {
   std::uintptr_t lo, hi;
};
Range g_host_ranges[auditor::rt::kMaxHostRanges];
std::atomic<int> g_host_range_count{0};
SiteTable g_tables[2][2];  // [window table][kind]
// Set while a hook records: what the recording itself calls is not counted.
__thread int t_busy __attribute__((tls_model("initial-exec"))) = 0;

inline bool open_now() { return g_open.load(std::memory_order_relaxed) != 0 && !t_busy; }

inline bool from_host(void *caller)
{
   const auto a = reinterpret_cast<std::uintptr_t>(caller);
   const int n = g_host_range_count.load(std::memory_order_acquire);
   for (int i = 0; i < n; ++i)
      if (a >= g_host_ranges[i].lo && a < g_host_ranges[i].hi)
         return true;
   return false;
}

// The counts a call from `caller` goes to: the host's, the window thread's or the others'.
inline AtomicCounts &counts_for(void *caller)
{
   if (from_host(caller))
      return g_host;
   return pthread_equal(pthread_self(), g_thread) ? g_self : g_other;
}

struct Trace {
   std::uintptr_t frames[auditor::rt::kMaxFrames + 3];
   int depth = 0;
};

_Unwind_Reason_Code on_frame(struct _Unwind_Context *ctx, void *arg)
{
   auto *t = static_cast<Trace *>(arg);
   if (t->depth >= static_cast<int>(sizeof t->frames / sizeof t->frames[0]))
      return _URC_END_OF_STACK;
   t->frames[t->depth++] = static_cast<std::uintptr_t>(_Unwind_GetIP(ctx));
   return _URC_NO_REASON;
}

// Frames 0..2 are this function, record_alloc (or record_lock) and the hook: the caller of the
// hooked entry point is frame 3 (all three are noinline so the count is fixed). When the
// unwinder cannot go past the hook (ARM EHABI reports no frame that lacks unwind tables, e.g.
// a C library built without them), the stack is the hook's return address alone.
__attribute__((noinline)) void record_stack(auditor::rt::Kind kind, long long bytes, std::uintptr_t caller)
{
   Trace t;
   _Unwind_Backtrace(on_frame, &t);
   constexpr int kSkip = 3;
   if (t.depth <= kSkip) {
      t.frames[kSkip] = caller;
      t.depth = kSkip + 1;
   }
   SiteTable &table = g_tables[g_table][kind];
   const int depth = t.depth - kSkip;
   for (int s = 0; s < table.used; ++s) {
      Site &site = table.sites[s];
      if (site.depth == depth && std::memcmp(site.frames, t.frames + kSkip, depth * sizeof(std::uintptr_t)) == 0) {
         site.count += 1;
         site.bytes += bytes;
         return;
      }
   }
   if (table.used == auditor::rt::kMaxSites) {
      table.dropped += 1;
      return;
   }
   Site &site = table.sites[table.used++];
   std::memcpy(site.frames, t.frames + kSkip, depth * sizeof(std::uintptr_t));
   site.depth = depth;
   site.count = 1;
   site.bytes = bytes;
}

__attribute__((noinline)) void record_alloc(std::size_t bytes, void *caller)
{
   t_busy = 1;
   AtomicCounts &c = counts_for(caller);
   c.allocs.fetch_add(1, std::memory_order_relaxed);
   c.alloc_bytes.fetch_add(static_cast<long long>(bytes), std::memory_order_relaxed);
   if (&c == &g_self)
      record_stack(auditor::rt::kAllocKind, static_cast<long long>(bytes), reinterpret_cast<std::uintptr_t>(caller));
   t_busy = 0;
}

__attribute__((noinline)) void record_lock(void *caller)
{
   t_busy = 1;
   AtomicCounts &c = counts_for(caller);
   c.locks.fetch_add(1, std::memory_order_relaxed);
   if (&c == &g_self)
      record_stack(auditor::rt::kLockKind, 0, reinterpret_cast<std::uintptr_t>(caller));
   t_busy = 0;
}

void record_free(void *p, void *caller)
{
   if (!p)
      return;
   t_busy = 1;
   AtomicCounts &c = counts_for(caller);
   c.frees.fetch_add(1, std::memory_order_relaxed);
   c.free_bytes.fetch_add(static_cast<long long>(malloc_usable_size(p)), std::memory_order_relaxed);
   t_busy = 0;
}

inline void record(std::atomic<long long> AtomicCounts::*which, void *caller)
{
   if (open_now())
      (counts_for(caller).*which).fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

// ---- the C library's own entry points --------------------------------------------------------

#if defined(AUDITOR_RT_WRAP)
#define HOOK(name) __wrap_##name
#define REAL(name) __real_##name
extern "C" {
void *__real_malloc(std::size_t);
void __real_free(void *);
void *__real_calloc(std::size_t, std::size_t);
void *__real_realloc(void *, std::size_t);
int __real_posix_memalign(void **, std::size_t, std::size_t);
void *__real_aligned_alloc(std::size_t, std::size_t);
void *__real_memalign(std::size_t, std::size_t);
void *__real_valloc(std::size_t);
int __real_pthread_mutex_lock(pthread_mutex_t *);
int __real_pthread_mutex_trylock(pthread_mutex_t *);
int __real_pthread_rwlock_rdlock(pthread_rwlock_t *);
int __real_pthread_rwlock_wrlock(pthread_rwlock_t *);
int __real_pthread_spin_lock(pthread_spinlock_t *);
int __real_pthread_cond_wait(pthread_cond_t *, pthread_mutex_t *);
int __real_pthread_cond_timedwait(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
int __real_pthread_cond_signal(pthread_cond_t *);
int __real_pthread_cond_broadcast(pthread_cond_t *);
int __real_sem_wait(sem_t *);
int __real_sem_post(sem_t *);
int __real_pthread_create(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
}
#define NOEXCEPT
#else
#define HOOK(name) name
#define NOEXCEPT noexcept
extern "C" {
void *__libc_malloc(std::size_t);
void __libc_free(void *);
void *__libc_calloc(std::size_t, std::size_t);
void *__libc_realloc(void *, std::size_t);
void *__libc_memalign(std::size_t, std::size_t);
void *__libc_valloc(std::size_t);
}
namespace {
inline void *real_malloc(std::size_t n) { return __libc_malloc(n); }
inline void real_free(void *p) { __libc_free(p); }
inline void *real_calloc(std::size_t n, std::size_t m) { return __libc_calloc(n, m); }
inline void *real_realloc(void *p, std::size_t n) { return __libc_realloc(p, n); }
inline void *real_memalign(std::size_t a, std::size_t n) { return __libc_memalign(a, n); }
inline void *real_valloc(std::size_t n) { return __libc_valloc(n); }
inline void *real_aligned_alloc(std::size_t a, std::size_t n) { return __libc_memalign(a, n); }
inline int real_posix_memalign(void **out, std::size_t a, std::size_t n)
{
   if (a % sizeof(void *) != 0 || (a & (a - 1)) != 0)
      return EINVAL;
   void *p = __libc_memalign(a, n);
   if (!p)
      return ENOMEM;
   *out = p;
   return 0;
}
template <class F>
F next_definition(F &cache, const char *name)
{
   if (!cache)
      cache = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
   return cache;
}
}  // namespace
#define REAL(name) real_##name
#define NEXT(name) next_definition(g_next_##name, #name)
namespace {
int (*g_next_pthread_mutex_lock)(pthread_mutex_t *);
int (*g_next_pthread_mutex_trylock)(pthread_mutex_t *);
int (*g_next_pthread_rwlock_rdlock)(pthread_rwlock_t *);
int (*g_next_pthread_rwlock_wrlock)(pthread_rwlock_t *);
int (*g_next_pthread_spin_lock)(pthread_spinlock_t *);
int (*g_next_pthread_cond_wait)(pthread_cond_t *, pthread_mutex_t *);
int (*g_next_pthread_cond_timedwait)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
int (*g_next_pthread_cond_signal)(pthread_cond_t *);
int (*g_next_pthread_cond_broadcast)(pthread_cond_t *);
int (*g_next_sem_wait)(sem_t *);
int (*g_next_sem_post)(sem_t *);
int (*g_next_pthread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
inline int real_pthread_mutex_lock(pthread_mutex_t *m) { return NEXT(pthread_mutex_lock)(m); }
inline int real_pthread_mutex_trylock(pthread_mutex_t *m) { return NEXT(pthread_mutex_trylock)(m); }
inline int real_pthread_rwlock_rdlock(pthread_rwlock_t *l) { return NEXT(pthread_rwlock_rdlock)(l); }
inline int real_pthread_rwlock_wrlock(pthread_rwlock_t *l) { return NEXT(pthread_rwlock_wrlock)(l); }
inline int real_pthread_spin_lock(pthread_spinlock_t *l) { return NEXT(pthread_spin_lock)(l); }
inline int real_pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m) { return NEXT(pthread_cond_wait)(c, m); }
inline int real_pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t)
{
   return NEXT(pthread_cond_timedwait)(c, m, t);
}
inline int real_pthread_cond_signal(pthread_cond_t *c) { return NEXT(pthread_cond_signal)(c); }
inline int real_pthread_cond_broadcast(pthread_cond_t *c) { return NEXT(pthread_cond_broadcast)(c); }
inline int real_sem_wait(sem_t *s) { return NEXT(sem_wait)(s); }
inline int real_sem_post(sem_t *s) { return NEXT(sem_post)(s); }
inline int real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*f)(void *), void *arg)
{
   return NEXT(pthread_create)(t, a, f, arg);
}
// Resolved before main: the first lock must not be the one that runs dlsym.
__attribute__((constructor)) void resolve_next_definitions()
{
   NEXT(pthread_mutex_lock);
   NEXT(pthread_mutex_trylock);
   NEXT(pthread_rwlock_rdlock);
   NEXT(pthread_rwlock_wrlock);
   NEXT(pthread_spin_lock);
   NEXT(pthread_cond_wait);
   NEXT(pthread_cond_timedwait);
   NEXT(pthread_cond_signal);
   NEXT(pthread_cond_broadcast);
   NEXT(sem_wait);
   NEXT(sem_post);
   NEXT(pthread_create);
}
}  // namespace
#endif

#define EXPORT extern "C" __attribute__((visibility("default"), used))

EXPORT void *HOOK(malloc)(std::size_t n) NOEXCEPT
{
   if (open_now())
      record_alloc(n, __builtin_return_address(0));
   return REAL(malloc)(n);
}

EXPORT void HOOK(free)(void *p) NOEXCEPT
{
   if (open_now())
      record_free(p, __builtin_return_address(0));
   REAL(free)(p);
}

EXPORT void *HOOK(calloc)(std::size_t n, std::size_t m) NOEXCEPT
{
   if (open_now())
      record_alloc(n * m, __builtin_return_address(0));
   return REAL(calloc)(n, m);
}

EXPORT void *HOOK(realloc)(void *p, std::size_t n) NOEXCEPT
{
   if (open_now())
      record_alloc(n, __builtin_return_address(0));  // a realloc counts as one allocation of its new size
   return REAL(realloc)(p, n);
}

EXPORT int HOOK(posix_memalign)(void **out, std::size_t a, std::size_t n) NOEXCEPT
{
   if (open_now())
      record_alloc(n, __builtin_return_address(0));
   return REAL(posix_memalign)(out, a, n);
}

EXPORT void *HOOK(aligned_alloc)(std::size_t a, std::size_t n) NOEXCEPT
{
   if (open_now())
      record_alloc(n, __builtin_return_address(0));
   return REAL(aligned_alloc)(a, n);
}

EXPORT void *HOOK(memalign)(std::size_t a, std::size_t n) NOEXCEPT
{
   if (open_now())
      record_alloc(n, __builtin_return_address(0));
   return REAL(memalign)(a, n);
}

EXPORT void *HOOK(valloc)(std::size_t n) NOEXCEPT
{
   if (open_now())
      record_alloc(n, __builtin_return_address(0));
   return REAL(valloc)(n);
}

EXPORT int HOOK(pthread_mutex_lock)(pthread_mutex_t *m) NOEXCEPT
{
   if (open_now())
      record_lock(__builtin_return_address(0));
   return REAL(pthread_mutex_lock)(m);
}

EXPORT int HOOK(pthread_mutex_trylock)(pthread_mutex_t *m) NOEXCEPT
{
   if (open_now())
      record_lock(__builtin_return_address(0));
   return REAL(pthread_mutex_trylock)(m);
}

EXPORT int HOOK(pthread_rwlock_rdlock)(pthread_rwlock_t *l) NOEXCEPT
{
   if (open_now())
      record_lock(__builtin_return_address(0));
   return REAL(pthread_rwlock_rdlock)(l);
}

EXPORT int HOOK(pthread_rwlock_wrlock)(pthread_rwlock_t *l) NOEXCEPT
{
   if (open_now())
      record_lock(__builtin_return_address(0));
   return REAL(pthread_rwlock_wrlock)(l);
}

EXPORT int HOOK(pthread_spin_lock)(pthread_spinlock_t *l) NOEXCEPT
{
   if (open_now())
      record_lock(__builtin_return_address(0));
   return REAL(pthread_spin_lock)(l);
}

EXPORT int HOOK(pthread_cond_wait)(pthread_cond_t *c, pthread_mutex_t *m)
{
   record(&AtomicCounts::waits, __builtin_return_address(0));
   return REAL(pthread_cond_wait)(c, m);
}

EXPORT int HOOK(pthread_cond_timedwait)(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *t)
{
   record(&AtomicCounts::waits, __builtin_return_address(0));
   return REAL(pthread_cond_timedwait)(c, m, t);
}

EXPORT int HOOK(pthread_cond_signal)(pthread_cond_t *c) NOEXCEPT
{
   record(&AtomicCounts::wakeups, __builtin_return_address(0));
   return REAL(pthread_cond_signal)(c);
}

EXPORT int HOOK(pthread_cond_broadcast)(pthread_cond_t *c) NOEXCEPT
{
   record(&AtomicCounts::wakeups, __builtin_return_address(0));
   return REAL(pthread_cond_broadcast)(c);
}

EXPORT int HOOK(sem_wait)(sem_t *s)
{
   record(&AtomicCounts::waits, __builtin_return_address(0));
   return REAL(sem_wait)(s);
}

EXPORT int HOOK(sem_post)(sem_t *s) NOEXCEPT
{
   record(&AtomicCounts::wakeups, __builtin_return_address(0));
   return REAL(sem_post)(s);
}

EXPORT int HOOK(pthread_create)(pthread_t *t, const pthread_attr_t *a, void *(*f)(void *), void *arg) NOEXCEPT
{
   record(&AtomicCounts::threads_created, __builtin_return_address(0));
   return REAL(pthread_create)(t, a, f, arg);
}

// ---- the window --------------------------------------------------------------------------------

namespace auditor {
namespace rt {

void open_window(int table)
{
   g_self.zero();
   g_other.zero();
   g_host.zero();
   g_thread = pthread_self();
   g_table = table;
   g_open.store(1, std::memory_order_seq_cst);
}

WindowCounts close_window()
{
   g_open.store(0, std::memory_order_seq_cst);
   return {g_self.load(), g_other.load(), g_host.load()};
}

bool add_host_range(std::uintptr_t lo, std::uintptr_t hi)
{
   const int n = g_host_range_count.load(std::memory_order_relaxed);
   if (n == kMaxHostRanges)
      return false;
   g_host_ranges[n] = {lo, hi};
   g_host_range_count.store(n + 1, std::memory_order_release);
   return true;
}

const SiteTable &sites(int table, Kind kind) { return g_tables[table][kind]; }

void reset_sites(int table) { std::memset(static_cast<void *>(&g_tables[table]), 0, sizeof g_tables[table]); }

void warm_recorder()
{
   Trace t;
   _Unwind_Backtrace(on_frame, &t);
}

const char *hook_method()
{
#if defined(AUDITOR_RT_WRAP)
   return "link-time -Wl,--wrap of the C library's entry points (static runner: every object in the link)";
#elif defined(AUDITOR_RT_PRELOAD)
   return "interposition: a preloaded library (LD_PRELOAD) defines the C library's entry points (every "
          "shared library of the Python worker binds to them)";
#else
   return "interposition: the runner defines and exports the C library's entry points (dynamic runner: "
          "every shared library binds to them)";
#endif
}

double inert_cost_ns()
{
   using Clock = std::chrono::steady_clock;
   // Through volatile pointers: the compiler may not pair and drop the calls.
   void *(*volatile hooked_malloc)(std::size_t) = &HOOK(malloc);
   void (*volatile hooked_free)(void *) = &HOOK(free);
   void *(*volatile real_malloc_p)(std::size_t) = [](std::size_t n) { return REAL(malloc)(n); };
   void (*volatile real_free_p)(void *) = [](void *p) { REAL(free)(p); };
   constexpr int kPairs = 20000;
   auto best = [&](void *(*m)(std::size_t), void (*f)(void *)) {
      double b = 1e30;
      for (int rep = 0; rep < 5; ++rep) {
         const auto t0 = Clock::now();
         for (int i = 0; i < kPairs; ++i)
            f(m(16));
         const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / kPairs;
         b = ns < b ? ns : b;
      }
      return b;
   };
   const double hooked = best(hooked_malloc, hooked_free);
   const double real = best(real_malloc_p, real_free_p);
   return hooked - real;
}

}  // namespace rt
}  // namespace auditor
