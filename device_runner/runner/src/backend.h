// The one seam between the runner (timing, memory, scheduling, files, JSON) and a compiled
// model's runtime. Each runner binary links exactly one backend, which defines
// make_backend(); everything a backend cannot do it says through exceptions and notes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace auditor {

struct TensorInfo {
   std::string name;
   std::string dtype;  // numpy name: float32, float64, int64, int32, int16, int8, uint8, bool
   std::vector<int64_t> shape;
};

// Time one emitted kernel took during one inference (all of its calls in that inference).
struct KernelTime {
   std::string name;  // the compiler's kernel name; the Python side maps it to ONNX nodes
   int calls = 0;
   double ns = 0.0;
};

class Backend {
 public:
   virtual ~Backend() = default;
   virtual std::string name() const = 0;     // "sofie", "tvm", ...
   virtual std::string version() const = 0;  // the runtime's version as built into the runner
   // Load the compiled model (a path the backend understands: a module .so, a weights file).
   virtual void load(const std::string &model_path) = 0;
   // The model's inputs when the backend knows them (checked against the input files);
   // empty when it takes what it is given (then the files' dtype and shape are used).
   virtual std::vector<TensorInfo> inputs() const = 0;
   // The model's outputs; must be valid after the first run().
   virtual std::vector<TensorInfo> outputs() const = 0;
   // Copy one input in; the runner binds inputs once, as an audio callback keeps its buffers.
   virtual void set_input(std::size_t index, const TensorInfo &info, const void *data,
                          std::size_t nbytes) = 0;
   // One inference with the bound inputs: exactly what gets timed.
   virtual void run() = 0;
   // Copy one output of the last run() out.
   virtual void get_output(std::size_t index, void *data, std::size_t nbytes) = 0;
   // Per-kernel instrumentation: can it be switched on in this binary, and switch it.
   virtual bool can_instrument() const = 0;
   virtual void set_instrumented(bool on) = 0;
   // Kernels timed since the previous call (or since instrumentation was switched on), in
   // first-call order; the runner calls it after each instrumented run(), outside the timing.
   virtual std::vector<KernelTime> last_kernel_times() = 0;
   // How the per-kernel times are taken (stored as the per-op method).
   virtual std::string instrument_method() const = 0;
   // Sizes the runtime reports itself (weights, arena), bytes; empty when none.
   virtual std::map<std::string, long long> memory_info() const { return {}; }
   virtual std::vector<std::string> notes() const { return {}; }
};

std::unique_ptr<Backend> make_backend();

// Bytes of one element of a numpy dtype name; 0 for an unknown name.
std::size_t dtype_size(const std::string &dtype);
std::size_t tensor_bytes(const TensorInfo &t);

}  // namespace auditor
