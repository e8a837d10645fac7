#include "rt_symbols.h"

#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>

namespace auditor {
namespace rt {
namespace {

struct Object {
   std::string path;
   std::uintptr_t bias = 0;
   std::vector<std::pair<std::uintptr_t, std::uintptr_t>> ranges;  // loaded [begin, end), biased
};

std::vector<Object> loaded_objects()
{
   std::vector<Object> out;
   dl_iterate_phdr([](struct dl_phdr_info *info, std::size_t, void *arg) {
      Object o;
      o.path = info->dlpi_name ? info->dlpi_name : "";
      o.bias = info->dlpi_addr;
      for (int i = 0; i < info->dlpi_phnum; ++i) {
         const auto &ph = info->dlpi_phdr[i];
         if (ph.p_type == PT_LOAD)
            o.ranges.emplace_back(info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz);
      }
      static_cast<std::vector<Object> *>(arg)->push_back(std::move(o));
      return 0;
   }, &out);
   return out;
}

std::string exe_path()
{
   char buf[4096];
   const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
   return n > 0 ? std::string(buf, n) : "/proc/self/exe";
}

struct Symbol {
   std::uint64_t value, size;
   std::string name;
};

// The function symbols of one ELF file, sorted by address; which table they came from.
struct SymbolTable {
   std::vector<Symbol> symbols;
   std::string table;
};

bool read_at(int fd, void *buf, std::size_t n, std::uint64_t off)
{
   return pread(fd, buf, n, static_cast<off_t>(off)) == static_cast<ssize_t>(n);
}

template <class Ehdr, class Shdr, class Sym>
SymbolTable read_symbols(int fd, bool arm)
{
   SymbolTable out;
   Ehdr eh;
   if (!read_at(fd, &eh, sizeof eh, 0) || eh.e_shentsize != sizeof(Shdr))
      return out;
   std::vector<Shdr> sh(eh.e_shnum);
   if (sh.empty() || !read_at(fd, sh.data(), sh.size() * sizeof(Shdr), eh.e_shoff))
      return out;
   for (std::uint32_t want : {static_cast<std::uint32_t>(SHT_SYMTAB), static_cast<std::uint32_t>(SHT_DYNSYM)}) {
      for (const Shdr &s : sh) {
         if (s.sh_type != want || s.sh_link >= sh.size() || s.sh_entsize != sizeof(Sym))
            continue;
         std::vector<Sym> syms(s.sh_size / sizeof(Sym));
         const Shdr &strs = sh[s.sh_link];
         std::string names(strs.sh_size, '\0');
         if (!read_at(fd, syms.data(), syms.size() * sizeof(Sym), s.sh_offset) ||
             !read_at(fd, &names[0], names.size(), strs.sh_offset))
            continue;
         for (const Sym &y : syms) {
            const unsigned type = y.st_info & 0xf;
            if (type != STT_FUNC || y.st_shndx == SHN_UNDEF || y.st_name >= names.size())
               continue;
            std::uint64_t value = y.st_value;
            if (arm)
               value &= ~static_cast<std::uint64_t>(1);  // the Thumb bit
            out.symbols.push_back({value, y.st_size, names.c_str() + y.st_name});
         }
         if (!out.symbols.empty()) {
            out.table = want == SHT_SYMTAB ? ".symtab" : ".dynsym";
            std::sort(out.symbols.begin(), out.symbols.end(),
                      [](const Symbol &a, const Symbol &b) { return a.value < b.value; });
            return out;
         }
      }
   }
   return out;
}

SymbolTable load_symbols(const std::string &path)
{
   const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
   if (fd < 0)
      return {};
   unsigned char ident[EI_NIDENT] = {};
   SymbolTable out;
   if (read_at(fd, ident, sizeof ident, 0) && std::memcmp(ident, ELFMAG, SELFMAG) == 0) {
      std::uint16_t machine = 0;
      read_at(fd, &machine, sizeof machine, 18);  // e_machine, the same offset in both classes
      if (ident[EI_CLASS] == ELFCLASS64)
         out = read_symbols<Elf64_Ehdr, Elf64_Shdr, Elf64_Sym>(fd, false);
      else if (ident[EI_CLASS] == ELFCLASS32)
         out = read_symbols<Elf32_Ehdr, Elf32_Shdr, Elf32_Sym>(fd, machine == EM_ARM);
   }
   close(fd);
   return out;
}

std::string demangle(const std::string &name)
{
   int status = 0;
   std::unique_ptr<char, void (*)(void *)> d(abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status),
                                             std::free);
   return status == 0 && d ? std::string(d.get()) : name;
}

}  // namespace

std::vector<Frame> symbolize(const std::vector<std::uintptr_t> &addresses)
{
   const std::vector<Object> objects = loaded_objects();
   std::map<std::string, SymbolTable> tables;
   std::vector<Frame> out;
   for (std::uintptr_t a : addresses) {
      Frame f;
      f.address = a;
      const std::uintptr_t call = a - 1;
      for (const Object &o : objects) {
         const bool inside = std::any_of(o.ranges.begin(), o.ranges.end(),
                                         [&](const auto &r) { return call >= r.first && call < r.second; });
         if (!inside)
            continue;
         f.object = o.path.empty() ? exe_path() : o.path;
         f.offset = a - o.bias;
         auto it = tables.find(f.object);
         if (it == tables.end())
            it = tables.emplace(f.object, load_symbols(o.path.empty() ? "/proc/self/exe" : o.path)).first;
         const auto &syms = it->second.symbols;
         const std::uint64_t vma = call - o.bias;
         auto s = std::upper_bound(syms.begin(), syms.end(), vma,
                                   [](std::uint64_t v, const Symbol &y) { return v < y.value; });
         if (s != syms.begin()) {
            --s;
            if (s->size == 0 || vma < s->value + s->size) {
               f.function = demangle(s->name);
               f.symbol_table = it->second.table;
            }
         }
         break;
      }
      out.push_back(std::move(f));
   }
   return out;
}

}  // namespace rt
}  // namespace auditor
