// Auditor shim (see include/tvm/support/io.h): support::Stream over bytes in memory. The
// runtime reads VM executables and parameter blobs from one (BytesInStream) and writes them
// into a std::string (BytesOutStream).
#ifndef AUDITOR_TVM_SHIM_SRC_SUPPORT_BYTES_IO_H_
#define AUDITOR_TVM_SHIM_SRC_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/error.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

// Reads from bytes the caller keeps alive (a std::string), or holds a reference to ffi::Bytes.
class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesInStream(const std::string& bytes) : data_(bytes.data()), size_(bytes.size()) {}
  explicit BytesInStream(const ffi::Bytes& bytes)
      : owner_(bytes), data_(owner_.data()), size_(owner_.size()) {}
  BytesInStream(const char* data, size_t size) : data_(data), size_(size) {}

  size_t Read(void* ptr, size_t size) override {
    size_t n = std::min(size, size_ - pos_);
    if (n != 0) std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "BytesInStream is read-only";
    return 0;
  }

 private:
  ffi::Bytes owner_;
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Appends to a std::string the caller owns.
class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesOutStream(std::string* out) : out_(out) {}

  size_t Write(const void* ptr, size_t size) override {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }
  size_t Read(void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "BytesOutStream is write-only";
    return 0;
  }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // AUDITOR_TVM_SHIM_SRC_SUPPORT_BYTES_IO_H_
