// Listener, Client and CPython's authentication handshake (multiprocessing.connection).
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "crypto.hpp"
#include "log.hpp"
#include "multiproc/connection.hpp"
#include "multiproc/errors.hpp"
#include "server_handshake.hpp"

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

[[noreturn]] void handshake_timed_out() {
  throw AuthenticationError("authentication timed out: the handshake took longer than " +
                            std::to_string(detail::handshake_timeout().count()) + " ms");
}

[[noreturn]] void handshake_io_failed(const char* what, int err) {
  throw AuthenticationError(std::string("authentication failed: ") + what + ": " + std::strerror(err));
}

// One handshake message, read as its bytes arrive: no read ever waits, so a peer that dribbles
// cannot hold the reader beyond its deadline (a blocking read would, one byte at a time), and no
// read goes past the message's end: what follows belongs to whoever reads the connection next.
// A hang-up, a read error or a message over 256 bytes is an AuthenticationError.
class MessageReader {
public:
  // Reads what has arrived on the socket fd; the message once it is whole.
  std::optional<std::string> read_some(int fd) {
    for (;;) {
      std::size_t have = bytes_.size();
      bytes_.resize(want_);
      ssize_t n = ::recv(fd, bytes_.data() + have, want_ - have, MSG_DONTWAIT);
      bytes_.resize(have + static_cast<std::size_t>(n > 0 ? n : 0));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
        if (errno != ECONNRESET) handshake_io_failed("read from connection failed", errno);
        n = 0;
      }
      if (n == 0) throw AuthenticationError("authentication failed: the other end of the connection closed");
      if (bytes_.size() < want_) continue;
      if (in_header_) take_header();
      if (!in_header_ && bytes_.size() == want_) return bytes_.substr(header_size);
    }
  }

private:
  static constexpr std::size_t header_size = 4;  // a longer header is for frames of 2 GiB or more

  void take_header() {
    std::optional<detail::FrameHeader> header;
    try {
      header = detail::parse_frame_header(bytes_);
    } catch (const Error& e) {
      throw AuthenticationError(std::string("authentication failed: ") + e.what());
    }
    if (!header || header->payload_size > detail::max_handshake_message)
      throw AuthenticationError("authentication failed: a handshake message longer than " +
                                std::to_string(detail::max_handshake_message) + " bytes");
    in_header_ = false;
    want_ = header_size + header->payload_size;
  }

  std::string bytes_;  // the header, then the payload behind it
  std::size_t want_ = header_size;
  bool in_header_ = true;
};

// Waits for and reads one handshake message on conn by the deadline.
std::string recv_message(Connection& conn, detail::Deadline deadline) {
  MessageReader reader;
  for (;;) {
    if (!conn.poll_until(deadline)) handshake_timed_out();
    if (auto message = reader.read_some(conn.fileno())) return std::move(*message);
  }
}

// Writes one handshake message on the socket fd by the deadline (a message of a few dozen bytes
// normally goes at once; a peer that reads nothing can fill the socket, though, and then this
// waits no longer than the handshake may).
void send_message(int fd, std::string_view message, detail::Deadline deadline) {
  std::string framed;
  detail::append_frame(framed, message);
  std::string_view rest = framed;
  while (!rest.empty()) {
    ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      rest.remove_prefix(static_cast<std::size_t>(n));
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pollfd p{fd, POLLOUT, 0};
      if (detail::poll_until(&p, 1, deadline) == 0) handshake_timed_out();
    } else if (errno != EINTR) {
      handshake_io_failed("write to connection failed", errno);
    }
  }
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (detail::crypto().rand_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw Error("RAND_bytes failed: no randomness for the authentication challenge");
  return out;
}

// ---- the steps of a handshake, shared by the blocking functions and ServerHandshakeSteps ----

// deliver_challenge, first half: a challenge, the message the response must sign.
std::string new_challenge() { return "{sha256}" + random_bytes(message_length); }

// The challenge as sent: a legacy (<= 3.11) peer takes all of it as the challenge and answers
// with a raw HMAC-MD5.
std::string challenge_message(std::string_view challenge) { return std::string(challenge_tag) + std::string(challenge); }

std::string send_challenge(int fd, detail::Deadline deadline) {
  std::string message = new_challenge();
  send_message(fd, challenge_message(message), deadline);
  return message;
}

// deliver_challenge, second half: the verdict on the response (#WELCOME# or #FAILURE#) and, for
// a failure, why.
struct Verdict {
  std::string_view message;
  std::optional<AuthenticationError> error;
};

Verdict judge(std::string_view authkey, std::string_view message, std::string_view response) {
  try {
    verify_challenge(authkey, message, response);
  } catch (const AuthenticationError& e) {
    detail::log(LogLevel::warning, "authentication failed: {}", e.what());
    return {failure, e};
  }
  return {welcome, std::nullopt};
}

void judge_response(int fd, std::string_view authkey, std::string_view message, std::string_view response,
                    detail::Deadline deadline) {
  auto verdict = judge(authkey, message, response);
  try {
    send_message(fd, verdict.message, deadline);
  } catch (const AuthenticationError&) {
    if (!verdict.error) throw;  // else the peer is already gone; the verdict stands either way
  }
  if (verdict.error) throw *verdict.error;
}

// answer_challenge, first half: the response to a challenge received.
std::string response_to(std::string_view authkey, std::string_view challenge) {
  if (!challenge.starts_with(challenge_tag))
    throw AuthenticationError("protocol error: expected a challenge, got " + std::to_string(challenge.size()) +
                              " other bytes");
  challenge.remove_prefix(challenge_tag.size());
  if (challenge.size() < md5only_message_length)
    throw AuthenticationError("challenge too short: " + std::to_string(challenge.size()) + " bytes");
  return create_response(authkey, challenge);
}

// answer_challenge, second half: the peer's verdict on our response.
void check_verdict(std::string_view verdict) {
  if (verdict != welcome) throw AuthenticationError("digest sent was rejected");
}

void deliver_challenge(Connection& conn, std::string_view authkey, detail::Deadline deadline) {
  auto message = send_challenge(conn.fileno(), deadline);
  judge_response(conn.fileno(), authkey, message, recv_message(conn, deadline), deadline);
}

void answer_challenge(Connection& conn, std::string_view authkey, detail::Deadline deadline) {
  send_message(conn.fileno(), response_to(authkey, recv_message(conn, deadline)), deadline);
  check_verdict(recv_message(conn, deadline));
}

// A listener's handshake with one client taken a step per message that arrives, so that accept()
// can run many at once: a client that is slow or hostile holds up no other. The whole handshake
// has one deadline.
class ServerHandshake {
public:
  ServerHandshake(Connection conn, std::string peer, std::string authkey)
      : conn_(std::move(conn)),
        peer_(std::move(peer)),
        deadline_(detail::deadline_after(detail::handshake_timeout())),
        steps_(std::move(authkey)) {
    send_message(conn_.fileno(), steps_.challenge(), deadline_);
  }

  int fileno() const { return conn_.fileno(); }
  const detail::Deadline& deadline() const { return deadline_; }
  Connection& connection() { return conn_; }
  const std::string& peer() const { return peer_; }

  // Takes what the client sent so far: true once it is authenticated both ways.
  // AuthenticationError when it failed, or ran out of time.
  bool advance() {
    while (auto message = reader_.read_some(fileno())) {
      reader_ = {};
      auto reply = steps_.take(*message);
      if (steps_.current() == detail::ServerHandshakeSteps::state::failed) {
        try {
          if (reply) send_message(fileno(), *reply, deadline_);
        } catch (const AuthenticationError&) {
          // The peer is already gone; the verdict stands either way.
        }
        throw AuthenticationError(steps_.error());
      }
      if (reply) send_message(fileno(), *reply, deadline_);
      if (steps_.current() == detail::ServerHandshakeSteps::state::authenticated) return true;
    }
    if (detail::Clock::now() >= *deadline_) handshake_timed_out();
    return false;
  }

private:
  Connection conn_;
  std::string peer_;
  detail::Deadline deadline_;
  detail::ServerHandshakeSteps steps_;
  MessageReader reader_;
};

} // namespace

} // namespace connection

namespace detail {

ServerHandshakeSteps::ServerHandshakeSteps(std::string authkey)
    : authkey_(std::move(authkey)),
      challenge_(connection::new_challenge()),
      challenge_message_(connection::challenge_message(challenge_)) {}

std::optional<std::string> ServerHandshakeSteps::take(std::string_view message) {
  if (state_ != state::under_way) return std::nullopt;
  try {
    return step_on(message);
  } catch (const AuthenticationError& e) {
    state_ = state::failed;
    error_ = e.what();
    return std::nullopt;
  }
}

std::optional<std::string> ServerHandshakeSteps::step_on(std::string_view message) {
  switch (next_) {
    case step::response: {
      auto verdict = connection::judge(authkey_, challenge_, message);
      if (verdict.error) {
        state_ = state::failed;
        error_ = verdict.error->what();
      }
      next_ = step::challenge;
      return std::string(verdict.message);
    }
    case step::challenge:
      next_ = step::verdict;
      return connection::response_to(authkey_, message);
    case step::verdict:
      connection::check_verdict(message);
      state_ = state::authenticated;
      return std::nullopt;
  }
  return std::nullopt;
}

} // namespace detail

namespace connection {

void deliver_challenge(Connection& conn, std::string_view authkey) {
  deliver_challenge(conn, authkey, detail::deadline_after(detail::handshake_timeout()));
}

void answer_challenge(Connection& conn, std::string_view authkey) {
  answer_challenge(conn, authkey, detail::deadline_after(detail::handshake_timeout()));
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
  std::vector<ServerHandshake> handshakes;  // clients accepted whose handshake is under way
  std::size_t max_handshakes = 1;           // the backlog: what a flood of clients may hold

  struct Accepted {
    Connection conn;
    std::string peer;
  };

  // The next client in the backlog without waiting for one (the socket is O_NONBLOCK, so that
  // a client that vanishes between poll and accept cannot block accept() and the handshakes it
  // serves); nullopt when there is none.
  std::optional<Accepted> try_accept() {
    for (;;) {
      SockAddr peer;
      int client = ::accept4(fd, peer.get(), &peer.len, SOCK_CLOEXEC);
      if (client >= 0) {
        Connection conn(client);
        if (tcp) set_nodelay(client);
        return Accepted{std::move(conn), format_address(peer)};
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
      // A client that gave up before we got to it is not the listener's failure.
      if (errno != EINTR && errno != ECONNABORTED) throw_os("accept failed", errno);
    }
  }

  // The next client; with an authkey, the next to pass the handshake. Handshakes run side by
  // side, each bounded by its own deadline, and the ones still under way when accept() returns
  // or throws go on at the next call.
  Connection accept() {
    for (;;) {
      // At most max_handshakes at once (poll ignores a negative fd): the rest wait in the backlog
      // rather than holding a descriptor each.
      std::vector<pollfd> fds{{handshakes.size() < max_handshakes ? fd : -1, POLLIN, 0}};
      detail::Deadline first;
      for (const auto& h : handshakes) {
        fds.push_back({h.fileno(), POLLIN, 0});
        if (!first || *h.deadline() < *first) first = h.deadline();
      }
      detail::poll_until(fds.data(), fds.size(), first);
      for (std::size_t i = 0; i < handshakes.size(); ++i) {
        if (fds[i + 1].revents == 0 && detail::Clock::now() < *handshakes[i].deadline()) continue;
        if (auto conn = advance(i)) return std::move(*conn);
      }
      if (fds[0].revents == 0) continue;
      auto client = try_accept();
      if (!client) continue;
      if (!authkey) {
        last_accepted = std::move(client->peer);
        return std::move(client->conn);
      }
      handshakes.emplace_back(std::move(client->conn), std::move(client->peer), *authkey);
    }
  }

  // Takes what client i sent: its connection once it passed the handshake. A client that is
  // through, passed or failed (AuthenticationError), leaves the pending handshakes.
  std::optional<Connection> advance(std::size_t i) {
    auto it = handshakes.begin() + static_cast<std::ptrdiff_t>(i);
    bool passed;
    try {
      passed = it->advance();
    } catch (...) {
      handshakes.erase(it);
      throw;
    }
    if (!passed) return std::nullopt;
    last_accepted = it->peer();
    Connection conn = it->connection();
    handshakes.erase(it);
    return conn;
  }

  void listen_unix(int backlog) {
    auto sa = unix_address(address);
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
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
      return ::bind(s, sa, len) == 0 && ::listen(s, backlog) == 0 && ::fcntl(s, F_SETFL, O_NONBLOCK) == 0;
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
    handshakes.clear();
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
  impl_->max_handshakes = static_cast<std::size_t>(std::max(backlog, 1));
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
  return impl_->accept();
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
    // One deadline for both halves: a server that dribbles cannot stretch the handshake.
    auto deadline = detail::deadline_after(detail::handshake_timeout());
    answer_challenge(*this, *authkey, deadline);
    deliver_challenge(*this, *authkey, deadline);
  }
}

} // namespace connection
} // namespace multiproc
