// Auditor shim (see io.h): how typed values go through a support::Stream.
//
// The layout is the one the TVM compiler writes, which the runtime sources read back:
//   - numbers, enums and plain C structs (DLDataType, DLDevice): their bytes as in memory;
//   - std::string: a uint64 length, then the bytes;
//   - std::vector<T>: a uint64 count, then the elements (numbers as one block);
//   - std::pair<A, B>: A then B;
//   - ffi::String and ffi::Array<T> as std::string and std::vector<T> (metadata.h's
//     FunctionInfo, which device modules carry; nothing a CPU relax module reads).
// Types with their own layout specialise Serializer<T> themselves (the VM's VMFuncInfo).
#ifndef AUDITOR_TVM_SHIM_SUPPORT_SERIALIZER_H_
#define AUDITOR_TVM_SHIM_SUPPORT_SERIALIZER_H_

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

// Trivially copyable values: stored as their bytes.
template <typename T>
struct Serializer {
  static constexpr bool enabled = std::is_trivially_copyable_v<T>;
  static_assert(enabled, "no support::Serializer for this type");
  static void Write(Stream* strm, const T& value) { strm->Write(&value, sizeof(T)); }
  static bool Read(Stream* strm, T* out) { return strm->Read(out, sizeof(T)) == sizeof(T); }
};

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& value) {
    uint64_t size = value.size();
    strm->Write(&size, sizeof(size));
    if (size != 0) strm->Write(value.data(), value.size());
  }
  static bool Read(Stream* strm, std::string* out) {
    uint64_t size = 0;
    if (strm->Read(&size, sizeof(size)) != sizeof(size)) return false;
    out->resize(static_cast<size_t>(size));
    return size == 0 || strm->Read(&(*out)[0], out->size()) == out->size();
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = Serializer<T>::enabled;
  static void Write(Stream* strm, const std::vector<T>& value) {
    uint64_t size = value.size();
    strm->Write(&size, sizeof(size));
    strm->WriteArray(value.data(), value.size());
  }
  static bool Read(Stream* strm, std::vector<T>* out) {
    uint64_t size = 0;
    if (strm->Read(&size, sizeof(size)) != sizeof(size)) return false;
    out->resize(static_cast<size_t>(size));
    return strm->ReadArray(out->data(), out->size());
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = Serializer<A>::enabled && Serializer<B>::enabled;
  static void Write(Stream* strm, const std::pair<A, B>& value) {
    Serializer<A>::Write(strm, value.first);
    Serializer<B>::Write(strm, value.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* out) {
    return Serializer<A>::Read(strm, &out->first) && Serializer<B>::Read(strm, &out->second);
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& value) {
    uint64_t size = value.size();
    strm->Write(&size, sizeof(size));
    if (size != 0) strm->Write(value.data(), value.size());
  }
  static bool Read(Stream* strm, ffi::String* out) {
    std::string text;
    if (!Serializer<std::string>::Read(strm, &text)) return false;
    *out = ffi::String(std::move(text));
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = Serializer<T>::enabled;
  static void Write(Stream* strm, const ffi::Array<T>& value) {
    uint64_t size = value.size();
    strm->Write(&size, sizeof(size));
    for (const T& item : value) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, ffi::Array<T>* out) {
    uint64_t size = 0;
    if (strm->Read(&size, sizeof(size)) != sizeof(size)) return false;
    ffi::Array<T> items;
    for (uint64_t i = 0; i < size; ++i) {
      T item;
      if (!Serializer<T>::Read(strm, &item)) return false;
      items.push_back(std::move(item));
    }
    *out = std::move(items);
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // AUDITOR_TVM_SHIM_SUPPORT_SERIALIZER_H_
