// The manager server's sessions: connections served on the actor runtime (no thread each), the
// handshake under one deadline that holds up no other client, an accept that never waits, and a
// JoinableQueue whose consumer's session ends while it holds items.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <thread>

#include "ipc_test_support.hpp"
#include "multiproc/detail/manager_client.hpp"

using namespace multiproc_test;
using namespace std::chrono_literals;

namespace {

std::size_t thread_count(pid_t pid) {
  std::filesystem::directory_iterator tasks("/proc/" + std::to_string(pid) + "/task");
  return static_cast<std::size_t>(std::distance(tasks, std::filesystem::directory_iterator{}));
}

// A blocking Unix socket connected to path, that has said nothing yet.
int raw_client(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

// True once the peer closed fd (what it sent before is skipped), false if it did not by timeout.
bool closed_by_peer(int fd, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left < 0ms) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[512];
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
  }
}

// The handshake timeout for managers started while it lives (their servers inherit it).
class HandshakeTimeout {
public:
  explicit HandshakeTimeout(std::chrono::milliseconds t) : saved_(mp::detail::handshake_timeout()) {
    mp::detail::set_handshake_timeout(t);
  }
  ~HandshakeTimeout() { mp::detail::set_handshake_timeout(saved_); }

private:
  std::chrono::milliseconds saved_;
};

// A duplicate of process pid's listening socket (pidfd_getfd: the server is our child); -1 if
// the kernel does not let us have it.
int steal_listener(pid_t pid) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return -1;
  int found = -1;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    int target = std::stoi(entry.path().filename());
    int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, target, 0));
    if (fd < 0) continue;
    int listening = 0;
    socklen_t len = sizeof listening;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 && listening) {
      found = fd;
      break;
    }
    ::close(fd);
  }
  ::close(pidfd);
  return found;
}

bool process_ends(pid_t pid, std::chrono::milliseconds timeout) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return errno == ESRCH;
  pollfd p{pidfd, POLLIN, 0};
  bool ended = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
  ::close(pidfd);
  return ended;
}

void set_in_dict(mp::DictProxy<int, int> d, int key, int value) { d.set(key, value); }

// Calls back to back, as fast as the server answers, until told to stop.
void hammer(mp::DictProxy<int, int> d, mp::EventProxy started, mp::EventProxy stop) {
  started.set();
  for (int i = 0; !stop.is_set(); ++i) d.set(0, i);
}

void take_and_hold(mp::JoinableQueueProxy<int> q, int n, mp::EventProxy holding) {
  for (int i = 0; i < n; ++i) q.get();
  holding.set();
  for (;;) ::pause();
}

} // namespace

TEST_CASE("manager sessions: 1,000 idle connections add no server thread and a proxy call still answers",
          "[manager_sessions]") {
  auto before = child_pids();
  mp::Manager manager;
  pid_t server = new_child(before);
  auto d = manager.dict<int, int>();
  d.set(1, 1);
  auto threads_before = thread_count(server);

  std::vector<mp::connection::Client> idle;
  idle.reserve(1000);
  for (int i = 0; i < 1000; ++i) idle.emplace_back(manager.address(), manager.authkey());
  CHECK(d.get(1) == 1);

  auto threads_after = thread_count(server);
  CHECK(threads_after == threads_before);
  CHECK(threads_after <= 10);
  mp::Process other(set_in_dict, d, 2, 2);  // another client, a connection of its own
  other.start();
  join_or_kill(other);
  CHECK(other.exitcode() == 0);
  CHECK(d.get(2) == 2);
  idle.clear();
  CHECK(d.get(2) == 2);
}

TEST_CASE("manager sessions: a client calling back to back does not starve another client's calls",
          "[manager_sessions]") {
  mp::Manager manager;
  auto d = manager.dict<int, int>();
  auto started = manager.Event(), stop = manager.Event();
  mp::Process busy(hammer, d, started, stop);
  busy.start();
  REQUIRE(started.wait(patience));
  // Each call of ours waits behind at most one turn of the busy client's (a few spins).
  auto begin = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) d.set(1, i);
  auto took = std::chrono::steady_clock::now() - begin;
  stop.set();
  join_or_kill(busy);
  CHECK(busy.exitcode() == 0);
  CHECK(d.get(1) == 199);
  CHECK(d.get(0) > 0);
  CHECK(took < 10s);
}

TEST_CASE("manager sessions: a slowloris client that sends nothing does not delay another client's call",
          "[manager_sessions]") {
  HandshakeTimeout timeout(3s);
  mp::Manager manager;
  int silent = raw_client(manager.address());
  auto d = manager.dict<int, int>();  // a new connection, handshake and all
  d.set(1, 1);
  CHECK(d.get(1) == 1);
  // Answered while the silent client still holds its handshake open: nobody waited for it.
  CHECK_FALSE(closed_by_peer(silent, 0ms));
  CHECK(closed_by_peer(silent, std::chrono::duration_cast<std::chrono::milliseconds>(patience)));
  ::close(silent);
}

TEST_CASE("manager sessions: the server's handshake ends at one deadline for both of its halves",
          "[manager_sessions]") {
  constexpr auto limit = 2s;
  HandshakeTimeout timeout(limit);
  mp::Manager manager;
  auto start = std::chrono::steady_clock::now();
  mp::Connection client(raw_client(manager.address()));
  // The server's first half (its challenge, our response, its welcome) done late, then nothing:
  // with a deadline per half the server would wait a whole timeout more.
  std::this_thread::sleep_for(limit * 7 / 10);
  mp::connection::answer_challenge(client, manager.authkey());
  REQUIRE(closed_by_peer(client.fileno(), std::chrono::duration_cast<std::chrono::milliseconds>(patience)));
  auto took = std::chrono::steady_clock::now() - start;
  CHECK(took < limit * 3 / 2);
  CHECK(manager.dict<int, int>().size() == 0);  // and the server serves on
}

TEST_CASE("manager sessions: a client that vanishes between the server's poll and accept does not block its loop",
          "[manager_sessions]") {
  auto before = child_pids();
  mp::Manager manager;
  pid_t server = new_child(before);
  mp::connection::Client session(manager.address(), manager.authkey());
  int listener = steal_listener(server);
  if (listener < 0) {
    WARN("pidfd_getfd refused: the race cannot be staged here");
    return;
  }
  // Each client wakes the server's poll, and we take it from the backlog first (the server has
  // to wake up; we are already running): its accept finds nothing.
  for (int i = 0; i < 20; ++i) {
    int fd = raw_client(manager.address());
    int taken = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (taken >= 0) ::close(taken);
    ::close(fd);
  }
  ::close(listener);
  // A shutdown over a connection made before: a loop stuck in accept never sees it.
  auto request = mp::detail::encode_manager_request(mp::detail::server_object_id, "shutdown");
  session.send_bytes(std::string_view(request).substr(mp::detail::frame_reserve));
  CHECK(process_ends(server, 10s));
  manager.shutdown();
}

TEST_CASE("manager sessions: JoinableQueueProxy::join raises ProcessError naming a consumer killed holding items",
          "[manager_sessions]") {
  mp::Manager manager;
  auto q = manager.JoinableQueue<int>();
  for (int i = 0; i < 3; ++i) q.put(i);
  auto holding = manager.Event();
  mp::Process consumer(take_and_hold, q, 2, holding);
  consumer.start();
  REQUIRE(holding.wait(patience));
  std::string waiting_join;
  std::thread joiner([&] {
    try {
      q.join();
      waiting_join = "returned";
    } catch (const mp::ProcessError& e) {
      waiting_join = e.what();
    }
  });
  consumer.kill();
  join_or_kill(consumer);
  joiner.join();
  auto pid = std::to_string(*consumer.pid());
  CHECK_THAT(waiting_join, Catch::Matchers::Contains("consumer process " + pid + " died holding 2 item(s)"));
  // Written off and reported once: the item left is got and done, and join() returns.
  CHECK(q.get(patience) == 2);
  q.task_done();
  CHECK(q.join(0s));
}

TEST_CASE("manager sessions: a consumer killed holding items makes the next join raise when none was waiting",
          "[manager_sessions]") {
  mp::Manager manager;
  auto q = manager.JoinableQueue<int>();
  q.put(1);
  auto holding = manager.Event();
  mp::Process consumer(take_and_hold, q, 1, holding);
  consumer.start();
  REQUIRE(holding.wait(patience));
  consumer.kill();
  join_or_kill(consumer);
  auto pid = std::to_string(*consumer.pid());
  // The server learns of the death when the connection closes: the raise comes by patience.
  std::string message;
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (message.empty() && std::chrono::steady_clock::now() < deadline) {
    try {
      q.join(10ms);
    } catch (const mp::ProcessError& e) {
      message = e.what();
    }
  }
  CHECK_THAT(message, Catch::Matchers::Contains("consumer process " + pid + " died holding 1 item(s)"));
  CHECK(q.join(0s));
}
