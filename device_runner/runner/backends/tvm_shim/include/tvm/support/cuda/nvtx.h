// Auditor shim (see ../io.h): NVTX ranges mark regions for NVIDIA's profilers. The runner
// is CPU-only, so a range is a no-op object, as in a TVM build without CUDA.
#ifndef AUDITOR_TVM_SHIM_SUPPORT_CUDA_NVTX_H_
#define AUDITOR_TVM_SHIM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // AUDITOR_TVM_SHIM_SUPPORT_CUDA_NVTX_H_
