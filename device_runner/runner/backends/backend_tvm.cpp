// The TVM backend: a relax VM module (the model.so that tvm.compile + export_library write)
// loaded through TVM's C++ runtime, as tvm.relax.VirtualMachine does it in Python:
//   Module::LoadFromFile -> "vm_load_executable"() -> "vm_initialization"(cpu, 0, pooled)
//   -> "main", called with the input tensors bound once.
// Per-kernel times come from the VM's instrument hook: a callback the VM calls before and
// after every call instruction (kernels and VM builtins alike), timestamped inside it.
// Only tvm-ffi's API is used, so the same code runs against the wheel's shared libraries
// (host) and against the runtime built from source (armv7); see tvm.cmake.
#include <tvm/ffi/any.h>
#include <tvm/ffi/c_api.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>
#include <tvm/runtime/base.h>  // TVM_VERSION

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend.h"

#ifndef AUDITOR_TVM_WHEEL_VERSION
#define AUDITOR_TVM_WHEEL_VERSION ""
#endif
#ifndef AUDITOR_TVM_FFI_WHEEL_VERSION
#define AUDITOR_TVM_FFI_WHEEL_VERSION ""
#endif
#ifndef AUDITOR_TVM_RUNTIME
#define AUDITOR_TVM_RUNTIME "source"
#endif

namespace auditor {
namespace {

namespace ffi = tvm::ffi;
using Clock = std::chrono::steady_clock;

constexpr int kPooledAllocator = 2;  // tvm::runtime::memory::AllocatorType::kPooled
constexpr size_t kAlignment = 64;    // TVM's kAllocAlignment: kernels may assume it
// A global function returning None: "set_instrument" takes a function or the name of a
// factory, and only the factory path can hand the VM a null instrument (= no hook at all).
constexpr const char *kNoInstrument = "auditor.tvm.no_instrument";

// Input tensors: CPU memory aligned as TVM's own allocator aligns it.
struct AlignedCpuAlloc {
   void AllocData(DLTensor *tensor) {
      size_t bytes = ffi::GetDataSize(*tensor);
      void *data = nullptr;
      if (posix_memalign(&data, kAlignment, bytes == 0 ? kAlignment : bytes) != 0) {
         throw std::bad_alloc();
      }
      tensor->data = data;
   }
   void FreeData(DLTensor *tensor) { std::free(tensor->data); }
};

// ffi::Error carries kind and message apart; the runner reports what() of std exceptions.
[[noreturn]] void rethrow(const char *what, const ffi::Error &e) {
   throw std::runtime_error(std::string(what) + ": " + e.kind() + ": " + e.message());
}

std::string shape_text(const std::vector<int64_t> &shape) {
   std::string out = "(";
   for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
   return out + (shape.size() == 1 ? ",)" : ")");
}

class TvmBackend : public Backend {
 public:
   std::string name() const override { return "tvm"; }

   std::string version() const override {
      // The wheel's version (e.g. 0.27.0.post1) when the build was told it; the runtime
      // sources' own TVM_VERSION (0.27.0) otherwise.
      std::string wheel = AUDITOR_TVM_WHEEL_VERSION;
      return wheel.empty() ? std::string(TVM_VERSION) : wheel;
   }

   void load(const std::string &model_path) override {
      try {
         lib_ = ffi::Module::LoadFromFile(model_path);
         ffi::Function load_exec = require(*lib_, "vm_load_executable", model_path);
         vm_ = load_exec().cast<ffi::Module>();
         require(*vm_, "vm_initialization", model_path)(static_cast<int>(kDLCPU), 0,
                                                        kPooledAllocator);
         main_ = require(*vm_, "main", model_path);
         set_instrument_ = require(*vm_, "set_instrument", model_path);
         arity_ = require(*vm_, "get_function_arity", model_path)("main").cast<int>();
         ffi::Function param_name = require(*vm_, "get_function_param_name", model_path);
         for (int i = 0; i < arity_; ++i) {
            param_names_.push_back(param_name("main", i).cast<std::string>());
         }
         if (!ffi::Function::GetGlobal(kNoInstrument)) {
            ffi::Function::SetGlobal(kNoInstrument,
                                     ffi::Function::FromPacked([](ffi::PackedArgs, ffi::Any *) {}));
         }
         instrument_ = ffi::Function::FromPacked(
             [this](ffi::PackedArgs args, ffi::Any *rv) { on_call(args, rv); });
      } catch (const ffi::Error &e) {
         rethrow(("cannot load " + model_path + " as a relax VM module").c_str(), e);
      }
      inputs_.resize(arity_);
      input_info_.resize(arity_);
   }

   std::vector<TensorInfo> inputs() const override { return {}; }  // takes the files' dtype/shape

   std::vector<TensorInfo> outputs() const override { return output_info_; }

   void set_input(std::size_t index, const TensorInfo &info, const void *data,
                  std::size_t nbytes) override {
      if (index >= inputs_.size()) {
         throw std::runtime_error("input " + std::to_string(index) + ": main takes " +
                                  std::to_string(arity_) + " inputs");
      }
      ffi::Tensor &tensor = inputs_[index];
      if (!tensor.defined() || info.dtype != input_info_[index].dtype ||
          info.shape != input_info_[index].shape) {
         try {
            tensor = ffi::Tensor::FromNDAlloc(AlignedCpuAlloc(), ffi::Shape(info.shape),
                                              ffi::StringToDLDataType(info.dtype),
                                              DLDevice{kDLCPU, 0});
         } catch (const ffi::Error &e) {
            rethrow(("input " + std::to_string(index) + " (" + info.dtype + ")").c_str(), e);
         }
         input_info_[index] = info;
         args_.clear();
      }
      size_t expected = ffi::GetDataSize(tensor);
      if (nbytes != expected) {
         throw std::runtime_error("input " + std::to_string(index) + ": " + std::to_string(nbytes) +
                                  " bytes given, " + info.dtype + shape_text(info.shape) + " holds " +
                                  std::to_string(expected));
      }
      if (nbytes != 0) std::memcpy(tensor.data_ptr(), data, nbytes);
   }

   void run() override {
      if (args_.empty() && arity_ > 0) bind_inputs();
      if (instrumented_) {
         for (Slot &slot : slots_) slot.calls = 0, slot.ns = 0;
         open_.clear();
      }
      try {
         main_.CallPacked(args_.data(), static_cast<int32_t>(args_.size()), &result_);
      } catch (const ffi::Error &e) {
         rethrow("main failed", e);
      }
      if (!outputs_known_) collect_outputs();
   }

   void get_output(std::size_t index, void *data, std::size_t nbytes) override {
      if (!outputs_known_) throw std::runtime_error("get_output before the first run");
      std::vector<const DLTensor *> now;
      flatten(result_, now);  // the last run's tensors (a run may return new ones)
      if (index >= now.size()) {
         throw std::runtime_error("output " + std::to_string(index) + ": the model has " +
                                  std::to_string(now.size()));
      }
      const DLTensor *t = now[index];
      size_t bytes = ffi::GetDataSize(*t);
      if (bytes != nbytes) {
         throw std::runtime_error("output " + std::to_string(index) + " holds " +
                                  std::to_string(bytes) + " bytes, " + std::to_string(nbytes) +
                                  " asked for");
      }
      if (!ffi::IsContiguous(*t)) {
         throw std::runtime_error("output " + std::to_string(index) + " is not contiguous");
      }
      if (bytes != 0) std::memcpy(data, static_cast<const char *>(t->data) + t->byte_offset, bytes);
   }

   // The relax VM always has the hook (asked before load(); a module without it fails to load).
   bool can_instrument() const override { return true; }

   void set_instrumented(bool on) override {
      if (on == instrumented_) return;
      try {
         if (on) {
            set_instrument_(instrument_);
         } else {
            set_instrument_(kNoInstrument);  // the VM's instrument_ back to null: no hook
         }
      } catch (const ffi::Error &e) {
         rethrow("set_instrument", e);
      }
      instrumented_ = on;
   }

   std::vector<KernelTime> last_kernel_times() override {
      std::vector<KernelTime> out;
      for (const Slot &slot : slots_) {
         if (slot.calls > 0) out.push_back({slot.name, slot.calls, static_cast<double>(slot.ns)});
      }
      return out;
   }

   std::string instrument_method() const override { return "tvm-vm-instrument-native"; }

   std::vector<std::string> notes() const override {
      TVMFFIVersion ffi_version;
      TVMFFIGetVersion(&ffi_version);
      std::string runtime = std::string(AUDITOR_TVM_RUNTIME) == "wheel"
                                ? "the wheels' libtvm_runtime.so and libtvm_ffi.so"
                                : "TVM's runtime built from the wheels' sources, linked in";
      std::string wheels = std::string(AUDITOR_TVM_WHEEL_VERSION).empty()
                               ? ""
                               : "; wheels apache-tvm " + std::string(AUDITOR_TVM_WHEEL_VERSION) +
                                     ", apache-tvm-ffi " + AUDITOR_TVM_FFI_WHEEL_VERSION;
      std::vector<std::string> out = {
          "relax VM: " + runtime + " (TVM_VERSION " + std::string(TVM_VERSION) + ", tvm-ffi C API " +
              std::to_string(ffi_version.major) + "." + std::to_string(ffi_version.minor) + "." +
              std::to_string(ffi_version.patch) + wheels + "); pooled allocator; main(" +
              join(param_names_) + ") called with its input tensors bound once",
          "per-op: the VM's set_instrument hook, a native callback before and after every call "
          "instruction (kernels and vm.builtin.*), steady_clock read last on the way in and "
          "first on the way out; each interval still holds the VM's hook dispatch"};
      return out;
   }

 private:
   struct Slot {
      std::string name;
      int calls = 0;
      int64_t ns = 0;
   };

   static ffi::Function require(const ffi::Module &mod, const char *name, const std::string &path) {
      ffi::Optional<ffi::Function> f = mod->GetFunction(name, true);
      if (!f.has_value()) {
         throw std::runtime_error(path + ": no function " + name +
                                  " (not a relax VM module from tvm.compile?)");
      }
      return *f;
   }

   static std::string join(const std::vector<std::string> &names) {
      std::string out;
      for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
      return out;
   }

   void bind_inputs() {
      for (int i = 0; i < arity_; ++i) {
         if (!inputs_[i].defined()) {
            throw std::runtime_error("input " + std::to_string(i) + " (" + param_names_[i] +
                                     ") was not set");
         }
      }
      args_.assign(inputs_.begin(), inputs_.end());  // views of tensors this object keeps
   }

   // Tensors of a (nested) result in order, as compilers/tvm_relax.py's _flatten.
   static void flatten(const ffi::Any &value, std::vector<const DLTensor *> &out) {
      if (auto tensor = value.as<ffi::Tensor>()) {
         out.push_back(tensor->GetDLTensorPtr());
      } else if (auto array = value.as<ffi::Array<ffi::Any>>()) {
         for (const ffi::Any &item : *array) flatten(item, out);
      } else {
         throw std::runtime_error("main returned a " + std::string(value.GetTypeKey()) +
                                  " where a tensor or tuple of tensors was expected");
      }
   }

   void collect_outputs() {
      std::vector<const DLTensor *> tensors;
      flatten(result_, tensors);
      output_info_.clear();
      for (size_t j = 0; j < tensors.size(); ++j) {
         const DLTensor *t = tensors[j];
         output_info_.push_back({"output_" + std::to_string(j),
                                 std::string(ffi::DLDataTypeToString(t->dtype)),
                                 std::vector<int64_t>(t->shape, t->shape + t->ndim)});
      }
      outputs_known_ = true;
   }

   int slot_of(const ffi::AnyView &name) {
      // The VM passes the callee's name as a C string owned by the executable's function
      // table: its address identifies the callee without building a string per call.
      if (std::optional<const char *> raw = name.try_cast<const char *>()) {
         auto it = slot_by_address_.find(*raw);
         if (it != slot_by_address_.end()) return it->second;
         int slot = slot_by_name(*raw);
         slot_by_address_.emplace(*raw, slot);
         return slot;
      }
      return slot_by_name(name.cast<std::string>());
   }

   int slot_by_name(const std::string &name) {
      auto it = slot_by_name_.find(name);
      if (it != slot_by_name_.end()) return it->second;
      slots_.push_back({name, 0, 0});
      int slot = static_cast<int>(slots_.size()) - 1;
      slot_by_name_.emplace(name, slot);
      return slot;
   }

   // instrument(func, name, before_run, ret, *args): rv left None = go on with the call.
   void on_call(ffi::PackedArgs args, ffi::Any *) {
      if (args[2].cast<bool>()) {
         open_.push_back({slot_of(args[1]), Clock::time_point()});
         open_.back().second = Clock::now();  // last thing before the call
      } else {
         Clock::time_point end = Clock::now();  // first thing after it
         if (open_.empty()) return;
         auto [slot, start] = open_.back();
         open_.pop_back();
         slots_[slot].calls += 1;
         slots_[slot].ns += std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count();
      }
   }

   std::optional<ffi::Module> lib_, vm_;
   ffi::Function main_, set_instrument_, instrument_;
   int arity_ = 0;
   std::vector<std::string> param_names_;
   std::vector<ffi::Tensor> inputs_;
   std::vector<TensorInfo> input_info_;
   std::vector<ffi::AnyView> args_;
   ffi::Any result_;
   bool outputs_known_ = false;
   std::vector<TensorInfo> output_info_;

   bool instrumented_ = false;
   std::vector<Slot> slots_;  // callees in first-call order
   std::unordered_map<const void *, int> slot_by_address_;
   std::unordered_map<std::string, int> slot_by_name_;
   std::vector<std::pair<int, Clock::time_point>> open_;  // calls in progress (nesting)
};

}  // namespace

std::unique_ptr<Backend> make_backend() { return std::make_unique<TvmBackend>(); }

}  // namespace auditor
