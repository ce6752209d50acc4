// Fork safety for AddressSanitizer builds (MULTIPROC_SANITIZERS=ON); compiles to nothing otherwise.
//
// GCC 12's libasan (LLVM 14's compiler-rt) takes no lock around fork(): a child forked while
// another thread of its parent holds one of the allocator's size-class locks, or the thread
// registry lock, starts with that lock held by a thread that does not exist there, and hangs at
// its first allocation that needs it (google/sanitizers#774; compiler-rt fixed it in LLVM 17 with
// __asan::InstallAtForkHandler). The library forks from threaded processes all the time (a Pool
// forks replacements from a CAF thread while its result thread allocates; a child's first Queue
// put starts a feeder thread whose start-up allocates), so sanitized test runs hung now and then
// with the child stuck in SizeClassAllocator64::GetFromAllocator.
//
// This does what LLVM 17 does, for the locks whose lock and unlock functions GCC 12's libasan
// has: take the thread registry and the allocator before fork, release them after it on both
// sides. Those functions are internal (hidden), so their addresses come from libasan's own
// symbol table. Without them (a stripped libasan) nothing is installed and forks stay as they were.
#if defined(__SANITIZE_ADDRESS__)

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sanitizer/asan_interface.h>

#include <cstring>
#include <string_view>

namespace {

using internal_fn = void (*)();

struct asan_fork_locks {
  internal_fn lock_thread_registry = nullptr;
  internal_fn unlock_thread_registry = nullptr;
  internal_fn lock_allocator = nullptr;
  internal_fn unlock_allocator = nullptr;

  bool complete() const {
    return lock_thread_registry && unlock_thread_registry && lock_allocator && unlock_allocator;
  }
  void assign(std::string_view name, internal_fn fn) {
    if (name == "_ZN6__lsan18LockThreadRegistryEv") lock_thread_registry = fn;
    if (name == "_ZN6__lsan20UnlockThreadRegistryEv") unlock_thread_registry = fn;
    if (name == "_ZN6__lsan13LockAllocatorEv") lock_allocator = fn;
    if (name == "_ZN6__lsan15UnlockAllocatorEv") unlock_allocator = fn;
  }
};

asan_fork_locks locks;

// Reads the lock functions out of the .symtab of the ELF file `image` (size bytes) loaded with
// bias `load_bias`.
void read_symbols(const char* image, std::size_t size, ElfW(Addr) load_bias) {
  const auto* header = reinterpret_cast<const ElfW(Ehdr)*>(image);
  if (size < sizeof *header || std::memcmp(header->e_ident, ELFMAG, SELFMAG) != 0) return;
  if (header->e_shoff + std::size_t{header->e_shnum} * sizeof(ElfW(Shdr)) > size) return;
  const auto* sections = reinterpret_cast<const ElfW(Shdr)*>(image + header->e_shoff);
  for (std::size_t i = 0; i < header->e_shnum; ++i) {
    const auto& symtab = sections[i];
    if (symtab.sh_type != SHT_SYMTAB || symtab.sh_link >= header->e_shnum) continue;
    const auto& strtab = sections[symtab.sh_link];
    if (symtab.sh_offset + symtab.sh_size > size || strtab.sh_offset + strtab.sh_size > size) return;
    const auto* symbols = reinterpret_cast<const ElfW(Sym)*>(image + symtab.sh_offset);
    for (std::size_t s = 0; s < symtab.sh_size / sizeof(ElfW(Sym)); ++s) {
      if (ELF64_ST_TYPE(symbols[s].st_info) != STT_FUNC || symbols[s].st_name >= strtab.sh_size) continue;
      std::string_view name(image + strtab.sh_offset + symbols[s].st_name);
      locks.assign(name, reinterpret_cast<internal_fn>(load_bias + symbols[s].st_value));
    }
  }
}

void find_locks() {
  Dl_info info;
  link_map* map = nullptr;
  if (::dladdr1(reinterpret_cast<void*>(&__asan_address_is_poisoned), &info, reinterpret_cast<void**>(&map),
                RTLD_DL_LINKMAP) == 0 || map == nullptr || info.dli_fname == nullptr)
    return;
  int fd = ::open(info.dli_fname, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st{};
  void* image = ::fstat(fd, &st) == 0 ? ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0)
                                      : MAP_FAILED;
  ::close(fd);
  if (image == MAP_FAILED) return;
  read_symbols(static_cast<const char*>(image), static_cast<std::size_t>(st.st_size), map->l_addr);
  ::munmap(image, static_cast<std::size_t>(st.st_size));
}

// Registered first (a library constructor), so the prepare handler runs last and the others,
// which may allocate, run before the allocator is locked; the release handlers run first.
void before_fork() {
  locks.lock_thread_registry();
  locks.lock_allocator();
}

void after_fork() {
  locks.unlock_allocator();
  locks.unlock_thread_registry();
}

__attribute__((constructor)) void install_asan_fork_locks() {
  find_locks();
  if (locks.complete()) ::pthread_atfork(before_fork, after_fork, after_fork);
}

}  // namespace

#endif
