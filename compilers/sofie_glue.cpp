// C ABI around one SOFIE-generated model header, filled in by compilers/sofie_cpp.py.
//
// The adapter replaces the @...@ placeholders (header, namespace, the doInfer call, the
// tensor sizes) and builds this file into a shared library (host, loaded with ctypes) or,
// with the native runner, into an executable for a device. Define SOFIE_GLUE_PROFILE for the
// header whose timers light_profile_header rewrote into AUDITOR_OP_START / AUDITOR_OP_STOP
// (defined here, on device_runner's op clock); SOFIE_GLUE_OPENBLAS / _BLIS to set
// the BLAS thread count; SOFIE_GLUE_ZERO_POOL to zero the intermediate pool before each
// inference.

#if defined(SOFIE_GLUE_PROFILE)
#include "op_clock.h"

// The operator timers, in this library only (one model per library). An operator's time runs
// from the previous clock read (its START, or the operator before it) to its STOP; times are
// summed per operator until sofie_prof_take.
namespace auditor_sofie_prof {
constexpr int kOps = @OP_COUNT@;
const char *const kNames[] = {@OP_NAMES@};
std::uint64_t g_last = 0;
std::uint64_t g_ticks[kOps > 0 ? kOps : 1] = {};
int g_calls[kOps > 0 ? kOps : 1] = {};
}  // namespace auditor_sofie_prof

#define AUDITOR_OP_START() (auditor_sofie_prof::g_last = auditor::op_ticks())
#define AUDITOR_OP_STOP(k, name)                                  \
   do {                                                           \
      const std::uint64_t auditor_now_ = auditor::op_ticks();     \
      auditor_sofie_prof::g_ticks[k] += auditor_now_ - auditor_sofie_prof::g_last; \
      auditor_sofie_prof::g_calls[k] += 1;                        \
      auditor_sofie_prof::g_last = auditor_now_;                  \
   } while (0)
#endif

#include "@HEADER@"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <string>
#include <vector>

namespace sofie_model = @NAMESPACE@;

// Built with -fvisibility=hidden: only this C ABI is exported, so a plain and a profiled
// build loaded into one process never bind to each other's inline SOFIE code.
#define SOFIE_API __attribute__((visibility("default")))

// The BLAS symbol SOFIE's code calls, under another C++ name so it does not clash with
// the declaration inside the generated header; used only to ask where it was bound.
extern "C" void sofie_glue_sgemm_symbol() __asm__("sgemm_");

#if defined(SOFIE_GLUE_OPENBLAS)
extern "C" void openblas_set_num_threads(int);
#elif defined(SOFIE_GLUE_BLIS)
extern "C" void bli_thread_set_num_threads(long);
#endif

namespace {

std::string g_error;

struct Handle {
   explicit Handle(const char *weights) : session(weights) {}
   sofie_model::Session session;
   std::string error;
   bool failed = false;
};

// fIntermediateMemoryPool exists in the SOFIE versions seen so far; 0 when it does not.
template <class S>
auto pool_bytes(const S &s, int) -> decltype(s.fIntermediateMemoryPool.size())
{
   return s.fIntermediateMemoryPool.size();
}
template <class S>
std::size_t pool_bytes(const S &, long)
{
   return 0;
}

const std::size_t kInputBytes[] = {@INPUT_BYTES@};
const std::size_t kOutputBytes[] = {@OUTPUT_BYTES@};
// numpy dtype names and shapes in doInfer order, for the native runner's .npy files.
const char *const kInputDtypes[] = {@INPUT_DTYPES@};
const char *const kOutputDtypes[] = {@OUTPUT_DTYPES@};
const std::vector<std::vector<long long>> kInputShapes = {@INPUT_SHAPES@};
const std::vector<std::vector<long long>> kOutputShapes = {@OUTPUT_SHAPES@};

}  // namespace

extern "C" {

SOFIE_API const char *sofie_last_error() { return g_error.c_str(); }

SOFIE_API int sofie_num_inputs() { return @NUM_INPUTS@; }
SOFIE_API int sofie_num_outputs() { return @NUM_OUTPUTS@; }
SOFIE_API std::size_t sofie_input_bytes(int i) { return kInputBytes[i]; }
SOFIE_API std::size_t sofie_output_bytes(int i) { return kOutputBytes[i]; }
SOFIE_API const char *sofie_input_dtype(int i) { return kInputDtypes[i]; }
SOFIE_API const char *sofie_output_dtype(int i) { return kOutputDtypes[i]; }
SOFIE_API int sofie_input_rank(int i) { return static_cast<int>(kInputShapes.at(i).size()); }
SOFIE_API int sofie_output_rank(int i) { return static_cast<int>(kOutputShapes.at(i).size()); }
SOFIE_API long long sofie_input_dim(int i, int d) { return kInputShapes.at(i).at(d); }
SOFIE_API long long sofie_output_dim(int i, int d) { return kOutputShapes.at(i).at(d); }

SOFIE_API void sofie_set_threads(int threads)
{
#if defined(SOFIE_GLUE_OPENBLAS)
   openblas_set_num_threads(threads);
#elif defined(SOFIE_GLUE_BLIS)
   bli_thread_set_num_threads(threads);
#else
   (void)threads;
#endif
}

// The file the BLAS routine sgemm_ was bound to (what this build really calls).
SOFIE_API const char *sofie_blas_library()
{
   Dl_info info;
   if (dladdr(reinterpret_cast<void *>(&sofie_glue_sgemm_symbol), &info) && info.dli_fname)
      return info.dli_fname;
   return "";
}

SOFIE_API void *sofie_create(const char *weights_path)
{
   try {
      return new Handle(weights_path);
   } catch (const std::exception &e) {
      g_error = e.what();
   } catch (...) {
      g_error = "unknown exception in Session constructor";
   }
   return nullptr;
}

SOFIE_API void sofie_destroy(void *h) { delete static_cast<Handle *>(h); }

// One inference: inputs and outputs are caller-owned buffers, in SOFIE's doInfer order.
SOFIE_API void sofie_infer(void *h, const void *const *in, void *const *out)
{
   Handle &handle = *static_cast<Handle *>(h);
   try {
#if defined(SOFIE_GLUE_ZERO_POOL)
      // Opt-in work-around: give every inference a zeroed intermediate pool, as the first
      // one gets (SOFIE's dilated Conv reads pool bytes it never writes).
      std::fill(handle.session.fIntermediateMemoryPool.begin(),
                handle.session.fIntermediateMemoryPool.end(), 0);
#endif
      sofie_model::doInfer(handle.session, @CALL_ARGS@);
   } catch (const std::exception &e) {
      handle.failed = true;
      handle.error = e.what();
   } catch (...) {
      handle.failed = true;
      handle.error = "unknown exception in doInfer";
   }
}

// n inferences, each timed alone with steady_clock into ns[i]: the Python harness's timing
// loop without a Python call per inference (whose ~0.7 us would dwarf a 1 us block).
SOFIE_API void sofie_time_runs(void *h, const void *const *in, void *const *out, int n, long long *ns)
{
   using Clock = std::chrono::steady_clock;
   for (int i = 0; i < n; ++i) {
      const Clock::time_point t0 = Clock::now();
      sofie_infer(h, in, out);
      ns[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
   }
}

// Non-empty when an inference failed since the handle was created.
SOFIE_API const char *sofie_error(void *h)
{
   Handle &handle = *static_cast<Handle *>(h);
   return handle.failed ? handle.error.c_str() : "";
}

SOFIE_API std::size_t sofie_intermediate_bytes(void *h)
{
   return pool_bytes(static_cast<Handle *>(h)->session, 0);
}

#if defined(SOFIE_GLUE_PROFILE)
// The light operator timers: names in execution order, and what they hold since the last take.

SOFIE_API int sofie_prof_count() { return auditor_sofie_prof::kOps; }

SOFIE_API const char *sofie_prof_name(int i) { return auditor_sofie_prof::kNames[i]; }

SOFIE_API const char *sofie_prof_clock() { return auditor::op_clock_name(); }

SOFIE_API double sofie_prof_read_cost_ns() { return auditor::op_read_cost_ns(); }

// Copies each operator's summed nanoseconds and call count since the last take, then zeroes
// them; called between inferences, never inside a timed one.
SOFIE_API void sofie_prof_take(double *ns, int *calls)
{
   const double rate = auditor::op_ns_per_tick();
   for (int i = 0; i < auditor_sofie_prof::kOps; ++i) {
      ns[i] = static_cast<double>(auditor_sofie_prof::g_ticks[i]) * rate;
      calls[i] = auditor_sofie_prof::g_calls[i];
      auditor_sofie_prof::g_ticks[i] = 0;
      auditor_sofie_prof::g_calls[i] = 0;
   }
}
#endif

}  // extern "C"
