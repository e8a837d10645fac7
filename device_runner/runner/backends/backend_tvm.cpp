// The TVM backend: a relax VM module (the model.so that tvm.compile + export_library write)
// loaded through TVM's C++ runtime, as tvm.relax.VirtualMachine does it in Python:
//   Module::LoadFromFile -> "vm_load_executable"() -> "vm_initialization"(cpu, 0, pooled)
//   -> "main", called with the input tensors bound once.
// Per-kernel times come from a second VM over the same executable whose kernel library is
// swapped, while that VM resolves its functions, for a module handing out every callee
// (kernels and VM builtins alike) wrapped in one op-clock read after the call. The VM's own
// set_instrument hook costs ~150 ns per call even with an empty native callback (it packs
// every argument twice), more than a small block's kernels take; the wrapper costs one read.
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
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend.h"
#include "op_clock.h"

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

constexpr int kPooledAllocator = 2;  // tvm::runtime::memory::AllocatorType::kPooled
constexpr size_t kAlignment = 64;    // TVM's kAllocAlignment: kernels may assume it

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

// What the timed callees record: an interval runs from the previous read (the call into main,
// or the previous callee's return) to this callee's return, so it holds the VM's dispatch of
// the call as well as the callee; intervals of one inference add up to nearly all of it.
struct Recorder {
   std::uint64_t last = 0;
   std::vector<std::string> names;  // slot -> callee name, in resolution order
   std::vector<std::uint64_t> ticks;
   std::vector<int> calls;
   std::vector<int> order;  // slots in first-call order this inference
   std::unordered_map<std::string, int> slot_of;

   int slot(const std::string &name) {
      auto it = slot_of.find(name);
      if (it != slot_of.end()) return it->second;
      names.push_back(name);
      ticks.push_back(0);
      calls.push_back(0);
      return slot_of[name] = static_cast<int>(names.size()) - 1;
   }
};

// Stands in for the executable's imports while the instrumented VM resolves its function
// pool: the VM looks a callee up in its imports first, then in the global registry (the
// vm.builtin.* functions), so this module answers both, each wrapped in a timer.
class TimedImports : public ffi::ModuleObj {
 public:
   TimedImports(std::vector<ffi::Module> inner, std::shared_ptr<Recorder> rec)
       : inner_(std::move(inner)), rec_(std::move(rec)) {}

   const char *kind() const final { return "auditor.timed_imports"; }

   ffi::Optional<ffi::Function> GetFunction(const ffi::String &name) final {
      ffi::Optional<ffi::Function> found;
      for (const ffi::Module &m : inner_) {
         found = m->GetFunction(name, true);
         if (found.has_value()) break;
      }
      if (!found.has_value()) found = ffi::Function::GetGlobal(std::string(name));
      if (!found.has_value()) return std::nullopt;
      ffi::Function callee = *found;
      std::shared_ptr<Recorder> rec = rec_;
      const int slot = rec->slot(std::string(name));
      return ffi::Function::FromPacked([callee, rec, slot](ffi::PackedArgs args, ffi::Any *rv) {
         callee.CallPacked(args, rv);
         const std::uint64_t now = op_ticks();
         rec->ticks[slot] += now - rec->last;
         if (rec->calls[slot]++ == 0) rec->order.push_back(slot);
         rec->last = now;
      });
   }

 private:
   std::vector<ffi::Module> inner_;
   std::shared_ptr<Recorder> rec_;
};

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
         model_path_ = model_path;
         vm_ = new_vm();
         main_ = plain_main_ = require(*vm_, "main", model_path);
         arity_ = require(*vm_, "get_function_arity", model_path)("main").cast<int>();
         ffi::Function param_name = require(*vm_, "get_function_param_name", model_path);
         for (int i = 0; i < arity_; ++i) {
            param_names_.push_back(param_name("main", i).cast<std::string>());
         }
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
      if (instrumented_) rec_->last = op_ticks();  // the first callee's interval starts here
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

   // Any relax VM executable can be given timed callees.
   bool can_instrument() const override { return true; }

   void set_instrumented(bool on) override {
      if (on == instrumented_) return;
      if (on && !timed_vm_) {
         try {
            timed_vm_ = new_timed_vm();
            timed_main_ = require(*timed_vm_, "main", model_path_);
         } catch (const ffi::Error &e) {
            rethrow("building the instrumented VM", e);
         }
      }
      main_ = on ? timed_main_ : plain_main_;
      instrumented_ = on;
      if (on) {
         rec_->order.reserve(rec_->names.size());  // the pool is resolved: every callee has a slot
         take_kernel_times();                        // start afresh
      }
   }

   std::vector<KernelTime> last_kernel_times() override {
      if (!instrumented_) return {};
      return take_kernel_times();
   }

   std::string instrument_method() const override { return "tvm-timed-callees"; }

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
          std::string("per-op: a second VM whose callees (kernels and vm.builtin.*) are wrapped in one ") +
              op_clock_name() + " read after each call (" + std::to_string(op_read_cost_ns()) +
              " ns per read here); an interval runs from the previous read "
              "(the call into main or the previous callee's return) to this callee's return, so it "
              "holds the VM's dispatch of the call too"};
      return out;
   }

 private:
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

   // What the timed callees recorded since the last take, zeroed for the next inference.
   std::vector<KernelTime> take_kernel_times() {
      std::vector<KernelTime> out;
      const double rate = op_ns_per_tick();
      for (int i : rec_->order) {
         out.push_back({rec_->names[i], rec_->calls[i], static_cast<double>(rec_->ticks[i]) * rate});
         rec_->ticks[i] = 0;
         rec_->calls[i] = 0;
      }
      rec_->order.clear();
      return out;
   }

   // A VM over the loaded executable, initialised as tvm.relax.VirtualMachine does.
   ffi::Module new_vm() {
      ffi::Function load_exec = require(*lib_, "vm_load_executable", model_path_);
      ffi::Module vm = load_exec().cast<ffi::Module>();
      require(vm, "vm_initialization", model_path_)(static_cast<int>(kDLCPU), 0, kPooledAllocator);
      return vm;
   }

   // A VM whose function pool holds timed callees: the executable's imports are swapped for
   // TimedImports while the VM is made and resolves its pool, then put back as they were.
   ffi::Module new_timed_vm() {
      ffi::Module exec = *lib_;
      std::vector<ffi::Module> original;
      for (const ffi::Any &m : exec->imports()) original.push_back(m.cast<ffi::Module>());
      auto restore = [&] {
         exec->ClearImports();
         for (const ffi::Module &m : original) exec->ImportModule(m);
      };
      exec->ClearImports();
      exec->ImportModule(ffi::Module(ffi::make_object<TimedImports>(original, rec_)));
      try {
         ffi::Module vm = new_vm();
         restore();
         return vm;
      } catch (...) {
         restore();
         throw;
      }
   }

   std::shared_ptr<Recorder> rec_ = std::make_shared<Recorder>();  // outlives both VMs' callees
   std::optional<ffi::Module> lib_, vm_, timed_vm_;
   ffi::Function main_, plain_main_, timed_main_;
   std::string model_path_;
   int arity_ = 0;
   std::vector<std::string> param_names_;
   std::vector<ffi::Tensor> inputs_;
   std::vector<TensorInfo> input_info_;
   std::vector<ffi::AnyView> args_;
   ffi::Any result_;
   bool outputs_known_ = false;
   std::vector<TensorInfo> output_info_;
   bool instrumented_ = false;
};

}  // namespace

std::unique_ptr<Backend> make_backend() { return std::make_unique<TvmBackend>(); }

}  // namespace auditor
