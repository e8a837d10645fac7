#include "npy.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace auditor {
namespace {

const std::map<std::string, std::string> &descr_to_dtype()
{
   static const std::map<std::string, std::string> m = {
      {"<f4", "float32"}, {"<f8", "float64"}, {"<f2", "float16"}, {"<i8", "int64"},
      {"<i4", "int32"},   {"<i2", "int16"},   {"|i1", "int8"},    {"|u1", "uint8"},
      {"<u2", "uint16"},  {"<u4", "uint32"},  {"<u8", "uint64"},  {"|b1", "bool"}};
   return m;
}

std::string dtype_to_descr(const std::string &dtype)
{
   for (const auto &kv : descr_to_dtype())
      if (kv.second == dtype)
         return kv.first;
   throw std::runtime_error("no .npy descr for dtype " + dtype);
}

// The value of 'key' in the header dict, as written by numpy (a tiny, strict parser).
std::string header_value(const std::string &header, const std::string &key, const std::string &path)
{
   const auto k = header.find("'" + key + "'");
   if (k == std::string::npos)
      throw std::runtime_error(path + ": .npy header has no '" + key + "'");
   auto v = header.find(':', k);
   if (v == std::string::npos)
      throw std::runtime_error(path + ": malformed .npy header");
   ++v;
   while (v < header.size() && header[v] == ' ')
      ++v;
   if (v < header.size() && header[v] == '\'') {
      const auto end = header.find('\'', v + 1);
      return header.substr(v + 1, end - v - 1);
   }
   if (v < header.size() && header[v] == '(') {
      const auto end = header.find(')', v);
      return header.substr(v + 1, end - v - 1);
   }
   const auto end = header.find_first_of(",}", v);
   return header.substr(v, end - v);
}

}  // namespace

std::size_t dtype_size(const std::string &dtype)
{
   static const std::map<std::string, std::size_t> m = {
      {"float32", 4}, {"float64", 8}, {"float16", 2}, {"int64", 8}, {"int32", 4}, {"int16", 2},
      {"int8", 1},    {"uint8", 1},   {"uint16", 2},  {"uint32", 4}, {"uint64", 8}, {"bool", 1}};
   const auto it = m.find(dtype);
   return it == m.end() ? 0 : it->second;
}

std::size_t tensor_bytes(const TensorInfo &t)
{
   std::size_t n = dtype_size(t.dtype);
   for (auto d : t.shape)
      n *= static_cast<std::size_t>(d);
   return n;
}

NpyArray read_npy(const std::string &path)
{
   std::ifstream f(path, std::ios::binary);
   if (!f)
      throw std::runtime_error(path + ": cannot open");
   char magic[8];
   if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
      throw std::runtime_error(path + ": not a .npy file");
   const int major = static_cast<unsigned char>(magic[6]);
   std::uint32_t header_len = 0;
   if (major == 1) {
      unsigned char b[2];
      f.read(reinterpret_cast<char *>(b), 2);
      header_len = b[0] | (b[1] << 8);
   } else if (major == 2 || major == 3) {
      unsigned char b[4];
      f.read(reinterpret_cast<char *>(b), 4);
      header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<std::uint32_t>(b[3]) << 24);
   } else {
      throw std::runtime_error(path + ": unsupported .npy version " + std::to_string(major));
   }
   std::string header(header_len, '\0');
   if (!f.read(&header[0], header_len))
      throw std::runtime_error(path + ": truncated .npy header");

   NpyArray a;
   const std::string descr = header_value(header, "descr", path);
   const auto it = descr_to_dtype().find(descr);
   if (it == descr_to_dtype().end())
      throw std::runtime_error(path + ": unsupported dtype '" + descr + "' (little-endian numeric only)");
   a.info.dtype = it->second;
   if (header_value(header, "fortran_order", path).find("True") != std::string::npos)
      throw std::runtime_error(path + ": Fortran-ordered arrays are not supported");
   std::stringstream shape(header_value(header, "shape", path));
   std::string dim;
   while (std::getline(shape, dim, ',')) {
      if (dim.find_first_not_of(' ') == std::string::npos)
         continue;
      a.info.shape.push_back(std::stoll(dim));
   }
   a.data.resize(tensor_bytes(a.info));
   if (!f.read(a.data.data(), static_cast<std::streamsize>(a.data.size())))
      throw std::runtime_error(path + ": holds fewer bytes than its shape needs");
   return a;
}

void write_npy(const std::string &path, const TensorInfo &info, const void *data, std::size_t nbytes)
{
   std::string shape = "(";
   for (std::size_t i = 0; i < info.shape.size(); ++i)
      shape += std::to_string(info.shape[i]) + (info.shape.size() == 1 || i + 1 < info.shape.size() ? "," : "");
   shape += ")";
   std::string header = "{'descr': '" + dtype_to_descr(info.dtype) +
                        "', 'fortran_order': False, 'shape': " + shape + ", }";
   const std::size_t total = 10 + header.size() + 1;
   header.append((64 - total % 64) % 64, ' ');
   header += '\n';
   std::ofstream f(path, std::ios::binary);
   if (!f)
      throw std::runtime_error(path + ": cannot write");
   f.write("\x93NUMPY\x01\x00", 8);
   const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                 static_cast<unsigned char>(header.size() >> 8)};
   f.write(reinterpret_cast<const char *>(len), 2);
   f.write(header.data(), static_cast<std::streamsize>(header.size()));
   f.write(static_cast<const char *>(data), static_cast<std::streamsize>(nbytes));
   if (!f)
      throw std::runtime_error(path + ": write failed (disk full?)");
}

}  // namespace auditor
