// Names for code addresses recorded by the real-time audit, found by the runner itself so the
// JSON says which function allocated wherever it ran: the object holding the address (from
// dl_iterate_phdr, which static binaries have too) and the function symbol covering it in
// that file's ELF .symtab (.dynsym when stripped), demangled.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace auditor {
namespace rt {

struct Frame {
   std::uintptr_t address = 0;  // a return address as recorded
   std::string object;          // the file holding it ("" when no loaded object does)
   std::uintptr_t offset = 0;   // address - the object's load bias (an addr2line address)
   std::string function;        // demangled; "" when no symbol covers it
   std::string symbol_table;    // ".symtab", ".dynsym" or ""
};

// One Frame per address; the call address (return address - 1) is what gets looked up.
std::vector<Frame> symbolize(const std::vector<std::uintptr_t> &addresses);

}  // namespace rt
}  // namespace auditor
