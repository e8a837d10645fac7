// Auditor shim (see include/tvm/support/io.h): base64 streams over another support::Stream.
// tensor.cc uses them to put a Tensor into JSON and back (`__data_to_json__`); the coding
// itself is tvm-ffi's (Base64Encode / Base64Decode).
#ifndef AUDITOR_TVM_SHIM_SRC_SUPPORT_BASE64_H_
#define AUDITOR_TVM_SHIM_SRC_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/base64.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

// Collects what is written; Finish() writes it base64-encoded to the underlying stream.
class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* out) : out_(out) {}

  size_t Write(const void* ptr, size_t size) override {
    pending_.append(static_cast<const char*>(ptr), size);
    return size;
  }
  size_t Read(void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64OutStream is write-only";
    return 0;
  }
  void Finish() {
    ffi::String encoded = ffi::Base64Encode(TVMFFIByteArray{pending_.data(), pending_.size()});
    out_->Write(encoded.data(), encoded.size());
    pending_.clear();
  }

 private:
  Stream* out_;
  std::string pending_;
};

// InitPosition() reads the rest of the underlying stream (base64 text, surrounding white
// space ignored) and decodes it; reads then come from the decoded bytes.
class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* in) : in_(in) {}

  void InitPosition() {
    std::string text;
    char buffer[4096];
    for (size_t n; (n = in_->Read(buffer, sizeof(buffer))) != 0;) text.append(buffer, n);
    size_t begin = 0, end = text.size();
    while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
    while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
    ffi::Bytes bytes = ffi::Base64Decode(TVMFFIByteArray{text.data() + begin, end - begin});
    decoded_.assign(bytes.data(), bytes.size());
    pos_ = 0;
  }
  size_t Read(void* ptr, size_t size) override {
    size_t n = std::min(size, decoded_.size() - pos_);
    if (n != 0) std::memcpy(ptr, decoded_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) override {
    TVM_FFI_THROW(InternalError) << "Base64InStream is read-only";
    return 0;
  }

 private:
  Stream* in_;
  std::string decoded_;
  size_t pos_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // AUDITOR_TVM_SHIM_SRC_SUPPORT_BASE64_H_
