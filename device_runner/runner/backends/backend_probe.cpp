// The probe backend (probe.cmake): an inference that does exactly what its model file says, so
// the runner's counters can be checked against known answers. Each behaviour is its own
// noinline function: the audit's call sites must name it.
//   alloc N BYTES        N malloc(BYTES) and N free per inference
//   first-alloc N BYTES  the same, in the first inference only
//   lock N               N pthread_mutex_lock/unlock pairs per inference
//   syscall N            N getppid system calls per inference (syscall(2), not the vDSO)
//   thread N             N threads created and joined per inference
//   touch BYTES          one malloc(BYTES), every page written, freed (above glibc's mmap
//                        threshold: mmap, page faults and munmap every inference)
//   fail                 the inference throws

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.h"

namespace auditor {
namespace {

// Keeps the compiler from pairing and dropping a malloc/free it can see.
inline void escape(void *p) { asm volatile("" : : "r"(p) : "memory"); }

__attribute__((noinline)) void probe_allocate(int n, long long bytes)
{
   for (int i = 0; i < n; ++i) {
      void *p = std::malloc(static_cast<std::size_t>(bytes));
      escape(p);
      std::free(p);
   }
}

pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;

__attribute__((noinline)) void probe_lock(int n)
{
   for (int i = 0; i < n; ++i) {
      pthread_mutex_lock(&g_mutex);
      pthread_mutex_unlock(&g_mutex);
   }
}

__attribute__((noinline)) void probe_syscall(int n)
{
   for (int i = 0; i < n; ++i)
      syscall(SYS_getppid);
}

__attribute__((noinline)) void probe_thread(int n)
{
   for (int i = 0; i < n; ++i) {
      pthread_t t;
      if (pthread_create(&t, nullptr, [](void *) -> void * { return nullptr; }, nullptr) != 0)
         throw std::runtime_error("probe: pthread_create failed");
      pthread_join(t, nullptr);
   }
}

__attribute__((noinline)) void probe_touch(long long bytes)
{
   char *p = static_cast<char *>(std::malloc(static_cast<std::size_t>(bytes)));
   for (long long i = 0; i < bytes; i += 4096)
      p[i] = 1;
   escape(p);
   std::free(p);
}

struct Step {
   std::string what;
   long long n = 0, bytes = 0;
};

class ProbeBackend : public Backend {
 public:
   std::string name() const override { return "probe"; }
   std::string version() const override { return "1"; }

   void load(const std::string &path) override
   {
      std::ifstream in(path);
      if (!in)
         throw std::runtime_error("probe: cannot read " + path);
      std::string line;
      while (std::getline(in, line)) {
         std::istringstream words(line);
         Step s;
         if (!(words >> s.what))
            continue;
         words >> s.n >> s.bytes;
         if (s.what != "alloc" && s.what != "first-alloc" && s.what != "lock" && s.what != "syscall" &&
             s.what != "thread" && s.what != "touch" && s.what != "fail")
            throw std::runtime_error("probe: unknown behaviour '" + s.what + "'");
         steps_.push_back(s);
      }
   }

   std::vector<TensorInfo> inputs() const override { return {}; }
   std::vector<TensorInfo> outputs() const override { return {{"output_0", "float32", {1}}}; }

   void set_input(std::size_t, const TensorInfo &, const void *data, std::size_t nbytes) override
   {
      value_ = 0;
      if (nbytes >= sizeof(float))
         std::memcpy(&value_, data, sizeof(float));
   }

   void run() override
   {
      for (const Step &s : steps_) {
         if (s.what == "alloc" || (s.what == "first-alloc" && runs_ == 0))
            probe_allocate(static_cast<int>(s.n), s.bytes);
         else if (s.what == "lock")
            probe_lock(static_cast<int>(s.n));
         else if (s.what == "syscall")
            probe_syscall(static_cast<int>(s.n));
         else if (s.what == "thread")
            probe_thread(static_cast<int>(s.n));
         else if (s.what == "touch")
            probe_touch(s.n);
         else if (s.what == "fail")
            throw std::runtime_error("probe: the inference failed as asked");
      }
      ++runs_;
   }

   void get_output(std::size_t, void *data, std::size_t nbytes) override
   {
      if (nbytes != sizeof(float))
         throw std::runtime_error("probe: one float32 output");
      std::memcpy(data, &value_, sizeof(float));
   }

   bool can_instrument() const override { return false; }
   void set_instrumented(bool on) override
   {
      if (on)
         throw std::runtime_error("probe: no per-kernel instrumentation");
   }
   std::vector<KernelTime> last_kernel_times() override { return {}; }
   std::string instrument_method() const override { return "none"; }

 private:
   std::vector<Step> steps_;
   long long runs_ = 0;
   float value_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_backend() { return std::make_unique<ProbeBackend>(); }

}  // namespace auditor
