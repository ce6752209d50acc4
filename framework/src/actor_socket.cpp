#include "actor_socket.hpp"

#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "multiproc/errors.hpp"

namespace multiproc::detail {

namespace {

constexpr std::size_t max_name = 80;

// The sockaddr for an '@'-prefixed address and its length (abstract names are not NUL-ended).
socklen_t fill_address(sockaddr_un& sa, const std::string& address) {
  sa = {};
  sa.sun_family = AF_UNIX;
  std::size_t n = std::min(address.size(), sizeof sa.sun_path);
  std::memcpy(sa.sun_path, address.data(), n);
  sa.sun_path[0] = '\0';
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n);
}

std::string user_prefix(const char* kind) {
  return std::string("@multiproc-") + kind + "-" + std::to_string(::getuid()) + "-";
}

} // namespace

std::string new_actor_address() {
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t nonce = 0;
  if (::getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) nonce = static_cast<std::uint64_t>(::getpid()) << 32;
  return user_prefix("actor") + std::to_string(::getpid()) + "-" + std::to_string(++counter) + "-" +
         std::to_string(nonce);
}

bool is_actor_address(std::string_view address) { return address.starts_with(user_prefix("actor")); }

std::string actor_name_address(std::string_view name) {
  if (name.size() > max_name)
    throw ValueError("an actor name has at most " + std::to_string(max_name) + " bytes; '" + std::string(name) +
                     "' has " + std::to_string(name.size()));
  if (name.find('\0') != std::string_view::npos) throw ValueError("an actor name cannot contain a NUL byte");
  return user_prefix("name") + std::string(name);
}

int listen_abstract(const std::string& address) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un sa;
  socklen_t len = fill_address(sa, address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

int take_actor_name(const std::string& name) {
  int fd = listen_abstract(actor_name_address(name));
  if (fd >= 0) return fd;
  if (errno == EADDRINUSE) throw ValueError("the actor name '" + name + "' is taken");
  throw OSError("cannot register the actor name '" + name + "': " + std::strerror(errno), errno);
}

int connect_abstract(const std::string& address) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un sa;
  socklen_t len = fill_address(sa, address);
  int r;
  do {
    r = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), len);
  } while (r != 0 && errno == EINTR);
  if (r != 0 || !peer_is_same_user(fd)) {
    int err = r != 0 ? errno : EACCES;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

bool peer_is_same_user(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  return cred.uid == ::getuid();
}

int accept_peer(int listen_fd) {
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0 || errno != EINTR) return fd;
  }
}

} // namespace multiproc::detail
