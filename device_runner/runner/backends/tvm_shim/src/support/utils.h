// Auditor shim (see include/tvm/support/io.h): the one helper of TVM's src/support/utils.h
// that the runtime files the runner builds call (thread_pool.cc checks CPU ids with it).
#ifndef AUDITOR_TVM_SHIM_SRC_SUPPORT_UTILS_H_
#define AUDITOR_TVM_SHIM_SRC_SUPPORT_UTILS_H_

#include <string>

namespace tvm {
namespace support {

// Whether `text` is a non-empty run of decimal digits.
inline bool IsNumber(const std::string& text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace support
}  // namespace tvm

#endif  // AUDITOR_TVM_SHIM_SRC_SUPPORT_UTILS_H_
