// Counting hooks for the real-time audit: heap, lock, wake-up and thread entry points of the C
// library, counted only while the runner holds a window open around one inference.
//
// How they are hooked depends on the link (rt_hooks.cpp): a static runner links with
// -Wl,--wrap=<entry point> (AUDITOR_RT_WRAP), so every object in the link (libc.a, libstdc++.a,
// a static BLAS, the model) calls the hook; a dynamic runner defines the entry points itself and
// exports them, so the dynamic linker binds every shared library's calls to them (interposition)
// and they forward to the C library. Outside a window a hook costs one relaxed atomic load.
#pragma once

#include <cstddef>
#include <cstdint>

namespace auditor {
namespace rt {

// Calls counted in one window, by the thread that opened it or by any other thread.
struct Counts {
   long long allocs = 0;       // malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, valloc
   long long alloc_bytes = 0;  // bytes asked for
   long long frees = 0;        // free of a non-null pointer
   long long free_bytes = 0;   // malloc_usable_size of what was freed
   long long locks = 0;        // pthread_mutex_lock/trylock, pthread_rwlock_rdlock/wrlock, pthread_spin_lock
   long long waits = 0;        // pthread_cond_wait/timedwait, sem_wait
   long long wakeups = 0;      // pthread_cond_signal/broadcast, sem_post
   long long threads_created = 0;  // pthread_create
};

struct WindowCounts {
   Counts self;   // the inference's thread
   Counts other;  // every other thread of the process, during the same window
   Counts host;   // calls made from a host range (add_host_range), any thread: in neither of the above
};

constexpr int kMaxFrames = 12;
constexpr int kMaxSites = 128;

// One distinct call stack that allocated (or locked) on the window's thread (innermost frame
// first; the addresses are return addresses).
struct Site {
   std::uintptr_t frames[kMaxFrames];
   int depth = 0;
   long long count = 0;
   long long bytes = 0;
};

// The stacks recorded into one table (tables: 0 the first inference, 1 the steady state), in
// first-seen order: sites[0] is where the table's first allocation came from.
constexpr int kFirstTable = 0;
constexpr int kSteadyTable = 1;
// What a table's stacks did: allocate (counts and bytes) or take a lock (counts).
enum Kind { kAllocKind = 0, kLockKind = 1 };
struct SiteTable {
   Site sites[kMaxSites];
   int used = 0;
   long long dropped = 0;  // allocations whose stack did not fit in the table
};

// Opens the window on the calling thread: counts restart at zero; allocation stacks go to table.
void open_window(int table);
// Closes it and returns what was counted since open_window.
WindowCounts close_window();
const SiteTable &sites(int table, Kind kind);
// Empties a table of both kinds (and touches its pages, so recording later does not fault).
void reset_sites(int table);
// Runs the stack recorder once outside any window: the unwinder's one-time set-up (a
// pthread_once in libgcc, which ends in a futex wake) is then not blamed on an inference.
void warm_recorder();

// Calls whose caller (the hooked entry point's return address) lies in [lo, hi) are the
// host's (e.g. the Python interpreter's, when the hooks are preloaded into a Python worker):
// they are counted apart, in WindowCounts::host, and their stacks are not recorded. At most
// kMaxHostRanges; returns false when the table is full. The runner sets none.
constexpr int kMaxHostRanges = 64;
bool add_host_range(std::uintptr_t lo, std::uintptr_t hi);

// How the entry points are hooked in this binary ("link-time --wrap" or "interposition").
const char *hook_method();
// Nanoseconds a hooked malloc+free pair costs over the C library's own, window closed
// (measured here: 20000 pairs each way, best of 5).
double inert_cost_ns();

}  // namespace rt
}  // namespace auditor
