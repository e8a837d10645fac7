// The real-time audit pass (--rt-audit N): the first inference, warm-up, then N inferences, each
// inside a window of the counting hooks (rt_hooks.h) and between two getrusage(RUSAGE_THREAD)
// reads; written as the JSON's "rt_safety" section. It is its own runner invocation: nothing
// it does slows a timed pass. With markers, each audited inference is also bracketed by two
// failing close() calls with fixed arguments, so a syscall trace of the process (strace,
// qemu-arm -strace) can be cut into the same inferences.
#pragma once

#include "backend.h"
#include "json.h"

namespace auditor {

constexpr int kMarkerBegin = -31001;  // close(kMarkerBegin) right before an audited run()
constexpr int kMarkerEnd = -31002;    // close(kMarkerEnd) right after it

struct RtAuditSettings {
   int runs = 100;
   int warmup = 50;
   bool markers = false;
};

// b is loaded, its inputs bound, and it has not run yet.
void rt_audit_pass(Backend &b, const RtAuditSettings &s, Json &j);

// The same pass driven from outside (the preloaded hooks of a Python worker, rt_shim.cpp):
// begin() right before one inference, end() right after it, in the order first, warm-up
// runs, audited runs; write() then adds the "rt_safety" section. Everything it records into
// is allocated by the constructor, before any window opens.
class RtAuditor {
 public:
   enum Phase { kFirst = 0, kWarmup = 1, kSteady = 2 };
   explicit RtAuditor(const RtAuditSettings &s);
   ~RtAuditor();
   void begin(Phase phase);
   // false when more steady runs were ended than the settings hold (the run is not kept)
   bool end(Phase phase);
   // methods_note: appended to the heap and lock methods (e.g. what the host ranges are)
   void write(Json &j, const char *methods_note) const;
   int steady_runs() const;

 private:
   struct State;
   State *st_;
};

}  // namespace auditor
