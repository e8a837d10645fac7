// Reading and writing NumPy .npy files (format 1.0-3.0, little-endian, C order): the runner's
// input and output format, so inputs come straight from the Python side's arrays.
#pragma once

#include <string>
#include <vector>

#include "backend.h"

namespace auditor {

struct NpyArray {
   TensorInfo info;
   std::vector<char> data;
};

// Throws std::runtime_error naming the file and what is wrong with it.
NpyArray read_npy(const std::string &path);
void write_npy(const std::string &path, const TensorInfo &info, const void *data, std::size_t nbytes);

}  // namespace auditor
