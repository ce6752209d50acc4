// Listener, Client and CPython's authentication handshake (multiprocessing.connection).
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "crypto.hpp"
#include "log.hpp"
#include "multiproc/connection.hpp"
#include "multiproc/errors.hpp"

namespace multiproc {

namespace detail {
namespace {
std::atomic<long long> g_handshake_ms{10'000};
} // namespace

std::chrono::milliseconds handshake_timeout() noexcept {
  return std::chrono::milliseconds(g_handshake_ms.load(std::memory_order_relaxed));
}
void set_handshake_timeout(std::chrono::milliseconds t) noexcept {
  g_handshake_ms.store(t.count(), std::memory_order_relaxed);
}
} // namespace detail

namespace connection {

namespace {

[[noreturn]] void throw_os(const std::string& what, int err) {
  throw OSError(what + ": " + std::strerror(err), err);
}

// An fd closed on scope exit unless released.
class UniqueFd {
public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

private:
  int fd_;
};

// ---- addresses ----------------------------------------------------------------------------

struct HostPort {
  std::string host;  // without IPv6 brackets; "" = every interface
  std::string port;
};

// "host:port", "[v6]:port", or nullopt for a Unix socket path (see connection.hpp).
std::optional<HostPort> parse_host_port(std::string_view address) {
  if (address.empty() || address.front() == '\0' || address.find('/') != std::string_view::npos)
    return std::nullopt;
  auto colon = address.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == address.size()) return std::nullopt;
  auto port = address.substr(colon + 1);
  if (port.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  auto host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return HostPort{std::string(host), std::string(port)};
}

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = sizeof(sockaddr_storage);
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  sockaddr* get() { return reinterpret_cast<sockaddr*>(&storage); }
};

SockAddr unix_address(const std::string& path) {
  SockAddr a;
  auto* un = reinterpret_cast<sockaddr_un*>(&a.storage);
  if (path.size() >= sizeof un->sun_path)
    throw ValueError("Unix socket path too long (" + std::to_string(path.size()) + " bytes): " + path);
  un->sun_family = AF_UNIX;
  std::memcpy(un->sun_path, path.data(), path.size());
  // An abstract name is exactly its bytes; a path is NUL-terminated.
  a.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + (path[0] == '\0' ? 0 : 1));
  return a;
}

// Python's view of a socket address: "ip:port", "[ip6]:port", or the Unix path.
std::string format_address(const SockAddr& a) {
  if (a.storage.ss_family == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&a.storage);
    auto n = a.len > offsetof(sockaddr_un, sun_path) ? a.len - offsetof(sockaddr_un, sun_path) : 0;
    std::string path(un->sun_path, n);
    if (!path.empty() && path[0] != '\0') path.resize(std::strlen(path.c_str()));
    return path;
  }
  char host[NI_MAXHOST], port[NI_MAXSERV];
  int rc = ::getnameinfo(a.get(), a.len, host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
  if (rc != 0) throw OSError(std::string("getnameinfo failed: ") + ::gai_strerror(rc), 0);
  if (a.storage.ss_family == AF_INET6) return "[" + std::string(host) + "]:" + port;
  return std::string(host) + ":" + port;
}

using AddrInfoPtr = std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>;

AddrInfoPtr resolve(const HostPort& hp, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(hp.host.empty() ? nullptr : hp.host.c_str(), hp.port.c_str(), &hints, &res);
  if (rc != 0) throw OSError("cannot resolve " + hp.host + ":" + hp.port + ": " + ::gai_strerror(rc), 0);
  return AddrInfoPtr(res, &::freeaddrinfo);
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Tries every resolved address with `use` (bind+listen or connect); the first that works wins.
template <class Use>
int open_tcp(const std::string& address, const HostPort& hp, bool passive, Use use) {
  int last_err = 0;
  auto infos = resolve(hp, passive);
  for (auto* ai = infos.get(); ai; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.get() < 0) {
      last_err = errno;
      continue;
    }
    if (use(fd.get(), ai->ai_addr, ai->ai_addrlen)) return fd.release();
    last_err = errno;
  }
  throw_os((passive ? "cannot listen on " : "cannot connect to ") + address, last_err);
}

// connect() that survives EINTR: the connection then completes in the background.
bool connect_fd(int fd, const sockaddr* sa, socklen_t len) {
  if (::connect(fd, sa, len) == 0) return true;
  if (errno != EINTR) return false;
  pollfd p{fd, POLLOUT, 0};
  while (::poll(&p, 1, -1) < 0)
    if (errno != EINTR) return false;
  int err = 0;
  socklen_t n = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &n);
  errno = err;
  return err == 0;
}

int connect_to(const std::string& address) {
  if (auto hp = parse_host_port(address)) {
    int fd = open_tcp(address, *hp, false, connect_fd);
    set_nodelay(fd);
    return fd;
  }
  auto sa = unix_address(address);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw_os("socket failed", errno);
  if (!connect_fd(fd.get(), sa.get(), sa.len)) throw_os("cannot connect to " + address, errno);
  return fd.release();
}

// ---- the handshake ------------------------------------------------------------------------

constexpr std::string_view challenge_tag = "#CHALLENGE#";
constexpr std::string_view welcome = "#WELCOME#";
constexpr std::string_view failure = "#FAILURE#";
constexpr std::size_t message_length = 40;       // random bytes of a modern challenge
constexpr std::size_t md5only_message_length = 20;  // a <= 3.11 challenge
constexpr std::size_t md5_digest_length = 16;       // a <= 3.11 response
constexpr std::size_t max_digest_name = 8;          // "sha3_256"
constexpr std::size_t max_handshake_message = 256;  // CPython's recv_bytes(256)

const EVP_MD* digest_by_name(std::string_view name) {
  const auto& c = detail::crypto();
  if (name == "md5") return c.md5();
  if (name == "sha256") return c.sha256();
  if (name == "sha384") return c.sha384();
  if (name == "sha3_256") return c.sha3_256();
  if (name == "sha3_384") return c.sha3_384();
  return nullptr;
}

// HMAC-<digest>(key, message); nullopt when the digest is not allowed or not available
// (MD5 under FIPS), as hmac.new raises ValueError in CPython.
std::optional<std::string> hmac(std::string_view digest, std::string_view key, std::string_view message) {
  const EVP_MD* md = digest_by_name(digest);
  if (!md) return std::nullopt;
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  static const char no_key = 0;  // OpenSSL reads a null key as "reuse the previous one"
  if (!detail::crypto().hmac(md, key.empty() ? &no_key : key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &len))
    return std::nullopt;
  return std::string(reinterpret_cast<const char*>(out), len);
}

struct DigestAndPayload {
  std::string_view digest;  // "" = legacy: raw HMAC-MD5, no prefix
  std::string_view payload;
};

// CPython's _get_digest_name_and_payload.
DigestAndPayload digest_name_and_payload(std::string_view message) {
  if (message.size() == md5only_message_length || message.size() == md5_digest_length) return {"", message};
  if (!message.empty() && message.front() == '{') {
    auto curly = message.substr(0, max_digest_name + 2).find('}', 1);
    if (curly != std::string_view::npos) {
      auto digest = message.substr(1, curly - 1);
      if (digest_by_name(digest)) return {digest, message.substr(curly + 1)};
    }
  }
  throw AuthenticationError("unsupported message length, missing digest prefix, or unsupported digest (" +
                            std::to_string(message.size()) + " bytes)");
}

// CPython's _create_response: the MAC covers the whole message, {digest} prefix included.
std::string create_response(std::string_view authkey, std::string_view message) {
  std::string digest(digest_name_and_payload(message).digest);
  if (digest.empty()) {
    if (auto mac = hmac("md5", authkey, message)) return *mac;
    digest = "sha256";  // no MD5 here (FIPS): the modern form, which a legacy peer will refuse
  }
  auto mac = hmac(digest, authkey, message);
  if (!mac) throw AuthenticationError("HMAC-" + digest + " is not available");
  return "{" + digest + "}" + *mac;
}

// CPython's _verify_challenge: a legacy 16-byte response is a raw HMAC-MD5.
void verify_challenge(std::string_view authkey, std::string_view message, std::string_view response) {
  auto [digest, mac] = digest_name_and_payload(response);
  std::string name(digest.empty() ? "md5" : digest);
  auto expected = hmac(name, authkey, message);
  if (!expected) throw AuthenticationError("response digest " + name + " is not supported");
  if (expected->size() != mac.size())
    throw AuthenticationError("expected " + name + " of length " + std::to_string(expected->size()) + " got " +
                              std::to_string(mac.size()));
  if (detail::crypto().memcmp(expected->data(), mac.data(), mac.size()) != 0)
    throw AuthenticationError("digest received was wrong");
}

// Bounds every read and write of the handshake by socket timeouts, so a peer that stops in the
// middle of a frame cannot block us; restores the previous (normally: none) on scope exit.
class SocketTimeouts {
public:
  SocketTimeouts(int fd, std::chrono::milliseconds t) : fd_(fd) {
    socklen_t n = sizeof old_rcv_;
    ::getsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &old_rcv_, &n);
    n = sizeof old_snd_;
    ::getsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &old_snd_, &n);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(t).count();
    timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
    if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;  // zero would mean "no timeout"
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  SocketTimeouts(const SocketTimeouts&) = delete;
  SocketTimeouts& operator=(const SocketTimeouts&) = delete;
  ~SocketTimeouts() {
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &old_rcv_, sizeof old_rcv_);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &old_snd_, sizeof old_snd_);
  }

private:
  int fd_;
  timeval old_rcv_{}, old_snd_{};
};

// One side of a handshake on conn: a deadline and the bounded, failure-mapping I/O. Any I/O
// failure (EOF, timeout, reset, a frame over 256 bytes) means the peer failed to authenticate.
class Handshake {
public:
  explicit Handshake(Connection& conn)
      : conn_(conn),
        timeouts_(conn.fileno(), detail::handshake_timeout()),
        deadline_(detail::deadline_after(detail::handshake_timeout())) {}

  std::string recv() {
    if (!conn_.poll_until(deadline_))
      throw AuthenticationError("authentication timed out: the peer sent nothing for " +
                                std::to_string(detail::handshake_timeout().count()) + " ms");
    try {
      return conn_.recv_bytes(max_handshake_message);
    } catch (const Error& e) {
      throw AuthenticationError(std::string("authentication failed: ") + e.what());
    }
  }
  void send(std::string_view message) {
    try {
      conn_.send_bytes(message);
    } catch (const Error& e) {
      throw AuthenticationError(std::string("authentication failed: ") + e.what());
    }
  }

private:
  Connection& conn_;
  SocketTimeouts timeouts_;
  detail::Deadline deadline_;
};

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (detail::crypto().rand_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw Error("RAND_bytes failed: no randomness for the authentication challenge");
  return out;
}

} // namespace

void deliver_challenge(Connection& conn, std::string_view authkey) {
  Handshake hs(conn);
  std::string message = "{sha256}" + random_bytes(message_length);
  // A legacy (<= 3.11) peer takes all of it as the challenge and answers with a raw HMAC-MD5.
  hs.send(std::string(challenge_tag) + message);
  auto response = hs.recv();
  try {
    verify_challenge(authkey, message, response);
  } catch (const AuthenticationError& e) {
    detail::log(LogLevel::warning, "authentication failed: {}", e.what());
    try {
      hs.send(failure);
    } catch (const AuthenticationError&) {
      // The peer is already gone; the verdict stands either way.
    }
    throw;
  }
  hs.send(welcome);
}

void answer_challenge(Connection& conn, std::string_view authkey) {
  Handshake hs(conn);
  auto message = hs.recv();
  if (!message.starts_with(challenge_tag))
    throw AuthenticationError("protocol error: expected a challenge, got " + std::to_string(message.size()) +
                              " other bytes");
  message.erase(0, challenge_tag.size());
  if (message.size() < md5only_message_length)
    throw AuthenticationError("challenge too short: " + std::to_string(message.size()) + " bytes");
  hs.send(create_response(authkey, message));
  if (hs.recv() != welcome) throw AuthenticationError("digest sent was rejected");
}

// ---- Listener -----------------------------------------------------------------------------

struct Listener::Impl {
  int fd = -1;
  bool tcp = false;
  std::string address;
  std::string last_accepted;
  std::optional<std::string> authkey;
  std::string unlink_path;  // the socket file we created, removed at close
  std::string temp_dir;     // our private directory for address "", removed at close
  pid_t owner = ::getpid(); // only the creating process removes files (as Python's Finalize)

  void listen_unix(int backlog) {
    auto sa = unix_address(address);
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw_os("socket failed", errno);
    if (::bind(fd, sa.get(), sa.len) != 0) throw_os("cannot bind " + address, errno);
    if (address[0] != '\0') unlink_path = address;
    if (::listen(fd, backlog) != 0) throw_os("cannot listen on " + address, errno);
  }

  void listen_tcp(const HostPort& hp, int backlog) {
    tcp = true;
    fd = open_tcp(address, hp, true, [backlog](int s, const sockaddr* sa, socklen_t len) {
      int one = 1;
      ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      return ::bind(s, sa, len) == 0 && ::listen(s, backlog) == 0;
    });
    SockAddr bound;
    if (::getsockname(fd, bound.get(), &bound.len) != 0) throw_os("getsockname failed", errno);
    address = format_address(bound);
  }

  void make_private_address() {
    std::error_code ec;
    auto base = std::filesystem::temp_directory_path(ec);
    std::string templ = (ec ? std::filesystem::path("/tmp") : base) / "multiproc-XXXXXX";
    if (!::mkdtemp(templ.data())) throw_os("cannot create a private directory for a Listener", errno);
    temp_dir = templ;  // mkdtemp makes it 0700
    address = temp_dir + "/listener.sock";
  }

  // Also what a constructor that fails halfway relies on to undo its steps.
  void close() {
    if (fd >= 0) ::close(std::exchange(fd, -1));
    if (::getpid() != owner) return;
    if (!unlink_path.empty()) ::unlink(std::exchange(unlink_path, {}).c_str());
    if (!temp_dir.empty()) ::rmdir(std::exchange(temp_dir, {}).c_str());
  }

  ~Impl() { close(); }
};

Listener::Listener(std::string address, std::optional<std::string> authkey, int backlog)
    : impl_(std::make_unique<Impl>()) {
  impl_->authkey = std::move(authkey);
  impl_->address = std::move(address);
  if (impl_->address.empty()) impl_->make_private_address();
  // On failure impl_'s destructor closes the socket and removes what was created.
  if (auto hp = parse_host_port(impl_->address))
    impl_->listen_tcp(*hp, backlog);
  else
    impl_->listen_unix(backlog);
}

Listener::~Listener() = default;
Listener::Listener(Listener&&) noexcept = default;
Listener& Listener::operator=(Listener&&) noexcept = default;

Connection Listener::accept() {
  if (!impl_ || impl_->fd < 0) throw ValueError("listener is closed");
  SockAddr peer;
  int fd;
  for (;;) {
    peer.len = sizeof peer.storage;
    fd = ::accept4(impl_->fd, peer.get(), &peer.len, SOCK_CLOEXEC);
    if (fd >= 0) break;
    // A client that gave up before we got to it is not the listener's failure.
    if (errno != EINTR && errno != ECONNABORTED) throw_os("accept failed", errno);
  }
  Connection conn(fd);
  if (impl_->tcp) set_nodelay(fd);
  impl_->last_accepted = format_address(peer);
  if (impl_->authkey) {
    deliver_challenge(conn, *impl_->authkey);
    answer_challenge(conn, *impl_->authkey);
  }
  return conn;
}

void Listener::close() {
  if (impl_) impl_->close();
}

const std::string& Listener::address() const {
  if (!impl_) throw ValueError("listener was moved from");
  return impl_->address;
}

const std::string& Listener::last_accepted() const {
  if (!impl_) throw ValueError("listener was moved from");
  return impl_->last_accepted;
}

int Listener::fileno() const {
  if (!impl_ || impl_->fd < 0) throw ValueError("listener is closed");
  return impl_->fd;
}

// ---- Client -------------------------------------------------------------------------------

Client::Client(const std::string& address, std::optional<std::string> authkey) : Connection(connect_to(address)) {
  if (authkey) {
    answer_challenge(*this, *authkey);
    deliver_challenge(*this, *authkey);
  }
}

} // namespace connection
} // namespace multiproc
