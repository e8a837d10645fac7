// SOFIE backend: the model is compiled in. SOFIE generates C++ per model; the adapter
// (compilers/sofie_cpp.py) fills compilers/sofie_glue.cpp's C ABI around that code, and
// this backend drives it. The instrumented binary (AUDITOR_SOFIE_PROFILE) links the glue
// of the kProfile header whose timers the adapter rewrote into one op-clock read per operator
// boundary: the instrumentation is compiled in, so switching it off means the other binary.

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.h"

extern "C" {
const char *sofie_last_error();
int sofie_num_inputs();
int sofie_num_outputs();
std::size_t sofie_input_bytes(int i);
std::size_t sofie_output_bytes(int i);
const char *sofie_input_dtype(int i);
const char *sofie_output_dtype(int i);
int sofie_input_rank(int i);
int sofie_output_rank(int i);
long long sofie_input_dim(int i, int d);
long long sofie_output_dim(int i, int d);
void sofie_set_threads(int threads);
void *sofie_create(const char *weights_path);
void sofie_destroy(void *h);
void sofie_infer(void *h, const void *const *in, void *const *out);
const char *sofie_error(void *h);
const char *sofie_blas_library();
std::size_t sofie_intermediate_bytes(void *h);
#if defined(AUDITOR_SOFIE_PROFILE)
int sofie_prof_count();
const char *sofie_prof_name(int i);
const char *sofie_prof_clock();
double sofie_prof_read_cost_ns();
void sofie_prof_take(double *ns, int *calls);
#endif
}

#ifndef AUDITOR_SOFIE_VERSION
#define AUDITOR_SOFIE_VERSION "unknown"
#endif

namespace auditor {
namespace {

TensorInfo info(bool input, int i)
{
   TensorInfo t;
   t.name = (input ? "input_" : "output_") + std::to_string(i);
   t.dtype = input ? sofie_input_dtype(i) : sofie_output_dtype(i);
   const int rank = input ? sofie_input_rank(i) : sofie_output_rank(i);
   for (int d = 0; d < rank; ++d)
      t.shape.push_back(input ? sofie_input_dim(i, d) : sofie_output_dim(i, d));
   return t;
}

class SofieBackend : public Backend {
 public:
   ~SofieBackend() override
   {
      if (handle_)
         sofie_destroy(handle_);
   }
   std::string name() const override { return "sofie"; }
   std::string version() const override { return AUDITOR_SOFIE_VERSION; }

   void load(const std::string &weights) override
   {
      sofie_set_threads(1);  // the board has one core
      handle_ = sofie_create(weights.c_str());
      if (!handle_)
         throw std::runtime_error("SOFIE Session(" + weights + ") failed: " + sofie_last_error());
      for (int i = 0; i < sofie_num_inputs(); ++i) {
         inputs_.push_back(info(true, i));
         in_.emplace_back(sofie_input_bytes(i));
      }
      for (int i = 0; i < sofie_num_outputs(); ++i) {
         outputs_.push_back(info(false, i));
         out_.emplace_back(sofie_output_bytes(i));
      }
      for (auto &b : in_)
         in_ptrs_.push_back(b.data());
      for (auto &b : out_)
         out_ptrs_.push_back(b.data());
   }

   std::vector<TensorInfo> inputs() const override { return inputs_; }
   std::vector<TensorInfo> outputs() const override { return outputs_; }

   void set_input(std::size_t i, const TensorInfo &, const void *data, std::size_t nbytes) override
   {
      if (i >= in_.size() || nbytes != in_[i].size())
         throw std::runtime_error("input " + std::to_string(i) + ": " + std::to_string(nbytes) +
                                  " bytes given, the model takes " +
                                  (i < in_.size() ? std::to_string(in_[i].size()) : std::string("none")));
      std::memcpy(in_[i].data(), data, nbytes);
   }

   void run() override
   {
      sofie_infer(handle_, in_ptrs_.data(), out_ptrs_.data());
      const char *err = sofie_error(handle_);
      if (*err)
         throw std::runtime_error(std::string("SOFIE doInfer threw: ") + err);
   }

   void get_output(std::size_t i, void *data, std::size_t nbytes) override
   {
      if (i >= out_.size() || nbytes != out_[i].size())
         throw std::runtime_error("output " + std::to_string(i) + ": wrong size");
      std::memcpy(data, out_[i].data(), nbytes);
   }

#if defined(AUDITOR_SOFIE_PROFILE)
   bool can_instrument() const override { return true; }
   void set_instrumented(bool on) override
   {
      on_ = on;
      ns_.assign(sofie_prof_count(), 0.0);
      calls_.assign(sofie_prof_count(), 0);
      sofie_prof_take(ns_.data(), calls_.data());  // start afresh
   }
   // The timers sum every inference; take this one's and zero them.
   std::vector<KernelTime> last_kernel_times() override
   {
      std::vector<KernelTime> out;
      if (!on_)
         return out;
      sofie_prof_take(ns_.data(), calls_.data());
      for (int i = 0; i < static_cast<int>(ns_.size()); ++i)
         if (calls_[i] > 0)
            out.push_back({sofie_prof_name(i), calls_[i], ns_[i]});
      return out;
   }
#else
   bool can_instrument() const override { return false; }
   void set_instrumented(bool on) override
   {
      if (on)
         throw std::runtime_error("this SOFIE runner was built without operator timers");
   }
   std::vector<KernelTime> last_kernel_times() override { return {}; }
#endif

   std::string instrument_method() const override { return "sofie-light-timers"; }

   std::map<std::string, long long> memory_info() const override
   {
      return {{"intermediate_pool_bytes", static_cast<long long>(sofie_intermediate_bytes(handle_))}};
   }

   std::vector<std::string> notes() const override
   {
      const char *blas = sofie_blas_library();
      std::vector<std::string> out = {std::string("sgemm_ bound to ") + (*blas ? blas : "(statically linked)")};
#if defined(AUDITOR_SOFIE_PROFILE)
      out.push_back(std::string("per-op: SOFIE's kProfile operator boundaries, one ") + sofie_prof_clock() +
                    " read each (" + std::to_string(sofie_prof_read_cost_ns()) +
                    " ns per read here); an operator runs from the previous read to the end of its code");
#endif
      return out;
   }

 private:
   void *handle_ = nullptr;
   bool on_ = false;
#if defined(AUDITOR_SOFIE_PROFILE)
   std::vector<double> ns_;
   std::vector<int> calls_;
#endif
   std::vector<TensorInfo> inputs_, outputs_;
   std::vector<std::vector<char>> in_, out_;
   std::vector<const void *> in_ptrs_;
   std::vector<void *> out_ptrs_;
};

}  // namespace

std::unique_ptr<Backend> make_backend() { return std::make_unique<SofieBackend>(); }

}  // namespace auditor
