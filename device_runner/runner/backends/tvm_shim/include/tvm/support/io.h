// Auditor shim: the apache-tvm wheel ships the runtime sources that include this header but
// not the header. Written from what those sources call (tvm/src/runtime/**, the runtime
// headers): a byte stream with two virtual primitives and typed helpers on top, whose typed
// reads and writes go through support::Serializer<T> (serializer.h).
//
// The binary layout must be the one the TVM compiler writes (a relax VM executable, Tensor
// constants, parameter blobs): see serializer.h. Only little-endian machines are supported.
#ifndef AUDITOR_TVM_SHIM_SUPPORT_IO_H_
#define AUDITOR_TVM_SHIM_SUPPORT_IO_H_

#include <tvm/ffi/endian.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

static_assert(TVM_FFI_IO_NO_ENDIAN_SWAP,
              "the auditor's TVM support shim reads TVM's little-endian streams only");

namespace tvm {
namespace support {

// Specialised per type in serializer.h (and by the runtime for its own types): a struct with
// `static constexpr bool enabled`, `static void Write(Stream*, const T&)` and
// `static bool Read(Stream*, T*)`.
template <typename T>
struct Serializer;

class Stream {
 public:
  virtual ~Stream() = default;
  // Raw bytes: returns how many were read (0 at the end) / written.
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;

  // One typed value.
  template <typename T>
  void Write(const T& value) {
    Serializer<T>::Write(this, value);
  }
  template <typename T>
  bool Read(T* out) {
    return Serializer<T>::Read(this, out);
  }

  // `n` typed values one after the other (no length prefix); numbers in one block.
  template <typename T>
  void WriteArray(const T* data, size_t n) {
    if constexpr (std::is_arithmetic_v<T>) {
      Write(static_cast<const void*>(data), n * sizeof(T));
    } else {
      for (size_t i = 0; i < n; ++i) Serializer<T>::Write(this, data[i]);
    }
  }
  template <typename T>
  bool ReadArray(T* data, size_t n) {
    if constexpr (std::is_arithmetic_v<T>) {
      return Read(static_cast<void*>(data), n * sizeof(T)) == n * sizeof(T);
    } else {
      for (size_t i = 0; i < n; ++i) {
        if (!Serializer<T>::Read(this, data + i)) return false;
      }
      return true;
    }
  }
};

}  // namespace support
}  // namespace tvm

#include <tvm/support/serializer.h>

#endif  // AUDITOR_TVM_SHIM_SUPPORT_IO_H_
