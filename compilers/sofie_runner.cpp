// Stand-alone timing runner for a device, linked with a filled-in sofie_glue.cpp.
//
//   runner WEIGHTS.dat INPUTS.bin OUTPUTS.bin [RUNS] [WARMUP] [TIMES.txt]
//
// INPUTS.bin holds every input's raw bytes one after another, in the model's input order;
// OUTPUTS.bin gets the outputs the same way. One line of latency statistics goes to
// stdout; TIMES.txt (optional) gets every timed run in nanoseconds, one per line. A
// profiled build (SOFIE_GLUE_PROFILE) also prints one line per SOFIE operator.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

extern "C" {
const char *sofie_last_error();
int sofie_num_inputs();
int sofie_num_outputs();
std::size_t sofie_input_bytes(int i);
std::size_t sofie_output_bytes(int i);
void sofie_set_threads(int threads);
void *sofie_create(const char *weights_path);
void sofie_destroy(void *h);
void sofie_infer(void *h, const void *const *in, void *const *out);
const char *sofie_error(void *h);
#if defined(SOFIE_GLUE_PROFILE)
int sofie_prof_count(void *h);
const char *sofie_prof_name(void *h, int i);
double sofie_prof_avg_us(void *h, int i);
void sofie_prof_reset(void *h);
#endif
}

int main(int argc, char **argv)
{
   if (argc < 4) {
      std::cerr << "usage: " << argv[0] << " WEIGHTS.dat INPUTS.bin OUTPUTS.bin [RUNS] [WARMUP] [TIMES.txt]\n";
      return 2;
   }
   const int runs = argc > 4 ? std::atoi(argv[4]) : 1000;
   const int warmup = argc > 5 ? std::atoi(argv[5]) : 50;
   sofie_set_threads(1);

   std::ifstream fin(argv[2], std::ios::binary);
   std::vector<char> raw((std::istreambuf_iterator<char>(fin)), std::istreambuf_iterator<char>());
   std::vector<std::vector<char>> inputs(sofie_num_inputs());
   std::size_t offset = 0;
   for (int i = 0; i < sofie_num_inputs(); ++i) {
      const std::size_t n = sofie_input_bytes(i);
      if (offset + n > raw.size()) {
         std::cerr << "inputs file is too short: input " << i << " needs " << n << " bytes\n";
         return 2;
      }
      inputs[i].assign(raw.begin() + offset, raw.begin() + offset + n);
      offset += n;
   }
   std::vector<std::vector<char>> outputs(sofie_num_outputs());
   std::vector<const void *> in_ptrs;
   std::vector<void *> out_ptrs;
   for (auto &b : inputs)
      in_ptrs.push_back(b.data());
   for (int i = 0; i < sofie_num_outputs(); ++i) {
      outputs[i].resize(sofie_output_bytes(i));
      out_ptrs.push_back(outputs[i].data());
   }

   void *h = sofie_create(argv[1]);
   if (!h) {
      std::cerr << "sofie_create failed: " << sofie_last_error() << "\n";
      return 1;
   }
   for (int i = 0; i < warmup; ++i)
      sofie_infer(h, in_ptrs.data(), out_ptrs.data());
#if defined(SOFIE_GLUE_PROFILE)
   sofie_prof_reset(h);
#endif
   std::vector<long long> ns(runs);
   for (int i = 0; i < runs; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      sofie_infer(h, in_ptrs.data(), out_ptrs.data());
      auto t1 = std::chrono::steady_clock::now();
      ns[i] = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
   }
   if (*sofie_error(h)) {
      std::cerr << "inference failed: " << sofie_error(h) << "\n";
      return 1;
   }
   std::ofstream fout(argv[3], std::ios::binary);
   for (auto &b : outputs)
      fout.write(b.data(), static_cast<std::streamsize>(b.size()));
   if (argc > 6) {
      std::ofstream ft(argv[6]);
      for (long long t : ns)
         ft << t << "\n";
   }
   if (runs > 0) {
      std::vector<long long> sorted = ns;
      std::sort(sorted.begin(), sorted.end());
      double mean = 0;
      for (long long t : ns)
         mean += t;
      mean /= runs;
      std::printf("sofie-runner runs=%d p50_us=%.3f mean_us=%.3f min_us=%.3f max_us=%.3f\n", runs,
                  sorted[runs / 2] / 1e3, mean / 1e3, sorted.front() / 1e3, sorted.back() / 1e3);
   }
#if defined(SOFIE_GLUE_PROFILE)
   const int n = sofie_prof_count(h);
   for (int i = 0; i < n; ++i)
      std::printf("sofie-op name=%s avg_us=%.3f\n", sofie_prof_name(h, i), sofie_prof_avg_us(h, i));
#endif
   sofie_destroy(h);
   return 0;
}
