#include "function_id.hpp"

#include <elf.h>
#include <link.h>

#include <cstring>
#include <mutex>
#include <unordered_map>

#include "multiproc/errors.hpp"

namespace multiproc::detail {

namespace {

std::string to_hex(const unsigned char* bytes, std::size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 15];
  }
  return out;
}

// The GNU build-id note among the object's PT_NOTE segments, hex; "" when there is none.
std::string build_id_of(const dl_phdr_info& info) {
  for (int i = 0; i < info.dlpi_phnum; ++i) {
    const auto& ph = info.dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    auto* p = reinterpret_cast<const unsigned char*>(info.dlpi_addr + ph.p_vaddr);
    auto* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      auto* note = reinterpret_cast<const ElfW(Nhdr)*>(p);
      auto* name = p + sizeof(ElfW(Nhdr));
      auto* desc = name + ((note->n_namesz + 3) & ~3u);
      if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
        return to_hex(desc, note->n_descsz);
      p = desc + ((note->n_descsz + 3) & ~3u);
    }
  }
  return {};
}

bool holds(const dl_phdr_info& info, std::uintptr_t address) {
  for (int i = 0; i < info.dlpi_phnum; ++i) {
    const auto& ph = info.dlpi_phdr[i];
    auto start = info.dlpi_addr + ph.p_vaddr;
    if (ph.p_type == PT_LOAD && address >= start && address < start + ph.p_memsz) return true;
  }
  return false;
}

// Objects without a build-id are matched by path; the main program's is "" in both processes.
bool same_object(const dl_phdr_info& info, const FunctionId& id) {
  if (!id.build_id.empty()) return build_id_of(info) == id.build_id;
  return id.object == (info.dlpi_name ? info.dlpi_name : "");
}

template <class Visit>
void for_each_object(Visit visit) {
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* data) { return (*static_cast<Visit*>(data))(*info) ? 1 : 0; },
      &visit);
}

} // namespace

namespace {

// Identities found so far: a program starts children with the same few functions again and again,
// and each search walks every loaded object. (The library never unloads an object.)
std::mutex g_known_mutex;
std::unordered_map<const void*, FunctionId> g_known;

FunctionId search_function(const void* address) {
  auto where = reinterpret_cast<std::uintptr_t>(address);
  FunctionId id;
  bool found = false;
  for_each_object([&](const dl_phdr_info& info) {
    if (!holds(info, where)) return false;
    id = {build_id_of(info), info.dlpi_name ? info.dlpi_name : "", where - info.dlpi_addr};
    found = true;
    return true;
  });
  if (!found) throw Error("no loaded ELF object holds the function at this address: it cannot cross into a child");
  return id;
}

} // namespace

FunctionId identify_function(const void* address) {
  if (address == nullptr) return {};
  {
    std::lock_guard lock(g_known_mutex);
    if (auto it = g_known.find(address); it != g_known.end()) return it->second;
  }
  auto id = search_function(address);
  std::lock_guard lock(g_known_mutex);
  g_known.emplace(address, id);
  return id;
}

void* locate_function(const FunctionId& id) {
  if (id.build_id.empty() && id.object.empty() && id.offset == 0) return nullptr;
  void* address = nullptr;
  for_each_object([&](const dl_phdr_info& info) {
    if (!same_object(info, id)) return false;
    address = reinterpret_cast<void*>(info.dlpi_addr + id.offset);
    return true;
  });
  if (address == nullptr)
    throw Error("the function's ELF object (" + (id.object.empty() ? std::string("the main program") : id.object) +
                ", build-id " + (id.build_id.empty() ? std::string("none") : id.build_id) +
                ") is not loaded in this process");
  return address;
}

} // namespace multiproc::detail
