// The runner: loads a compiled model through its backend, binds inputs from .npy files,
// times whole inferences (first apart, warm-up, N timed), optionally times each kernel in
// separate instrumented runs, samples RSS, runs the check examples and writes one JSON.
// Usage and the JSON layout: ../README.md.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <vector>

#include "backend.h"
#include "json.h"
#include "npy.h"
#include "realtime.h"
#include "rt_audit.h"
#include "rss.h"

namespace auditor {
namespace {

constexpr int kFormat = 1;
enum Exit { kOk = 0, kUsage = 2, kLoad = 3, kInfer = 4 };

struct Args {
   std::string model, inputs_dir, json_path, outputs_dir;
   int examples = 0, runs = 1000, warmup = 50, min_runs = 50, per_op_runs = 0;
   int sched_fifo = 0, cpu = -1;
   int rt_audit = 0;  // > 0: this invocation audits that many inferences instead of timing
   bool rt_markers = false, mlockall = false, malloc_keep = false;
   double max_seconds = 10.0, rss_interval_ms = 1.0;
};

struct UsageError : std::runtime_error {
   using std::runtime_error::runtime_error;
};

// The audit invocation ends after its pass: no timing, per-op runs, examples or memory section.
struct AuditDone {};

const char *kUsageText =
   "usage: auditor-runner --model PATH --inputs-dir DIR --json OUT.json [--outputs-dir DIR]\n"
   "       [--examples E] [--runs N] [--warmup N] [--max-seconds S] [--min-runs N]\n"
   "       [--per-op-runs N] [--rss-interval-ms MS] [--sched-fifo PRIO] [--cpu N]\n"
   "       [--mlockall 0|1] [--malloc-keep 0|1] [--rt-audit N] [--rt-markers 0|1]\n";

double parse_number(const std::string &flag, const std::string &text)
{
   char *end = nullptr;
   const double v = std::strtod(text.c_str(), &end);
   if (text.empty() || *end != '\0')
      throw UsageError(flag + " wants a number, got '" + text + "'");
   return v;
}

bool parse_switch(const std::string &flag, const std::string &text)
{
   if (text != "0" && text != "1")
      throw UsageError(flag + " wants 0 or 1, got '" + text + "'");
   return text == "1";
}

Args parse_args(int argc, char **argv)
{
   Args a;
   for (int i = 1; i < argc; ++i) {
      const std::string flag = argv[i];
      if (flag == "--help" || flag == "-h")
         throw UsageError("");
      if (i + 1 >= argc)
         throw UsageError(flag + " needs a value");
      const std::string v = argv[++i];
      if (flag == "--model") a.model = v;
      else if (flag == "--inputs-dir") a.inputs_dir = v;
      else if (flag == "--json") a.json_path = v;
      else if (flag == "--outputs-dir") a.outputs_dir = v;
      else if (flag == "--examples") a.examples = static_cast<int>(parse_number(flag, v));
      else if (flag == "--runs") a.runs = static_cast<int>(parse_number(flag, v));
      else if (flag == "--warmup") a.warmup = static_cast<int>(parse_number(flag, v));
      else if (flag == "--min-runs") a.min_runs = static_cast<int>(parse_number(flag, v));
      else if (flag == "--max-seconds") a.max_seconds = parse_number(flag, v);
      else if (flag == "--per-op-runs") a.per_op_runs = static_cast<int>(parse_number(flag, v));
      else if (flag == "--rss-interval-ms") a.rss_interval_ms = parse_number(flag, v);
      else if (flag == "--sched-fifo") a.sched_fifo = static_cast<int>(parse_number(flag, v));
      else if (flag == "--cpu") a.cpu = static_cast<int>(parse_number(flag, v));
      else if (flag == "--mlockall") a.mlockall = parse_switch(flag, v);
      else if (flag == "--malloc-keep") a.malloc_keep = parse_switch(flag, v);
      else if (flag == "--rt-audit") a.rt_audit = static_cast<int>(parse_number(flag, v));
      else if (flag == "--rt-markers") a.rt_markers = parse_switch(flag, v);
      else throw UsageError("unknown option " + flag);
   }
   if (a.model.empty() || a.inputs_dir.empty() || a.json_path.empty())
      throw UsageError("--model, --inputs-dir and --json are required");
   if (a.runs < 1 || a.warmup < 0 || a.min_runs < 1 || a.per_op_runs < 0 || a.examples < 0 || a.rt_audit < 0)
      throw UsageError("counts must be positive");
   if (a.rt_markers && a.rt_audit == 0)
      throw UsageError("--rt-markers needs --rt-audit N");
   if (a.examples > 0 && a.outputs_dir.empty())
      throw UsageError("--examples needs --outputs-dir");
   return a;
}

bool file_exists(const std::string &path)
{
   struct stat st {};
   return stat(path.c_str(), &st) == 0;
}

// timing_0.npy, timing_1.npy, ... (or example<e>_<i>.npy): every file of that prefix.
std::vector<NpyArray> read_inputs(const std::string &dir, const std::string &prefix)
{
   std::vector<NpyArray> arrays;
   for (int i = 0;; ++i) {
      const std::string path = dir + "/" + prefix + std::to_string(i) + ".npy";
      if (!file_exists(path))
         break;
      arrays.push_back(read_npy(path));
   }
   if (arrays.empty())
      throw UsageError("no " + prefix + "0.npy in " + dir);
   return arrays;
}

std::string shape_text(const std::vector<int64_t> &shape)
{
   std::string s = "[";
   for (std::size_t i = 0; i < shape.size(); ++i)
      s += (i ? "," : "") + std::to_string(shape[i]);
   return s + "]";
}

// Checks the files against what the backend says it takes, then binds them.
void bind_inputs(Backend &b, const std::vector<NpyArray> &arrays)
{
   const auto expected = b.inputs();
   if (!expected.empty() && expected.size() != arrays.size())
      throw UsageError("the model takes " + std::to_string(expected.size()) + " inputs, " +
                       std::to_string(arrays.size()) + " files were given");
   for (std::size_t i = 0; i < arrays.size(); ++i) {
      const auto &a = arrays[i];
      if (!expected.empty()) {
         const auto &e = expected[i];
         if (e.dtype != a.info.dtype || tensor_bytes(e) != a.data.size())
            throw UsageError("input " + std::to_string(i) + " (" + e.name + ") wants " + e.dtype + " " +
                             shape_text(e.shape) + ", the file holds " + a.info.dtype + " " +
                             shape_text(a.info.shape));
      }
      TensorInfo info = expected.empty() ? a.info : expected[i];
      info.shape = a.info.shape;
      if (info.name.empty())
         info.name = "input_" + std::to_string(i);
      b.set_input(i, info, a.data.data(), a.data.size());
   }
}

long long now_ns()
{
   return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void tensors_json(Json &j, const std::vector<TensorInfo> &ts)
{
   j.begin_array();
   for (const auto &t : ts) {
      j.begin_object().key("name").value(t.name).key("dtype").value(t.dtype).key("shape").begin_array();
      for (auto d : t.shape)
         j.value(static_cast<long long>(d));
      j.end_array().end_object();
   }
   j.end_array();
}

std::string arch()
{
   struct utsname u {};
   return uname(&u) == 0 ? std::string(u.machine) : "unknown";
}

std::string compiler_id()
{
#if defined(__clang__)
   return "clang " __clang_version__;
#elif defined(__GNUC__)
   return "gcc " __VERSION__;
#else
   return "unknown";
#endif
}

struct PerOp {
   std::vector<long long> whole_ns;
   std::vector<std::string> order;                       // kernels in first-seen order
   std::map<std::string, std::vector<double>> ns;        // kernel -> time per instrumented run
   std::map<std::string, int> calls;                     // kernel -> calls per inference (max)
};

PerOp time_kernels(Backend &b, int runs)
{
   PerOp p;
   b.set_instrumented(true);
   for (int i = 0; i < std::min(runs, 5); ++i)  // warm the instrumented path
      b.run();
   b.last_kernel_times();  // drop what the warm-up recorded
   for (int r = 0; r < runs; ++r) {
      const long long t0 = now_ns();
      b.run();
      p.whole_ns.push_back(now_ns() - t0);
      for (const auto &k : b.last_kernel_times()) {
         auto &series = p.ns[k.name];
         if (series.empty()) {
            p.order.push_back(k.name);
            series.assign(r, 0.0);  // not called in earlier runs
         }
         series.resize(r, 0.0);
         series.push_back(k.ns);
         p.calls[k.name] = std::max(p.calls[k.name], k.calls);
      }
   }
   for (auto &kv : p.ns)
      kv.second.resize(runs, 0.0);
   b.set_instrumented(false);
   return p;
}

int run_main(int argc, char **argv)
{
   Args args;
   try {
      args = parse_args(argc, argv);
   } catch (const UsageError &e) {
      if (*e.what())
         std::cerr << "auditor-runner: " << e.what() << "\n";
      std::cerr << kUsageText;
      return kUsage;
   }

   Json j;
   j.begin_object();
   auto backend = make_backend();
   j.key("runner").begin_object()
      .key("format").value(kFormat)
      .key("backend").value(backend->name())
      .key("backend_version").value(backend->version())
      .key("arch").value(arch())
      .key("compiler").value(compiler_id())
      .key("instrument_method").value(backend->instrument_method())
      .key("can_instrument").value(backend->can_instrument())
      .end_object();
   j.key("model").value(args.model);
   j.key("settings").begin_object()
      .key("runs").value(args.runs).key("warmup").value(args.warmup)
      .key("min_runs").value(args.min_runs).key("max_seconds").value(args.max_seconds)
      .key("per_op_runs").value(args.per_op_runs).key("rss_interval_ms").value(args.rss_interval_ms)
      .key("sched_fifo").value(args.sched_fifo).key("cpu").value(args.cpu)
      .key("examples").value(args.examples).key("mlockall").value(args.mlockall)
      .key("malloc_keep").value(args.malloc_keep)
      .key("rt_audit").value(args.rt_audit).key("rt_markers").value(args.rt_markers)
      .end_object();

   int status = kOk;
   std::string error;
   std::vector<std::string> notes;
   // Everything after this point ends in a JSON document, whatever fails.
   try {
      status = kUsage;
      const auto timing_inputs = read_inputs(args.inputs_dir, "timing_");
      std::vector<std::vector<NpyArray>> examples;
      for (int e = 0; e < args.examples; ++e)
         examples.push_back(read_inputs(args.inputs_dir, "example" + std::to_string(e) + "_"));
      if (args.per_op_runs > 0 && !backend->can_instrument())
         throw UsageError("this runner has no per-op instrumentation (use the instrumented build)");

      status = kLoad;
      backend->load(args.model);
      status = kUsage;
      bind_inputs(*backend, timing_inputs);

      status = kInfer;
      const Scheduling sched = apply_scheduling(args.sched_fifo, args.cpu, args.mlockall, args.malloc_keep);
      j.key("scheduling").begin_object().key("policy").value(sched.policy)
         .key("priority").value(sched.priority);
      if (sched.cpu >= 0) j.key("cpu").value(sched.cpu); else j.key("cpu").null();
      j.key("mlockall").value(sched.memory_locked).key("malloc_keep").value(sched.heap_kept);
      j.key("notes").values(sched.notes).end_object();

      if (args.rt_audit > 0) {
         rt_audit_pass(*backend, {args.rt_audit, args.warmup, args.rt_markers}, j);
         j.key("outputs");
         tensors_json(j, backend->outputs());
         throw AuditDone();
      }

      backend->set_instrumented(false);
      RssSampler sampler(args.rss_interval_ms);
      const long long rss_before = current_rss_kb();
      long long t0 = now_ns();
      backend->run();
      const long long first_ns = now_ns() - t0;
      std::vector<TensorInfo> in_infos = backend->inputs();
      if (in_infos.empty())
         for (std::size_t i = 0; i < timing_inputs.size(); ++i) {
            in_infos.push_back(timing_inputs[i].info);
            in_infos.back().name = "input_" + std::to_string(i);  // as bind_inputs names them
         }
      const std::vector<TensorInfo> out_infos = backend->outputs();
      j.key("inputs");
      tensors_json(j, in_infos);
      j.key("outputs");
      tensors_json(j, out_infos);

      for (int i = 0; i < args.warmup; ++i)
         backend->run();
      std::vector<long long> samples;
      samples.reserve(std::min(args.runs, 1 << 20));  // a long profiling run grows it as it goes
      sampler.start();
      const long long deadline = now_ns() + static_cast<long long>(args.max_seconds * 1e9);
      bool stopped_early = false;
      for (int i = 0; i < args.runs; ++i) {
         t0 = now_ns();
         backend->run();
         const long long t1 = now_ns();
         samples.push_back(t1 - t0);
         if (t1 > deadline && i + 1 >= args.min_runs && i + 1 < args.runs) {
            stopped_early = true;
            break;
         }
      }
      sampler.stop();
      j.key("first_ns").value(first_ns);
      j.key("samples_ns").values(samples);
      j.key("stopped_early").value(stopped_early);

      if (args.per_op_runs > 0) {
         const PerOp p = time_kernels(*backend, args.per_op_runs);
         j.key("per_op").begin_object().key("runs").value(args.per_op_runs)
            .key("whole_ns").values(p.whole_ns).key("kernels").begin_array();
         for (const auto &name : p.order)
            j.begin_object().key("name").value(name).key("calls").value(p.calls.at(name))
               .key("ns").values(p.ns.at(name)).end_object();
         j.end_array().end_object();
      } else {
         j.key("per_op").null();
      }

      // The check examples: one run each, outputs written for the Python side to compare.
      const auto &outs = out_infos;
      for (int e = 0; e < args.examples; ++e) {
         bind_inputs(*backend, examples[e]);
         backend->run();
         for (std::size_t o = 0; o < outs.size(); ++o) {
            std::vector<char> buf(tensor_bytes(outs[o]));
            backend->get_output(o, buf.data(), buf.size());
            write_npy(args.outputs_dir + "/output" + std::to_string(e) + "_" + std::to_string(o) + ".npy",
                      outs[o], buf.data(), buf.size());
         }
      }

      double sum = 0;
      long long peak = 0;
      j.key("memory").begin_object().key("interval_ms").value(sampler.interval_ms())
         .key("rss_before_kb").value(rss_before).key("samples").begin_array();
      for (const auto &s : sampler.samples()) {
         j.begin_array().value(s.first).value(s.second).end_array();
         sum += s.second;
         peak = std::max(peak, s.second);
      }
      j.end_array();
      j.key("avg_rss_kb").value(sampler.samples().empty() ? 0.0 : sum / sampler.samples().size())
         .key("peak_rss_kb").value(peak).key("maxrss_kb").value(max_rss_kb());
      j.key("runtime").begin_object();
      for (const auto &kv : backend->memory_info())
         j.key(kv.first).value(kv.second);
      j.end_object().end_object();
      status = kOk;
   } catch (const AuditDone &) {
      status = kOk;
   } catch (const std::exception &e) {
      error = e.what();
      if (dynamic_cast<const UsageError *>(&e))
         status = kUsage;
      std::cerr << "auditor-runner: " << error << "\n";
   }
   for (const auto &n : backend->notes())
      notes.push_back(n);
   j.key("notes").values(notes);
   if (error.empty()) j.key("error").null(); else j.key("error").value(error);
   j.key("status").value(status);
   j.end_object();

   std::ofstream out(args.json_path);
   out << j.str() << "\n";
   if (!out) {
      std::cerr << "auditor-runner: cannot write " << args.json_path << "\n";
      return kUsage;
   }
   return status;
}

}  // namespace
}  // namespace auditor

int main(int argc, char **argv)
{
   try {
      return auditor::run_main(argc, argv);
   } catch (const std::exception &e) {
      std::cerr << "auditor-runner: " << e.what() << "\n";
      return 4;
   }
}
