// libtorch backend (host): a TorchScript archive run by torch::jit, as a C++ program linking
// the installed torch would run it. No per-kernel instrument here (the Python harness's
// torch-eager FX timer covers torch-side per-op time).

#include <ATen/Parallel.h>
#include <torch/script.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.h"

namespace auditor {
namespace {

at::ScalarType scalar_type(const std::string &dtype)
{
   if (dtype == "float32") return at::kFloat;
   if (dtype == "float64") return at::kDouble;
   if (dtype == "int64") return at::kLong;
   if (dtype == "int32") return at::kInt;
   if (dtype == "int16") return at::kShort;
   if (dtype == "int8") return at::kChar;
   if (dtype == "uint8") return at::kByte;
   if (dtype == "bool") return at::kBool;
   throw std::runtime_error("libtorch backend: unsupported input dtype " + dtype);
}

std::string dtype_name(at::ScalarType t)
{
   switch (t) {
   case at::kFloat: return "float32";
   case at::kDouble: return "float64";
   case at::kLong: return "int64";
   case at::kInt: return "int32";
   case at::kShort: return "int16";
   case at::kChar: return "int8";
   case at::kByte: return "uint8";
   case at::kBool: return "bool";
   default: throw std::runtime_error(std::string("libtorch backend: unsupported output dtype ") + c10::toString(t));
   }
}

// Tensors of a result in order (tuples and lists flattened, as the Python side does).
void flatten(const c10::IValue &v, std::vector<at::Tensor> &out)
{
   if (v.isTensor()) {
      out.push_back(v.toTensor().contiguous());
   } else if (v.isTuple()) {
      for (const auto &e : v.toTupleRef().elements())
         flatten(e, out);
   } else if (v.isList()) {
      for (const auto &e : v.toListRef())
         flatten(e, out);
   } else {
      throw std::runtime_error("libtorch backend: the model returned a " + v.tagKind() + ", not tensors");
   }
}

class LibtorchBackend : public Backend {
 public:
   std::string name() const override { return "libtorch"; }
   std::string version() const override { return AUDITOR_TORCH_VERSION; }

   void load(const std::string &path) override
   {
      at::set_num_threads(1);  // the board has one core
      at::set_num_interop_threads(1);
      try {
         module_ = torch::jit::load(path, c10::kCPU);
      } catch (const c10::Error &e) {
         throw std::runtime_error("torch::jit::load(" + path + ") failed: " + e.what_without_backtrace());
      }
      module_.eval();
   }

   std::vector<TensorInfo> inputs() const override { return {}; }

   std::vector<TensorInfo> outputs() const override
   {
      std::vector<TensorInfo> infos;
      for (std::size_t i = 0; i < outputs_.size(); ++i) {
         TensorInfo t;
         t.name = "output_" + std::to_string(i);
         t.dtype = dtype_name(outputs_[i].scalar_type());
         for (auto d : outputs_[i].sizes())
            t.shape.push_back(d);
         infos.push_back(t);
      }
      return infos;
   }

   void set_input(std::size_t i, const TensorInfo &info, const void *data, std::size_t nbytes) override
   {
      std::vector<int64_t> shape(info.shape.begin(), info.shape.end());
      at::Tensor t = at::empty(shape, at::TensorOptions().dtype(scalar_type(info.dtype)));
      if (static_cast<std::size_t>(t.nbytes()) != nbytes)
         throw std::runtime_error("input " + std::to_string(i) + ": size does not match its shape");
      std::memcpy(t.data_ptr(), data, nbytes);
      if (inputs_.size() <= i)
         inputs_.resize(i + 1);
      inputs_[i] = t;
   }

   void run() override
   {
      c10::InferenceMode guard;
      try {
         auto result = module_.forward(inputs_);
         outputs_.clear();
         flatten(result, outputs_);
      } catch (const c10::Error &e) {
         throw std::runtime_error(std::string("forward failed: ") + e.what_without_backtrace());
      }
   }

   void get_output(std::size_t i, void *data, std::size_t nbytes) override
   {
      if (i >= outputs_.size() || static_cast<std::size_t>(outputs_[i].nbytes()) != nbytes)
         throw std::runtime_error("output " + std::to_string(i) + ": wrong size");
      std::memcpy(data, outputs_[i].data_ptr(), nbytes);
   }

   bool can_instrument() const override { return false; }
   void set_instrumented(bool on) override
   {
      if (on)
         throw std::runtime_error("the libtorch runner has no per-op instrument");
   }
   std::vector<KernelTime> last_kernel_times() override { return {}; }
   std::string instrument_method() const override { return "none"; }

 private:
   torch::jit::Module module_;
   std::vector<c10::IValue> inputs_;
   std::vector<at::Tensor> outputs_;
};

}  // namespace

std::unique_ptr<Backend> make_backend() { return std::make_unique<LibtorchBackend>(); }

}  // namespace auditor
