// Tests for <multiproc/connection.hpp>: Pipe/Connection, connection::wait, the wire's defences
// against garbage, Listener/Client with CPython's handshake, and interop with a real python3.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "multiproc/multiproc.hpp"
#include "signal_storm.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

namespace {

constexpr auto patience = 20s;  // bound on every wait for another process

struct Point {
  int x = 0;
  std::string label;
  MSGPACK_DEFINE(x, label);
  friend bool operator==(const Point&, const Point&) = default;
};

void join_or_kill(mp::Process& p) {
  if (!p.join(patience)) {
    p.kill();
    p.join();
    FAIL("child process " << p.name() << " did not finish in time");
  }
}

// Writes raw bytes on fd, bypassing the framing, as a broken or hostile peer would.
void write_raw(int fd, std::string_view bytes) {
  if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()))
    throw mp::OSError(std::string("raw write failed: ") + std::strerror(errno), errno);
}

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// Restores the process-wide frame ceiling / handshake timeout at scope exit.
struct FrameCeiling {
  std::size_t saved = mp::detail::max_frame_size();
  explicit FrameCeiling(std::size_t bytes) { mp::detail::set_max_frame_size(bytes); }
  ~FrameCeiling() { mp::detail::set_max_frame_size(saved); }
};
struct HandshakeTimeout {
  std::chrono::milliseconds saved = mp::detail::handshake_timeout();
  explicit HandshakeTimeout(std::chrono::milliseconds t) { mp::detail::set_handshake_timeout(t); }
  ~HandshakeTimeout() { mp::detail::set_handshake_timeout(saved); }
};

std::string unique_socket_path(const char* tag) {
  static int counter = 0;
  return (std::filesystem::temp_directory_path() /
          ("mp-conn-" + std::string(tag) + "-" + std::to_string(::getpid()) + "-" + std::to_string(++counter)))
      .string();
}

// ---- child bodies -------------------------------------------------------------------------

// Seed 000's calc: squares numbers until it receives None.
void calc(mp::Connection conn) {
  for (;;) {
    auto r = conn.recv();
    if (r.is_nil()) break;
    auto n = r.as<long>();
    conn.send(std::to_string(n) + "*" + std::to_string(n) + "=" + std::to_string(n * n));
  }
  conn.close();
}

// Seed 000's client: sends numbers, checks each answer, then None.
void calc_client(mp::Connection conn) {
  for (long i = 0; i < 20; ++i) {
    conn.send(i);
    auto expected = std::to_string(i) + "*" + std::to_string(i) + "=" + std::to_string(i * i);
    if (conn.recv<std::string>() != expected) throw mp::Error("wrong answer for " + std::to_string(i));
  }
  conn.send(mp::Object());  // None
  conn.close();
}

// Seed 003's foo: five (i, name) messages, then close.
void feed_reader(mp::Connection w) {
  for (int i = 0; i < 5; ++i) w.send(std::make_tuple(i, mp::current_process().name));
  w.close();
}

void wait_for_go(mp::Connection conn) { conn.recv(); }

void echo_once(mp::Connection conn) { conn.send_bytes(conn.recv_bytes()); }

// How many times pid has blocked (its voluntary context switches).
long times_blocked(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  const std::string key = "voluntary_ctxt_switches:";
  for (std::string line; std::getline(status, line);)
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
  throw mp::Error("no voluntary_ctxt_switches for pid " + std::to_string(pid));
}

// Waits until pid has blocked more than `since` times; throws after patience.
void wait_until_blocked_again(pid_t pid, long since) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  while (times_blocked(pid) <= since) {
    if (std::chrono::steady_clock::now() > deadline) throw mp::Error("the reader never blocked");
    std::this_thread::yield();
  }
}

// Writes the frame "partly" in two pieces, each once the reading process has blocked waiting
// for it: first for the header (it learns how often it had blocked before it started to read
// through `ctl`), then for the rest of the payload.
void send_in_pieces_to_a_blocked_reader(mp::Connection out, mp::Connection ctl, pid_t reader) {
  wait_until_blocked_again(reader, ctl.recv<long>());
  long blocked = times_blocked(reader);
  write_raw(out.fileno(), be32(6) + "par");
  wait_until_blocked_again(reader, blocked);
  write_raw(out.fileno(), "tly");
}

void echo_forever(mp::Connection conn) {
  for (;;) conn.send(conn.recv());
}

// Message i of a stream that several processes read: its index and i % 97 copies of one letter.
std::tuple<int, std::string> numbered_message(int i) {
  return {i, std::string(static_cast<std::size_t>(i % 97), static_cast<char>('a' + i % 26))};
}

// Takes messages from a reader it shares with other processes, one at a time under `lock`, until
// an index of -1; reports how many arrived intact.
void read_shared_under_lock(mp::Connection in, mp::Lock lock, mp::Connection report) {
  long intact = 0;
  for (;;) {
    std::tuple<int, std::string> m;
    {
      std::lock_guard hold(lock);
      m = in.recv<std::tuple<int, std::string>>();
    }
    if (std::get<0>(m) < 0) break;
    if (m == numbered_message(std::get<0>(m))) ++intact;
  }
  report.send(intact);
}

// Starts a frame of 1000 bytes, sends 10 of them and dies.
void die_inside_a_frame(mp::Connection conn) {
  write_raw(conn.fileno(), be32(1000) + std::string(10, 'x'));
  ::raise(SIGKILL);
}

// Connects with `key` and expects the listener to refuse it (exit 0 when it does).
void client_expecting_refusal(std::string address, std::string key) {
  try {
    mp::connection::Client c(address, key);
  } catch (const mp::AuthenticationError&) {
    return;
  }
  throw mp::Error("a wrong key was accepted");
}

void client_echo(std::string address, std::string key) {
  mp::connection::Client c(address, key);
  c.send(c.recv<std::string>() + "!");
}

// client_echo once the parent says so over ctl (after ctl tells it this child is running).
void client_echo_when_told(std::string address, std::string key, mp::Connection ctl) {
  ctl.send(true);
  ctl.recv();
  client_echo(std::move(address), std::move(key));
}

// A slowloris peer: announces a handshake message with header on fd, then sends it one byte
// every 100 ms, and returns once the other side hangs up. Throws if it has not after 6 s.
void dribble(int fd, std::string_view header) {
  write_raw(fd, header);
  auto give_up = std::chrono::steady_clock::now() + 6s;
  while (std::chrono::steady_clock::now() < give_up) {
    if (::send(fd, "z", 1, MSG_NOSIGNAL) != 1) return;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {  // whatever the other side says, and whether it hung up
      char drained[512];
      ssize_t n = ::recv(fd, drained, sizeof drained, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) return;
    }
  }
  throw mp::Error("the other side never hung up on a peer that dribbles");
}

// A client (no key, so the handshake's messages are its own) that dribbles its answer; tells
// ready once it is connected.
void dribbling_client(std::string address, mp::Connection ready) {
  mp::connection::Client c(address);
  ready.send(true);
  dribble(c.fileno(), be32(255));
}

// A listener (no key) that dribbles the challenge to the first client; tells ready once it listens.
void dribbling_server(std::string address, mp::Connection ready) {
  mp::connection::Listener l(address);
  ready.send(true);
  auto conn = l.accept();
  dribble(conn.fileno(), be32(200));
}

// execs python3 on a script of tests/python with stdout on out_fd.
void exec_python(std::vector<std::string> args, int out_fd) {
  ::dup2(out_fd, STDOUT_FILENO);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  throw mp::Error(std::string("cannot exec python3: ") + std::strerror(errno));
}

// A python3 child running tests/python/<script>; its stdout is read line by line.
class PythonPeer {
public:
  PythonPeer(const std::string& script, std::vector<std::string> args) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    out_ = fds[0];
    args.insert(args.begin(), {MULTIPROC_PYTHON, std::string(MULTIPROC_TEST_DIR) + "/python/" + script});
    proc_ = mp::Process(exec_python, std::move(args), fds[1]);
    proc_.start();
    ::close(fds[1]);
  }
  PythonPeer(const PythonPeer&) = delete;
  PythonPeer& operator=(const PythonPeer&) = delete;
  ~PythonPeer() {
    if (proc_.is_alive()) proc_.kill();
    proc_.join(patience);
    ::close(out_);
  }
  std::string read_line() {
    std::string line;
    char c;
    while (wait_readable() && ::read(out_, &c, 1) == 1) {
      if (c == '\n') return line;
      line += c;
    }
    FAIL("python3 printed no complete line; got '" << line << "'");
    return line;
  }
  int exitcode() {
    join_or_kill(proc_);
    return *proc_.exitcode();
  }
  int sentinel() const { return proc_.sentinel(); }

private:
  bool wait_readable() {
    pollfd p{out_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(patience).count())) == 1;
  }
  int out_ = -1;
  mp::Process proc_;
};

// Accepts one connection, but only once a client is there (or fails when the peer exits first).
mp::Connection accept_from(mp::connection::Listener& l, int peer_sentinel) {
  auto ready = mp::connection::wait(std::vector<int>{l.fileno(), peer_sentinel}, patience);
  REQUIRE(std::find(ready.begin(), ready.end(), l.fileno()) != ready.end());
  return l.accept();
}

} // namespace

// ---- Pipe and Connection, in one process --------------------------------------------------

TEST_CASE("connection: send and recv carry ints, strings and containers", "[connection]") {
  auto [a, b] = mp::Pipe();
  a.send(42);
  a.send(-7L);
  a.send(std::string("héllo"));
  a.send(std::vector<int>{1, 2, 3});
  a.send(std::map<std::string, double>{{"pi", 3.5}, {"e", 2.5}});
  a.send(std::set<std::string>{"x", "y"});
  CHECK(b.recv<int>() == 42);
  CHECK(b.recv<long>() == -7);
  CHECK(b.recv<std::string>() == "héllo");
  CHECK(b.recv<std::vector<int>>() == std::vector<int>{1, 2, 3});
  CHECK(b.recv<std::map<std::string, double>>() == std::map<std::string, double>{{"pi", 3.5}, {"e", 2.5}});
  CHECK(b.recv<std::set<std::string>>() == std::set<std::string>{"x", "y"});
  b.send(std::string("back"));  // duplex: both ways
  CHECK(a.recv<std::string>() == "back");
}

TEST_CASE("connection: optional, variant, tuple and MSGPACK_DEFINE structs round-trip", "[connection]") {
  auto [a, b] = mp::Pipe();
  a.send(std::optional<int>{5});
  a.send(std::optional<int>{});
  a.send(std::variant<int, std::string>{std::string("v")});
  a.send(std::make_tuple(1, std::string("two"), 3.0));
  a.send(Point{3, "p"});
  a.send(std::vector<Point>{{1, "a"}, {2, "b"}});
  CHECK(b.recv<std::optional<int>>() == 5);
  CHECK_FALSE(b.recv<std::optional<int>>().has_value());
  CHECK(std::get<std::string>(b.recv<std::variant<int, std::string>>()) == "v");
  CHECK(b.recv<std::tuple<int, std::string, double>>() == std::make_tuple(1, std::string("two"), 3.0));
  CHECK(b.recv<Point>() == Point{3, "p"});
  CHECK(b.recv<std::vector<Point>>() == std::vector<Point>{{1, "a"}, {2, "b"}});
}

TEST_CASE("connection: mp::Object messages keep their dynamic type", "[connection]") {
  auto [a, b] = mp::Pipe();
  mp::Object obj = mp::Object::Array{1, "x", std::nullopt, 2.5, mp::Object::Map{{"k", true}}};
  a.send(obj);
  a.send(Point{1, "q"});
  auto got = b.recv();
  CHECK(got == obj);
  CHECK(got.repr() == "[1, 'x', None, 2.5, {'k': True}]");
  CHECK(b.recv().as<Point>() == Point{1, "q"});  // a struct arrives as an array Object
}

TEST_CASE("connection: send_bytes honours offset and size and refuses out-of-range slices", "[connection]") {
  auto [a, b] = mp::Pipe();
  std::string data = "0123456789";
  a.send_bytes(data);
  a.send_bytes(data, 3);
  a.send_bytes(data, 2, 4);
  a.send_bytes(data, 10, 0);
  a.send_bytes("");
  CHECK(b.recv_bytes() == "0123456789");
  CHECK(b.recv_bytes() == "3456789");
  CHECK(b.recv_bytes() == "2345");
  CHECK(b.recv_bytes().empty());
  CHECK(b.recv_bytes().empty());
  CHECK_THROWS_AS(a.send_bytes(data, 11), mp::ValueError);
  CHECK_THROWS_AS(a.send_bytes(data, 5, 6), mp::ValueError);
  CHECK_FALSE(b.poll());  // nothing was sent by the refused calls
}

TEST_CASE("connection: recv_bytes over maxlength throws ValueError and the connection stays usable", "[connection]") {
  auto [a, b] = mp::Pipe();
  a.send_bytes(std::string(100, 'x'));
  a.send_bytes("short");
  CHECK_THROWS_AS(b.recv_bytes(99), mp::ValueError);
  CHECK(b.recv_bytes(5) == "short");
  a.send_bytes(std::string(100, 'y'));
  CHECK(b.recv_bytes(100) == std::string(100, 'y'));
}

TEST_CASE("connection: recv_bytes_into copies at an offset and BufferTooShort carries the whole message",
          "[connection]") {
  auto [a, b] = mp::Pipe();
  std::array<std::byte, 8> buf{};
  a.send_bytes("abc");
  CHECK(b.recv_bytes_into(buf, 5) == 3);
  CHECK(std::memcmp(buf.data() + 5, "abc", 3) == 0);
  a.send_bytes("0123456789");
  try {
    b.recv_bytes_into(buf, 2);
    FAIL("BufferTooShort expected");
  } catch (const mp::BufferTooShort& e) {
    CHECK(e.message() == "0123456789");
  }
  CHECK_THROWS_AS(b.recv_bytes_into(buf, 9), mp::ValueError);
  a.send_bytes("ok");  // the stream is still in step
  CHECK(b.recv_bytes_into(buf) == 2);
}

TEST_CASE("connection: poll reports pending data, waits out a timeout, and sees EOF", "[connection]") {
  auto [a, b] = mp::Pipe();
  CHECK_FALSE(b.poll());
  CHECK_FALSE(b.poll(0s));
  auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(b.poll(50ms));
  CHECK(std::chrono::steady_clock::now() - t0 >= 50ms);
  a.send(1);
  CHECK(b.poll());
  CHECK(b.poll(1s));
  CHECK(b.recv<int>() == 1);
  a.close();
  CHECK(b.poll(1s));  // EOF counts as ready
  CHECK_THROWS_AS(b.recv(), mp::EOFError);
}

TEST_CASE("connection: close, closed, readable, writable and fileno behave as Python's", "[connection]") {
  auto [a, b] = mp::Pipe();
  CHECK_FALSE(a.closed());
  CHECK(a.readable());
  CHECK(a.writable());
  CHECK(a.fileno() >= 0);
  mp::Connection copy = a;
  CHECK(copy == a);
  CHECK_FALSE(copy == b);
  a.close();
  CHECK(a.closed());
  CHECK(copy.closed());  // copies are one endpoint
  a.close();             // closing twice is harmless
  CHECK_THROWS_AS(a.fileno(), mp::ValueError);
  CHECK_THROWS_AS(a.send(1), mp::ValueError);
  CHECK_THROWS_AS(a.recv(), mp::ValueError);
  CHECK_THROWS_AS(a.poll(), mp::ValueError);
  mp::Connection never_opened;
  CHECK(never_opened.closed());
  CHECK_THROWS_AS(never_opened.recv_bytes(), mp::ValueError);
}

TEST_CASE("connection: a one-way Pipe refuses the wrong direction with an Error", "[connection]") {
  auto [r, w] = mp::Pipe(false);
  CHECK(r.readable());
  CHECK_FALSE(r.writable());
  CHECK(w.writable());
  CHECK_FALSE(w.readable());
  CHECK_THROWS_AS(r.send(1), mp::Error);
  CHECK_THROWS_AS(r.send_bytes("x"), mp::Error);
  CHECK_THROWS_AS(w.recv(), mp::Error);
  CHECK_THROWS_AS(w.poll(), mp::Error);
  w.send(std::string("one way"));
  CHECK(r.recv<std::string>() == "one way");
}

TEST_CASE("connection: a recv takes one message and leaves the next readable on fileno", "[connection]") {
  auto [a, b] = mp::Pipe();
  a.send(1);
  a.send(2);
  CHECK(b.recv<int>() == 1);
  pollfd p{b.fileno(), POLLIN, 0};
  CHECK(::poll(&p, 1, 0) == 1);
  CHECK(mp::connection::wait({b}, 0s).size() == 1);
  CHECK(b.recv<int>() == 2);
}

TEST_CASE("connection: Connections over pipe(2) fds carry messages, maxlength and EOF as over sockets",
          "[connection]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  mp::Connection r(fds[0], true, false);
  mp::Connection w(fds[1], false, true);
  w.send(42);
  w.send_bytes(std::string(100, 'x'));
  w.send_bytes("abc");
  CHECK(r.recv<int>() == 42);
  CHECK_THROWS_AS(r.recv_bytes(10), mp::ValueError);
  std::array<std::byte, 8> buf{};
  CHECK(r.recv_bytes_into(buf, 2) == 3);
  CHECK(buf[2] == std::byte{'a'});
  w.close();
  CHECK_THROWS_AS(r.recv(), mp::EOFError);
}

TEST_CASE("connection: recv throws EOFError once the peer closed and everything sent was read", "[connection]") {
  auto [a, b] = mp::Pipe();
  a.send(1);
  a.send(2);
  a.close();
  CHECK(b.recv<int>() == 1);
  CHECK(b.recv<int>() == 2);
  CHECK_THROWS_AS(b.recv(), mp::EOFError);
  CHECK_THROWS_AS(b.recv_bytes(), mp::EOFError);
  CHECK_THROWS_AS(b.send(3), mp::BrokenPipeError);
}

TEST_CASE("connection: recv of the wrong type throws TypeError and consumes the message", "[connection]") {
  auto [a, b] = mp::Pipe();
  a.send(std::string("not a number"));
  a.send(7);
  CHECK_THROWS_AS(b.recv<int>(), mp::TypeError);
  CHECK(b.recv<int>() == 7);
}

// ---- garbage on a real socket -------------------------------------------------------------

TEST_CASE("wire: a length over the ceiling is an Error, refused before allocating", "[connection]") {
  FrameCeiling ceiling(1024);
  auto [a, b] = mp::Pipe();
  write_raw(a.fileno(), be32(4096));
  CHECK_THROWS_WITH(b.recv_bytes(), Catch::Contains("exceeds the ceiling"));
}

TEST_CASE("wire: a negative length is an Error", "[connection]") {
  auto [a, b] = mp::Pipe();
  write_raw(a.fileno(), be32(0x80000000u));
  CHECK_THROWS_WITH(b.recv(), Catch::Contains("negative length"));
}

TEST_CASE("wire: after a malformed header further reads throw instead of reading out of step",
          "[connection]") {
  FrameCeiling ceiling(16);
  auto [a, b] = mp::Pipe();
  // The refused frame's payload starts with what would parse as a header waiting for more bytes.
  write_raw(a.fileno(), be32(64) + be32(8) + std::string(60, 'x'));
  CHECK_THROWS_WITH(b.recv_bytes(), Catch::Contains("exceeds the ceiling"));
  CHECK_THROWS_WITH(b.recv_bytes(), Catch::Contains("malformed frame header"));
  std::array<std::byte, 4> buf{};
  CHECK_THROWS_WITH(b.recv_bytes_into(buf), Catch::Contains("malformed frame header"));
}

TEST_CASE("wire: a 2 GiB escape header over the ceiling is an Error", "[connection]") {
  auto [a, b] = mp::Pipe();
  write_raw(a.fileno(), be32(0xffffffffu) + be32(1) + be32(0));  // -1, then 4 GiB
  CHECK_THROWS_WITH(b.recv_bytes(), Catch::Contains("exceeds the ceiling"));
}

TEST_CASE("wire: a truncated header then close is an Error, not EOF", "[connection]") {
  auto [a, b] = mp::Pipe();
  write_raw(a.fileno(), std::string("\0\0", 2));
  a.close();
  CHECK_THROWS_WITH(b.recv(), Catch::Contains("truncated frame"));
}

TEST_CASE("wire: a truncated payload then close is an Error", "[connection]") {
  auto [a, b] = mp::Pipe();
  write_raw(a.fileno(), be32(100) + "only this");
  a.close();
  try {
    b.recv_bytes();
    FAIL("a truncated frame was accepted");
  } catch (const mp::EOFError&) {
    FAIL("a truncated frame must not look like a clean EOF");
  } catch (const mp::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("truncated"));
  }
}

TEST_CASE("wire: a payload that is not MessagePack is an Error", "[connection]") {
  auto [a, b] = mp::Pipe();
  a.send_bytes("\xc1");  // a byte MessagePack never uses
  a.send_bytes("\x92\x01");  // an array of two with one element
  CHECK_THROWS_AS(b.recv(), mp::Error);
  CHECK_THROWS_AS(b.recv<std::vector<int>>(), mp::Error);
}

TEST_CASE("wire: a payload of the wrong type is TypeError", "[connection]") {
  auto [a, b] = mp::Pipe();
  a.send(std::vector<std::string>{"a"});
  a.send(Point{1, "p"});
  CHECK_THROWS_AS((b.recv<std::map<int, int>>()), mp::TypeError);
  CHECK_THROWS_AS(b.recv<std::string>(), mp::TypeError);
}

// ---- across processes ---------------------------------------------------------------------

TEST_CASE("connection: seed 000 - a client and a calc process talk over a duplex Pipe", "[connection]") {
  auto [c1, c2] = mp::Pipe(true);
  mp::Process client(calc_client, c1);
  mp::Process worker(calc, c2);
  client.start();
  worker.start();
  c1.close();
  c2.close();
  join_or_kill(client);
  join_or_kill(worker);
  CHECK(client.exitcode() == 0);
  CHECK(worker.exitcode() == 0);
}

TEST_CASE("connection: seed 003 - wait returns the readers that are ready as Processes feed them",
          "[connection]") {
  std::vector<mp::Connection> readers;
  std::vector<mp::Process> procs;
  for (int i = 0; i < 3; ++i) {
    auto [r, w] = mp::Pipe(false);
    readers.push_back(r);
    procs.emplace_back(feed_reader, w);
    procs.back().start();
    w.close();
  }
  std::map<std::string, std::vector<int>> got;
  while (!readers.empty()) {
    auto ready = mp::connection::wait(readers, patience);
    REQUIRE_FALSE(ready.empty());
    for (auto& r : ready) {
      try {
        auto [i, name] = r.recv<std::tuple<int, std::string>>();
        got[name].push_back(i);
      } catch (const mp::EOFError&) {
        std::erase(readers, r);
      }
    }
  }
  REQUIRE(got.size() == 3);
  for (auto& [name, seq] : got) CHECK(seq == std::vector<int>{0, 1, 2, 3, 4});
  for (auto& p : procs) join_or_kill(p);
}

TEST_CASE("connection: wait on Process sentinels returns the ended ones and is empty on timeout",
          "[connection]") {
  auto [go_r, go_w] = mp::Pipe(false);
  mp::Process quick([] {});
  mp::Process held(wait_for_go, go_r);
  quick.start();
  held.start();
  auto ready = mp::connection::wait(std::vector<int>{quick.sentinel(), held.sentinel()}, patience);
  CHECK(ready == std::vector<int>{quick.sentinel()});
  CHECK(mp::connection::wait(std::vector<int>{held.sentinel()}, 50ms).empty());
  go_w.send(true);
  CHECK(mp::connection::wait(std::vector<int>{held.sentinel()}, patience) == std::vector<int>{held.sentinel()});
  join_or_kill(quick);
  join_or_kill(held);
}

TEST_CASE("connection: wait over Connections includes one whose peer closed, and honours a timeout",
          "[connection]") {
  auto [a1, b1] = mp::Pipe();
  auto [a2, b2] = mp::Pipe();
  CHECK(mp::connection::wait({b1, b2}, 20ms).empty());
  CHECK(mp::connection::wait({b1, b2}, 0s).empty());
  a2.close();
  CHECK(mp::connection::wait({b1, b2}, patience) == std::vector<mp::Connection>{b2});
  a1.send(1);
  CHECK(mp::connection::wait({b1, b2}).size() == 2);
}

TEST_CASE("connection: processes sharing one reader under a Lock each take whole messages", "[connection]") {
  constexpr int messages = 400;
  constexpr int readers = 2;
  auto [in_r, in_w] = mp::Pipe(false);
  auto [report_r, report_w] = mp::Pipe(false);
  mp::Lock lock;
  std::vector<mp::Process> procs;
  for (int i = 0; i < readers; ++i) {
    procs.emplace_back(read_shared_under_lock, in_r, lock, report_w);
    procs.back().start();
  }
  for (int i = 0; i < messages; ++i) in_w.send(numbered_message(i));
  for (int i = 0; i < readers; ++i) in_w.send(std::make_tuple(-1, std::string()));
  long intact = 0;
  for (int i = 0; i < readers; ++i) {
    REQUIRE(report_r.poll(patience));
    intact += report_r.recv<long>();
  }
  CHECK(intact == messages);
  for (auto& p : procs) join_or_kill(p);
}

TEST_CASE("connection: a reader whose socket was made O_NONBLOCK still waits for whole messages",
          "[connection]") {
  auto [a, b] = mp::Pipe();
  auto [ctl_r, ctl_w] = mp::Pipe(false);
  REQUIRE(::fcntl(b.fileno(), F_SETFL, ::fcntl(b.fileno(), F_GETFL) | O_NONBLOCK) == 0);
  mp::Process sender(send_in_pieces_to_a_blocked_reader, a, ctl_r, ::getpid());
  sender.start();
  a.close();
  ctl_w.send(times_blocked(::getpid()));
  CHECK(b.recv_bytes() == "partly");
  join_or_kill(sender);
  CHECK(sender.exitcode() == 0);
  CHECK_THROWS_AS(b.recv_bytes(), mp::EOFError);
}

TEST_CASE("connection: a 50 MiB message crosses a Pipe between processes both ways", "[connection]") {
  std::string big(50u << 20, '\0');
  for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i / 4096);
  big.back() = 'z';
  auto [a, b] = mp::Pipe();
  mp::Process echo(echo_once, b);
  echo.start();
  b.close();
  a.send_bytes(big);
  CHECK(a.recv_bytes() == big);
  join_or_kill(echo);
  CHECK(echo.exitcode() == 0);
}

TEST_CASE("connection: a 50 MiB mp::Object message crosses a Pipe between processes", "[connection]") {
  mp::Object big = mp::Object::Array{mp::Object::Binary{std::string(50u << 20, 'b')}, 1, "tail"};
  auto [a, b] = mp::Pipe();
  mp::Process echo(echo_forever, b);
  echo.start();
  b.close();
  a.send(big);
  CHECK(a.recv() == big);
  echo.kill();
  join_or_kill(echo);
}

TEST_CASE("connection: a SIGKILLed peer gives EOFError, never a hang", "[connection]") {
  auto [a, b] = mp::Pipe();
  mp::Process echo(echo_forever, b);
  echo.start();
  b.close();
  a.send(std::string("ping"));
  CHECK(a.recv<std::string>() == "ping");
  echo.kill();
  join_or_kill(echo);
  CHECK(echo.exitcode() == -SIGKILL);
  CHECK(a.poll(patience));
  CHECK_THROWS_AS(a.recv(), mp::EOFError);
  // Depending on timing the kernel reports the vanished reader as EPIPE or ECONNRESET.
  CHECK_THROWS_AS(a.send(1), mp::BrokenPipeError);
}

TEST_CASE("connection: a peer that dies inside a frame gives an Error, never a hang", "[connection]") {
  auto [a, b] = mp::Pipe();
  mp::Process dying(die_inside_a_frame, b);
  dying.start();
  b.close();
  REQUIRE(a.poll(patience));
  CHECK_THROWS_WITH(a.recv_bytes(), Catch::Contains("truncated"));
  join_or_kill(dying);
  CHECK(dying.exitcode() == -SIGKILL);
}

// ---- Listener and Client ------------------------------------------------------------------

TEST_CASE("listener: a Client with the right key talks over a Unix path, removed at close", "[connection]") {
  auto path = unique_socket_path("unix");
  mp::connection::Listener l(path, "secret");
  CHECK(l.address() == path);
  mp::Process client(client_echo, path, std::string("secret"));
  client.start();
  auto conn = accept_from(l, client.sentinel());
  conn.send(std::string("hi"));
  CHECK(conn.recv<std::string>() == "hi!");
  join_or_kill(client);
  CHECK(client.exitcode() == 0);
  CHECK(l.last_accepted().empty());  // an unnamed Unix client, as in Python
  l.close();
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK_THROWS_AS(l.accept(), mp::ValueError);
  CHECK_THROWS_AS(l.fileno(), mp::ValueError);
}

TEST_CASE("listener: 127.0.0.1:0 listens on a free port and address reports it", "[connection]") {
  mp::connection::Listener l("127.0.0.1:0", "k");
  REQUIRE(l.address().starts_with("127.0.0.1:"));
  CHECK(l.address() != "127.0.0.1:0");
  mp::Process client(client_echo, l.address(), std::string("k"));
  client.start();
  auto conn = accept_from(l, client.sentinel());
  CHECK(l.last_accepted().starts_with("127.0.0.1:"));
  conn.send(std::string("tcp"));
  CHECK(conn.recv<std::string>() == "tcp!");
  join_or_kill(client);
  CHECK(client.exitcode() == 0);
}

TEST_CASE("listener: [::1]:0 listens on IPv6 loopback", "[connection]") {
  std::optional<mp::connection::Listener> l;
  try {
    l.emplace("[::1]:0", "k6");
  } catch (const mp::OSError& e) {
    WARN("no IPv6 loopback here: " << e.what());
    return;
  }
  REQUIRE(l->address().starts_with("[::1]:"));
  mp::Process client(client_echo, l->address(), std::string("k6"));
  client.start();
  auto conn = accept_from(*l, client.sentinel());
  conn.send(std::string("v6"));
  CHECK(conn.recv<std::string>() == "v6!");
  join_or_kill(client);
}

TEST_CASE("listener: address \"\" makes a private 0700 Unix socket that close removes", "[connection]") {
  mp::connection::Listener l;
  std::filesystem::path path = l.address();
  REQUIRE(std::filesystem::exists(path));
  struct stat st {};
  REQUIRE(::stat(path.parent_path().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  mp::connection::Client c(l.address());
  auto server = l.accept();
  c.send(1);
  CHECK(server.recv<int>() == 1);
  l.close();
  CHECK_FALSE(std::filesystem::exists(path));
  CHECK_FALSE(std::filesystem::exists(path.parent_path()));
}

TEST_CASE("listener: without a key no handshake happens", "[connection]") {
  mp::connection::Listener l("127.0.0.1:0");
  mp::connection::Client c(l.address());
  auto server = l.accept();
  c.send_bytes("raw");
  CHECK(server.recv_bytes() == "raw");
}

TEST_CASE("listener: a wrong key fails on both sides and the listener then accepts a good client",
          "[connection]") {
  mp::connection::Listener l(unique_socket_path("wrongkey"), "right");
  mp::Process intruder(client_expecting_refusal, l.address(), std::string("wrong"));
  intruder.start();
  CHECK_THROWS_AS(accept_from(l, intruder.sentinel()), mp::AuthenticationError);
  join_or_kill(intruder);
  CHECK(intruder.exitcode() == 0);  // it saw AuthenticationError too

  mp::Process friendly(client_echo, l.address(), std::string("right"));
  friendly.start();
  auto conn = accept_from(l, friendly.sentinel());
  conn.send(std::string("welcome"));
  CHECK(conn.recv<std::string>() == "welcome!");
  join_or_kill(friendly);
}

TEST_CASE("listener: a client without a key is refused by a listener with one", "[connection]") {
  HandshakeTimeout quick(2s);
  mp::connection::Listener l("127.0.0.1:0", "key");
  mp::connection::Client keyless(l.address());
  keyless.send_bytes("hello?");  // instead of answering the challenge
  CHECK_THROWS_AS(l.accept(), mp::AuthenticationError);
  CHECK(keyless.recv_bytes().starts_with("#CHALLENGE#"));
  CHECK(keyless.recv_bytes() == "#FAILURE#");
}

TEST_CASE("listener: a silent client makes accept fail with AuthenticationError after the timeout",
          "[connection]") {
  HandshakeTimeout quick(200ms);
  mp::connection::Listener l(unique_socket_path("silent"), "key");
  mp::connection::Client silent(l.address());  // connects, never answers
  auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(l.accept(), Catch::Contains("timed out"));
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
}

TEST_CASE("listener: a client that stops inside its answer makes accept fail after the timeout",
          "[connection]") {
  HandshakeTimeout quick(200ms);
  mp::connection::Listener l(unique_socket_path("stalled"), "key");
  mp::connection::Client stalled(l.address());  // no key: it leaves the answer to us
  write_raw(stalled.fileno(), be32(32) + "half");
  auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(l.accept(), mp::AuthenticationError);
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
}

TEST_CASE("listener: a client that hangs up mid-handshake is an AuthenticationError", "[connection]") {
  mp::connection::Listener l(unique_socket_path("hangup"), "key");
  {
    mp::connection::Client gone(l.address());
  }
  CHECK_THROWS_AS(l.accept(), mp::AuthenticationError);
}

TEST_CASE("listener: a path already in use is an OSError and the first listener keeps its socket",
          "[connection]") {
  mp::connection::Listener first(unique_socket_path("taken"));
  CHECK_THROWS_AS(mp::connection::Listener(first.address()), mp::OSError);
  REQUIRE(std::filesystem::exists(first.address()));
  mp::connection::Client c(first.address());
  CHECK_NOTHROW(first.accept());
}

TEST_CASE("listener: a Client to an address nobody listens on is an OSError", "[connection]") {
  CHECK_THROWS_AS(mp::connection::Client(unique_socket_path("nobody")), mp::OSError);
}

TEST_CASE("listener: a client that dribbles its answer is dropped at the handshake deadline while another gets in",
          "[connection]") {
  constexpr auto limit = 2s;
  HandshakeTimeout bounded(limit);
  mp::connection::Listener l(unique_socket_path("slowloris"), "key");
  auto [ready, ready_w] = mp::Pipe(false);
  auto [ctl, friend_ctl] = mp::Pipe();
  mp::Process dribbler(dribbling_client, l.address(), ready_w);
  mp::Process friendly(client_echo_when_told, l.address(), std::string("key"), friend_ctl);
  dribbler.start();
  friendly.start();
  REQUIRE(ready.poll(patience));
  REQUIRE(ctl.poll(patience));
  ctl.recv();
  ctl.send(true);  // connect now, while the dribbler holds its handshake open

  auto t0 = std::chrono::steady_clock::now();
  auto conn = l.accept();  // the friendly client: accept() serves it beside the dribbler
  conn.send(std::string("in"));
  CHECK(conn.recv<std::string>() == "in!");
  CHECK_THROWS_WITH(l.accept(), Catch::Contains("timed out"));  // the dribbler, at its deadline
  CHECK(std::chrono::steady_clock::now() - t0 < 2 * limit);
  join_or_kill(dribbler);
  CHECK(dribbler.exitcode() == 0);  // it saw the listener hang up
  join_or_kill(friendly);
  CHECK(friendly.exitcode() == 0);
}

TEST_CASE("listener: a flood of silent clients holds no more handshakes at once than the backlog",
          "[connection]") {
  HandshakeTimeout quick(200ms);
  auto open_fds = [] {
    auto fds = std::filesystem::directory_iterator("/proc/self/fd");
    return std::distance(begin(fds), end(fds));
  };
  mp::connection::Listener l(unique_socket_path("flood"), "key", 1);
  mp::connection::Client first(l.address()), second(l.address());  // both silent, both in the backlog
  auto before = open_fds();
  CHECK_THROWS_WITH(l.accept(), Catch::Contains("timed out"));
  CHECK(open_fds() == before);  // the second waited in the backlog, not in a handshake of its own
  CHECK_THROWS_WITH(l.accept(), Catch::Contains("timed out"));
  CHECK(open_fds() == before);
}

TEST_CASE("client: a listener that dribbles its challenge fails the Client at the handshake deadline",
          "[connection]") {
  constexpr auto limit = 1s;
  HandshakeTimeout bounded(limit);
  auto path = unique_socket_path("dribbling-server");
  auto [ready, ready_w] = mp::Pipe(false);
  mp::Process server(dribbling_server, path, ready_w);
  server.start();
  REQUIRE(ready.poll(patience));
  auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(mp::connection::Client(path, std::string("key")), Catch::Contains("timed out"));
  CHECK(std::chrono::steady_clock::now() - t0 < 2 * limit);
  join_or_kill(server);
  CHECK(server.exitcode() == 0);  // it saw the client hang up
}

// ---- deadlines under a storm of signals -------------------------------------------------------

TEST_CASE("timeouts: poll, wait and both sides of a handshake expire on time under a storm of signals",
          "[connection]") {
  using multiproc_test::SignalStorm;
  using multiproc_test::time_under_storm;
  constexpr auto timeout = 300ms;
  // A wait that restarted with its whole timeout at every signal would last as long as the storm.
  constexpr auto bound = SignalStorm::longest / 2;
  auto [a, b] = mp::Pipe();
  std::optional<std::chrono::steady_clock::duration> took;
  SECTION("Connection::poll") {
    bool ready = true;
    took = time_under_storm(timeout, [&] { ready = b.poll(timeout); });
    CHECK_FALSE(ready);
  }
  SECTION("connection::wait") {
    std::vector<mp::Connection> ready{a};
    took = time_under_storm(timeout, [&] { ready = mp::connection::wait({b}, timeout); });
    CHECK(ready.empty());
  }
  SECTION("Listener::accept against a silent client") {
    HandshakeTimeout quick(timeout);
    mp::connection::Listener l(unique_socket_path("storm-accept"), "key");
    took = time_under_storm(timeout, [&] {
      mp::connection::Client silent(l.address());
      CHECK_THROWS_WITH(l.accept(), Catch::Contains("timed out"));
    });
  }
  SECTION("Client against a silent listener") {
    HandshakeTimeout quick(timeout);
    mp::connection::Listener l(unique_socket_path("storm-client"));  // never accepts
    took = time_under_storm(timeout, [&] {
      CHECK_THROWS_WITH(mp::connection::Client(l.address(), std::string("key")), Catch::Contains("timed out"));
    });
  }
  REQUIRE(took);  // the storm kept this thread interrupted throughout one of the tries
  CHECK(*took >= timeout);
  CHECK(*took < bound);
}

// ---- the handshake itself -----------------------------------------------------------------

TEST_CASE("handshake: deliver_challenge sends the 3.12 {sha256} form and refuses a bad answer",
          "[connection]") {
  auto [a, b] = mp::Pipe();
  std::string outcome;
  std::thread server([&, a = a] {
    mp::Connection conn = a;
    try {
      mp::connection::deliver_challenge(conn, "key");
      outcome = "accepted";
    } catch (const mp::AuthenticationError& e) {
      outcome = e.what();
    }
  });
  auto challenge = b.recv_bytes();
  CHECK(challenge.starts_with("#CHALLENGE#{sha256}"));
  CHECK(challenge.size() == 11 + 8 + 40);
  b.send_bytes("{sha256}" + std::string(32, 'x'));
  CHECK(b.recv_bytes() == "#FAILURE#");
  server.join();
  CHECK(outcome == "digest received was wrong");
}

TEST_CASE("handshake: the {sha256} form passes between our own two sides", "[connection]") {
  auto [a, b] = mp::Pipe();
  std::thread server([a = a]() mutable {
    mp::connection::deliver_challenge(a, "shared");
    mp::connection::answer_challenge(a, "shared");
  });
  mp::connection::answer_challenge(b, "shared");
  mp::connection::deliver_challenge(b, "shared");
  server.join();
  a.send(1);
  CHECK(b.recv<int>() == 1);
}

TEST_CASE("handshake: answer_challenge refuses something that is not a challenge", "[connection]") {
  auto [a, b] = mp::Pipe();
  a.send_bytes("#WELCOME#");
  CHECK_THROWS_WITH(mp::connection::answer_challenge(b, "k"), Catch::Contains("expected a challenge"));
  a.send_bytes("#CHALLENGE#tooshort");
  CHECK_THROWS_WITH(mp::connection::answer_challenge(b, "k"), Catch::Contains("too short"));
  a.send_bytes("#CHALLENGE#{sha1}" + std::string(40, 'r'));
  CHECK_THROWS_WITH(mp::connection::answer_challenge(b, "k"), Catch::Contains("unsupported digest"));
}

// ---- interop with CPython -----------------------------------------------------------------

TEST_CASE("python: multiprocessing.connection.Client (3.11, HMAC-MD5) talks to our Listener",
          "[connection]") {
  for (std::string address : {unique_socket_path("py"), std::string("127.0.0.1:0")}) {
    mp::connection::Listener l(address, "pykey");
    PythonPeer py("mp_peer.py", {"client", l.address(), "pykey", "from python"});
    auto conn = accept_from(l, py.sentinel());
    CHECK(conn.recv_bytes() == "from python");
    conn.send_bytes("from C++");
    CHECK(py.read_line() == "from C++");
    CHECK(py.exitcode() == 0);
  }
}

TEST_CASE("python: our Client talks to a multiprocessing.connection.Listener", "[connection]") {
  for (std::string address : {unique_socket_path("pyl"), std::string("127.0.0.1:0")}) {
    PythonPeer py("mp_peer.py", {"listener", address, "pykey"});
    mp::connection::Client c(py.read_line(), "pykey");
    c.send_bytes("hello");
    CHECK(c.recv_bytes() == "py:hello");
    CHECK(py.exitcode() == 0);
  }
}

TEST_CASE("python: a wrong key is refused between Python and us in both directions", "[connection]") {
  SECTION("a Python client with the wrong key") {
    mp::connection::Listener l(unique_socket_path("pybad"), "right");
    PythonPeer py("mp_peer.py", {"client", l.address(), "wrong", "x"});
    CHECK_THROWS_AS(accept_from(l, py.sentinel()), mp::AuthenticationError);
    CHECK(py.exitcode() == 2);
  }
  SECTION("our Client with the wrong key") {
    PythonPeer py("mp_peer.py", {"listener", unique_socket_path("pybad2"), "right"});
    CHECK_THROWS_AS(mp::connection::Client(py.read_line(), "wrong"), mp::AuthenticationError);
    CHECK(py.exitcode() != 0);  // Python's accept raised AuthenticationError
  }
}

TEST_CASE("python: a 3.12-style {sha256} peer built on Python's hmac authenticates with us both ways",
          "[connection]") {
  SECTION("Python client, our Listener") {
    mp::connection::Listener l(unique_socket_path("modern"), "k312");
    PythonPeer py("modern_peer.py", {"client", l.address(), "k312", "modern"});
    auto conn = accept_from(l, py.sentinel());
    CHECK(conn.recv_bytes() == "modern");
    conn.send_bytes("ok");
    CHECK(py.read_line() == "ok");
    CHECK(py.exitcode() == 0);
  }
  SECTION("our Client, Python listener") {
    PythonPeer py("modern_peer.py", {"listener", unique_socket_path("modern2"), "k312"});
    mp::connection::Client c(py.read_line(), "k312");
    c.send_bytes("hi");
    CHECK(c.recv_bytes() == "py:hi");
    CHECK(py.exitcode() == 0);
  }
  SECTION("a wrong key is refused by both") {
    mp::connection::Listener l(unique_socket_path("modern3"), "k312");
    PythonPeer py("modern_peer.py", {"client", l.address(), "other", "x"});
    CHECK_THROWS_AS(accept_from(l, py.sentinel()), mp::AuthenticationError);
    CHECK(py.exitcode() == 2);
  }
}
