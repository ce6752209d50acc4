// Socket settings both ends of a manager connection use.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace multiproc::detail {

// A TCP peer whose host vanished sends no FIN: keepalive probes turn that silence into an error
// within about 16 s, so a proxy call fails (or a server releases the dead client's locks)
// instead of waiting forever. Unix sockets need nothing: the kernel closes them with the process.
inline void keep_alive_if_tcp(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return;
  if (addr.ss_family != AF_INET && addr.ss_family != AF_INET6) return;
  int on = 1, idle_s = 10, interval_s = 2, probes = 3;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof interval_s);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

} // namespace multiproc::detail
