// Claims about <multiproc/actor.hpp>: process-hosted actors, every one a real process, every wait
// bounded. The actors under test are the small named behaviors below.
#include <dirent.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "ipc_test_support.hpp"
#include "multiproc/multiproc.hpp"
#include <catch2/catch.hpp>

namespace {

namespace mp = multiproc;
using namespace std::chrono_literals;
using multiproc_test::eventually;
using multiproc_test::patience;

// ---- messages ------------------------------------------------------------------------------

struct Add {
  int n = 0;
  MSGPACK_DEFINE(n);
};
struct Get {
  int unused = 0;
  MSGPACK_DEFINE(unused);
};
struct Boom {
  std::string why;
  MSGPACK_DEFINE(why);
};
struct AskDead {  // requests an actor that has ended: the handler throws mp::ActorExited
  mp::ActorRef target;
  MSGPACK_DEFINE(target);
};
struct Nap {  // sets the event (if any) and sleeps: a handler that is busy on purpose
  int ms = 0;
  MSGPACK_DEFINE(ms);
};
struct Quit {
  int code = 0;
  MSGPACK_DEFINE(code);
};
struct Unhandled {
  int x = 0;
  MSGPACK_DEFINE(x);
};
struct Put {
  mp::ActorRef ref;
  MSGPACK_DEFINE(ref);
};
struct Take {
  int unused = 0;
  MSGPACK_DEFINE(unused);
};
struct Watch {  // monitor (or link, when link is true) the ref
  mp::ActorRef ref;
  bool link = false;
  MSGPACK_DEFINE(ref, link);
};
struct Seen {  // what the watcher has received so far
  int unused = 0;
  MSGPACK_DEFINE(unused);
};
struct Arm {  // send_after: Tick to self after ms
  int ms = 0;
  MSGPACK_DEFINE(ms);
};
struct Tick {
  int unused = 0;
  MSGPACK_DEFINE(unused);
};

// ---- behaviors -----------------------------------------------------------------------------

// A counter that can also crash, nap and quit on request.
mp::Behavior counter(mp::ActorContext& ctx, int start, mp::Event busy) {
  auto n = std::make_shared<int>(start);
  return {
      [n](const Add& a) { *n += a.n; },
      [n](const Get&) { return *n; },
      [](const Boom& b) -> int { throw std::runtime_error(b.why); },
      [](const AskDead& d) { return d.target.request<int>(Get{}, patience); },
      [busy](const Nap& nap) mutable {
        busy.set();
        std::this_thread::sleep_for(std::chrono::milliseconds(nap.ms));
        return nap.ms;
      },
      [&ctx](const Quit& q) { ctx.quit(q.code); },
  };
}

mp::Behavior plain_counter(mp::ActorContext& ctx) { return counter(ctx, 0, mp::Event()); }

// Records every int it receives, in arrival order.
mp::Behavior recorder(mp::ActorContext&) {
  auto seen = std::make_shared<std::vector<int>>();
  return {
      [seen](int x) { seen->push_back(x); },
      [seen](const Get&) { return *seen; },
  };
}

// Holds one ActorRef.
mp::Behavior box(mp::ActorContext&) {
  auto held = std::make_shared<mp::ActorRef>();
  return {
      [held](const Put& p) { *held = p.ref; },
      [held](const Take&) { return *held; },
  };
}

mp::Behavior echo(mp::ActorContext&) {
  return {[](const std::string& s) { return "echo: " + s; }};
}

// Monitors or links on request and keeps what it learns: "down <code>" / "exit <code>".
mp::Behavior watcher(mp::ActorContext& ctx, bool trap) {
  ctx.trap_exit(trap);
  auto log = std::make_shared<std::vector<std::string>>();
  return {
      [&ctx](const Watch& w) {
        if (w.link) {
          ctx.link(w.ref);
        } else {
          ctx.monitor(w.ref);
        }
      },
      [log](const mp::Down& d) { log->push_back("down " + std::to_string(d.exitcode)); },
      [log](const mp::Exit& e) { log->push_back("exit " + std::to_string(e.exitcode)); },
      [log](const Seen&) { return *log; },
      [](const Boom& b) { throw std::runtime_error(b.why); },
      [&ctx](const Quit& q) { ctx.quit(q.code); },
  };
}

// Arms a timer to itself; the Tick sets the event.
mp::Behavior alarm_clock(mp::ActorContext& ctx, mp::Event rang) {
  return {
      [&ctx](const Arm& a) { ctx.send_after(ctx.self(), Tick{}, std::chrono::milliseconds(a.ms)); },
      [rang](const Tick&) mutable { rang.set(); },
  };
}

// ---- helpers -------------------------------------------------------------------------------

std::vector<std::string> seen_by(const mp::ActorRef& w, std::size_t at_least) {
  std::vector<std::string> out;
  eventually([&] {
    out = w.request<std::vector<std::string>>(Seen{}, patience);
    return out.size() >= at_least;
  });
  return out;
}

int open_fd_count() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (auto* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the directory itself
}

// A raw connection to an actor's address, as a hostile or foreign peer would make it.
int raw_connect(const std::string& address) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, address.data(), address.size());
  sa.sun_path[0] = '\0';
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void raw_write(int fd, const std::string& bytes) {
  REQUIRE(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

// A length-prefixed frame around payload.
std::string framed(const std::string& payload) {
  std::string out(4, '\0');
  auto n = static_cast<std::uint32_t>(payload.size());
  for (int i = 3; i >= 0; --i, n >>= 8) out[static_cast<std::size_t>(i)] = static_cast<char>(n & 0xff);
  return out + payload;
}

// An actor frame payload: kind, type id, request id, body.
std::string actor_payload(char kind, std::uint64_t type_id, std::uint64_t request_id, const std::string& body) {
  std::string out(17, '\0');
  out[0] = kind;
  std::memcpy(out.data() + 1, &type_id, 8);
  std::memcpy(out.data() + 9, &request_id, 8);
  return out + body;
}

std::string unique_name(const char* what) {
  return std::string("test-") + what + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

// Children of this process that are still unreaped.
bool no_children_left() {
  return mp::active_children().empty();
}

}  // namespace

// ---- spawn, dispatch, request --------------------------------------------------------------

TEST_CASE("actor: spawn runs init in a new process and handlers keep state between messages", "[actor]") {
  auto a = mp::spawn(counter, 10, mp::Event());
  REQUIRE(a);
  CHECK(a.pid() != ::getpid());
  CHECK(a.alive());
  a.send(Add{1});
  a.send(Add{2});
  CHECK(a.request<int>(Get{}, patience) == 13);
  a.request(Add{5}, patience);  // a void handler's request returns once it ran
  CHECK(a.request<int>(Get{}, patience) == 18);
  a.stop();
  CHECK_FALSE(a.alive());
}

TEST_CASE("actor: the handler is chosen by the message's C++ type", "[actor]") {
  auto a = mp::spawn([](mp::ActorContext&) -> mp::Behavior {
    return {[](int x) { return "int " + std::to_string(x); },
            [](const std::string& s) { return "string " + s; },
            [](double d) { return "double " + std::to_string(static_cast<int>(d)); }};
  });
  CHECK(a.request<std::string>(7, patience) == "int 7");
  CHECK(a.request<std::string>(std::string("x"), patience) == "string x");
  CHECK(a.request<std::string>(2.5, patience) == "double 2");
  a.stop();
}

TEST_CASE("actor: from one sender 1000 messages arrive in the order sent", "[actor]") {
  auto a = mp::spawn(recorder);
  for (int i = 0; i < 1000; ++i) a.send(i);
  auto seen = a.request<std::vector<int>>(Get{}, patience);
  REQUIRE(seen.size() == 1000);
  for (int i = 0; i < 1000; ++i) REQUIRE(seen[static_cast<std::size_t>(i)] == i);
  a.stop();
}

TEST_CASE("actor: request_async delivers the answer and the errors through AsyncResult", "[actor]") {
  auto a = mp::spawn(counter, 40, mp::Event());
  auto r = a.request_async<int>(Add{2});
  auto got = a.request_async<int>(Get{});
  CHECK(got.get(patience) == 42);
  auto nothing = a.request_async(Unhandled{});
  CHECK_THROWS_AS(nothing.get(patience), mp::TypeError);
  a.stop();
}

TEST_CASE("actor: a request times out with TimeoutError and its late answer is dropped", "[actor]") {
  mp::Event busy;
  auto a = mp::spawn(counter, 1, busy);
  CHECK_THROWS_AS(a.request<int>(Nap{300}, 20ms), mp::TimeoutError);
  CHECK(a.request<int>(Get{}, patience) == 1);  // not the Nap's 300
  a.stop();
}

TEST_CASE("actor: a message no handler takes is dropped, a request for it fails with TypeError", "[actor]") {
  auto a = mp::spawn(plain_counter);
  a.send(Unhandled{1});
  CHECK_THROWS_AS(a.request(Unhandled{2}, patience), mp::TypeError);
  CHECK_THROWS_AS(a.request<std::string>(Get{}, patience), mp::TypeError);  // the answer is not a string
  CHECK(a.alive());
  CHECK(a.request<int>(Get{}, patience) == 0);
  a.stop();
}

TEST_CASE("actor: a Behavior with two handlers for one message type is refused", "[actor]") {
  CHECK_THROWS_AS(mp::Behavior([](int) {}, [](const int&) { return 1; }), mp::ValueError);
}

// ---- let it crash --------------------------------------------------------------------------

TEST_CASE("actor: a handler that throws ends the actor with exit code 1: RemoteError for its request, "
          "ActorExited for the queued ones",
          "[actor][crash]") {
  mp::Event busy;
  auto a = mp::spawn(counter, 0, busy);
  auto napping = a.request_async<int>(Nap{200});
  REQUIRE(busy.wait(patience));
  auto boom = a.request_async<int>(Boom{"kaput"});
  auto queued = a.request_async<int>(Get{});
  CHECK(napping.get(patience) == 200);
  try {
    boom.get(patience);
    FAIL("the request to a throwing handler succeeded");
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name() == "std::runtime_error");
    CHECK(std::string(e.what()).find("kaput") != std::string::npos);
  }
  try {
    queued.get(patience);
    FAIL("a request queued behind the crash succeeded");
  } catch (const mp::ActorExited& e) {
    CHECK(e.exitcode() == 1);
  }
  CHECK_FALSE(a.alive());
  CHECK_THROWS_AS(a.request<int>(Get{}, patience), mp::ActorExited);
  a.send(Add{1});  // dropped, as to any ended actor
}

TEST_CASE("actor: a handler that throws one of the library's errors crashes the actor too, rather than dropping "
          "the requester's connection",
          "[actor][crash]") {
  auto dead = mp::spawn(plain_counter);
  dead.stop();
  auto a = mp::spawn(plain_counter);
  try {
    a.request<int>(AskDead{dead}, patience);
    FAIL("a request to an ended actor succeeded");
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name() == "multiproc::ActorExited");
  }
  try {
    a.request<int>(Get{}, patience);
    FAIL("the actor answered after its handler threw");
  } catch (const mp::ActorExited& e) {
    CHECK(e.exitcode() == 1);
  }
  CHECK_FALSE(a.alive());
}

TEST_CASE("actor: a handler killed by SIGKILL mid-request fails the request with ActorExited(-9)", "[actor][crash]") {
  mp::Event busy;
  auto a = mp::spawn(counter, 0, busy);
  auto pending = a.request_async<int>(Nap{30000});
  REQUIRE(busy.wait(patience));
  ::kill(a.pid(), SIGKILL);
  try {
    pending.get(patience);
    FAIL("the request to a killed actor succeeded");
  } catch (const mp::ActorExited& e) {
    CHECK(e.exitcode() == -SIGKILL);
  }
  CHECK_FALSE(a.alive());
}

TEST_CASE("actor: quit ends the actor with its exit code after the current message", "[actor]") {
  auto a = mp::spawn(plain_counter);
  a.send(Quit{3});
  CHECK_THROWS_AS(a.request<int>(Get{}, patience), mp::ActorExited);
  CHECK(eventually([&] { return !a.alive(); }));
}

TEST_CASE("actor: stop asks first, and SIGKILLs an actor still busy after the grace", "[actor]") {
  auto a = mp::spawn(plain_counter);
  a.stop(patience);
  CHECK_FALSE(a.alive());
  a.stop();  // an ended actor: returns at once

  mp::Event busy;
  auto b = mp::spawn(counter, 0, busy);
  auto pending = b.request_async<int>(Nap{30000});
  REQUIRE(busy.wait(patience));
  auto t0 = std::chrono::steady_clock::now();
  b.stop(100ms);
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
  CHECK_FALSE(b.alive());
  CHECK_THROWS_AS(pending.get(patience), mp::ActorExited);
}

namespace {
// Stops an actor this process did not spawn: asked, then SIGKILLed after the grace.
void stop_from_elsewhere(mp::ActorRef a) {
  a.stop(200ms);
  if (a.alive()) throw mp::SystemExit{2};
}
}  // namespace

TEST_CASE("actor: a process other than the spawner stops an actor whether it is busy or idle", "[actor]") {
  mp::Event busy;
  auto idle = mp::spawn(plain_counter);
  auto napping = mp::spawn(counter, 0, busy);
  auto pending = napping.request_async<int>(Nap{30000});
  REQUIRE(busy.wait(patience));
  for (auto& a : {idle, napping}) {
    mp::Process p(stop_from_elsewhere, a);
    p.start();
    multiproc_test::join_or_kill(p);
    CHECK(p.exitcode() == 0);
    CHECK_FALSE(a.alive());
  }
  CHECK_THROWS_AS(pending.get(patience), mp::ActorExited);
}

// ---- refs as values ------------------------------------------------------------------------

TEST_CASE("actor: refs are values that pack, compare and stay null by default", "[actor]") {
  mp::ActorRef none;
  CHECK_FALSE(none);
  CHECK_FALSE(none.alive());
  none.send(1);  // dropped
  CHECK_THROWS_AS(none.request<int>(Get{}, 1s), mp::ValueError);
  auto a = mp::spawn(plain_counter);
  auto [r, w] = mp::Pipe();
  w.send(a);
  auto back = r.recv<mp::ActorRef>();
  CHECK(back == a);
  CHECK(back.pid() == a.pid());
  CHECK(back.request<int>(Get{}, patience) == 0);
  a.stop();
}

namespace {
// Second process: spawns an echo actor, hands its ref to the box, stays alive until told.
void spawn_echo_into(mp::ActorRef the_box, mp::Event done) {
  auto e = mp::spawn(echo);
  the_box.send(Put{e});
  if (!done.wait(patience)) throw std::runtime_error("never told to finish");
}
// Third process: finds the echo actor through the box and asks it.
void ask_echo_from(mp::ActorRef the_box) {
  mp::ActorRef e;
  eventually([&] { return bool(e = the_box.request<mp::ActorRef>(Take{}, patience)); });
  if (e.request<std::string>(std::string("hi"), patience) != "echo: hi") throw mp::SystemExit{3};
}
}  // namespace

TEST_CASE("actor: a ref crosses three processes and reaches its actor directly", "[actor]") {
  auto the_box = mp::spawn(box);
  mp::Event done;
  mp::Process owner(spawn_echo_into, the_box, done);
  owner.start();
  mp::Process user(ask_echo_from, the_box);
  user.start();
  multiproc_test::join_or_kill(user);
  CHECK(user.exitcode() == 0);
  done.set();
  multiproc_test::join_or_kill(owner);
  CHECK(owner.exitcode() == 0);
  // The owner's exit stopped the actor it spawned.
  auto e = the_box.request<mp::ActorRef>(Take{}, patience);
  CHECK(e);
  CHECK(eventually([&] { return !e.alive(); }));
  the_box.stop();
}

namespace {
int add_through(mp::ActorRef counter_ref, int n) {
  counter_ref.send(Add{n});
  return counter_ref.request<int>(Get{}, patience);
}
}  // namespace

TEST_CASE("actor: a ref passes as a Pool task argument and works in the worker", "[actor]") {
  auto a = mp::spawn(plain_counter);
  {
    mp::Pool pool(2);
    auto results = pool.starmap(add_through, std::vector<std::tuple<mp::ActorRef, int>>{{a, 1}, {a, 2}, {a, 3}});
    CHECK(results.size() == 3);
  }
  CHECK(a.request<int>(Get{}, patience) == 6);
  a.stop();
}

// ---- context: monitor, link, timers --------------------------------------------------------

TEST_CASE("actor: monitor delivers Down with the exit code, at once for an actor that has ended", "[actor][monitor]") {
  auto w = mp::spawn(watcher, false);
  auto target = mp::spawn(plain_counter);
  w.request(Watch{target, false}, patience);
  target.send(Quit{7});
  CHECK(seen_by(w, 1) == std::vector<std::string>{"down 7"});
  w.request(Watch{target, false}, patience);  // ended already
  CHECK(seen_by(w, 2) == std::vector<std::string>{"down 7", "down 7"});
  w.stop();
}

TEST_CASE("actor: a monitored actor killed by SIGKILL gives Down(-9)", "[actor][monitor]") {
  auto w = mp::spawn(watcher, false);
  auto target = mp::spawn(plain_counter);
  w.request(Watch{target, false}, patience);
  ::kill(target.pid(), SIGKILL);
  auto seen = seen_by(w, 1);
  // The watcher is not the target's parent: it reads the kernel's record while the target is a
  // zombie; this process reaps it only later.
  CHECK(seen == std::vector<std::string>{"down -9"});
  CHECK_FALSE(target.alive());
  w.stop();
}

TEST_CASE("actor: a link ends the other actor when one crashes, unless it traps exits", "[actor][link]") {
  auto plain = mp::spawn(watcher, false);
  auto trapping = mp::spawn(watcher, true);
  auto target = mp::spawn(plain_counter);
  plain.request(Watch{target, true}, patience);
  trapping.request(Watch{target, true}, patience);
  CHECK_THROWS_AS(target.request<int>(Boom{"linked"}, patience), mp::RemoteError);
  CHECK(eventually([&] { return !plain.alive(); }));
  CHECK(seen_by(trapping, 1) == std::vector<std::string>{"exit 1"});
  trapping.stop();
}

TEST_CASE("actor: a link works both ways and a normal end does not end the other", "[actor][link]") {
  auto trapping = mp::spawn(watcher, true);
  auto other = mp::spawn(watcher, false);
  trapping.request(Watch{other, true}, patience);
  other.send(Quit{0});
  CHECK(seen_by(trapping, 1) == std::vector<std::string>{"exit 0"});
  CHECK(trapping.alive());
  // Now the linking side crashes: the actor it linked to hears of it.
  auto linker = mp::spawn(watcher, false);
  linker.request(Watch{trapping, true}, patience);
  CHECK_THROWS_AS(linker.request(Boom{"gone"}, patience), mp::RemoteError);
  CHECK(seen_by(trapping, 2) == std::vector<std::string>{"exit 0", "exit 1"});
  trapping.stop();
}

TEST_CASE("actor: send_after delivers the message after the delay", "[actor]") {
  mp::Event rang;
  auto a = mp::spawn(alarm_clock, rang);
  auto t0 = std::chrono::steady_clock::now();
  a.send(Arm{100});
  REQUIRE(rang.wait(patience));
  CHECK(std::chrono::steady_clock::now() - t0 >= 100ms);
  a.stop();
}

// ---- names ---------------------------------------------------------------------------------

namespace {
// Messages are ordered per sender only: the child's own request, behind its send, is what makes
// the Add handled before the child ends (and so before the parent's next request).
void find_and_add(std::string name) {
  auto a = mp::whereis(name);
  if (!a) throw mp::SystemExit{2};
  a.send(Add{5});
  if (a.request<int>(Get{}, patience) != 5) throw mp::SystemExit{3};
}
}  // namespace

TEST_CASE("actor: a name is registered host-wide, found by whereis from another process, and unique",
          "[actor][names]") {
  auto name = unique_name("counter");
  CHECK_FALSE(mp::whereis(name));
  auto a = mp::spawn(mp::ActorOptions{.name = name}, plain_counter);
  CHECK(a.name() == name);
  CHECK(mp::whereis(name) == a);
  CHECK_THROWS_AS(mp::spawn(mp::ActorOptions{.name = name}, plain_counter), mp::ValueError);
  mp::Process p(find_and_add, name);
  p.start();
  multiproc_test::join_or_kill(p);
  CHECK(p.exitcode() == 0);
  CHECK(a.request<int>(Get{}, patience) == 5);
  a.stop();
  CHECK_FALSE(mp::whereis(name));
  CHECK_THROWS_AS(mp::spawn(mp::ActorOptions{.name = std::string(81, 'x')}, plain_counter), mp::ValueError);
}

TEST_CASE("actor: a name is freed when its actor crashes or is killed", "[actor][names]") {
  auto name = unique_name("crashy");
  auto a = mp::spawn(mp::ActorOptions{.name = name}, plain_counter);
  CHECK_THROWS_AS(a.request<int>(Boom{"x"}, patience), mp::RemoteError);
  CHECK(eventually([&] { return !mp::whereis(name); }));
  auto b = mp::spawn(mp::ActorOptions{.name = name}, plain_counter);
  ::kill(b.pid(), SIGKILL);
  CHECK(eventually([&] { return !b.alive(); }));
  CHECK_FALSE(mp::whereis(name));
  auto c = mp::spawn(mp::ActorOptions{.name = name}, plain_counter);
  CHECK(mp::whereis(name) == c);
  c.stop();
}

namespace {
// Runs as another user: a raw request to the actor must get no answer, only a closed socket.
void knock_as_nobody(std::string address) {
  if (::setgid(65534) != 0 || ::setuid(65534) != 0) throw mp::SystemExit{4};
  int fd = raw_connect(address);
  if (fd < 0) throw mp::SystemExit{5};
  std::string body = "\x90";  // an empty array: Get{} would be [0]
  std::string frame = framed(actor_payload(1, 0, 1, body));
  (void)::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL);
  char c;
  ssize_t n = ::recv(fd, &c, 1, 0);
  ::close(fd);
  if (n > 0) throw mp::SystemExit{6};  // answered: the foreign peer got through
}
}  // namespace

TEST_CASE("actor: a peer running as another user is refused (SO_PEERCRED)", "[actor][names]") {
  if (::getuid() != 0) {
    WARN("needs root to run a peer as another user; skipped");
    return;
  }
  auto a = mp::spawn(plain_counter);
  mp::Process p(knock_as_nobody, a.address());
  p.start();
  multiproc_test::join_or_kill(p);
  CHECK(p.exitcode() == 0);
  CHECK(a.request<int>(Get{}, patience) == 0);
  a.stop();
}

// ---- bad input -----------------------------------------------------------------------------

TEST_CASE("actor: garbage, truncated and unknown frames are dropped with a log line and the actor keeps serving",
          "[actor][badinput]") {
  char path[] = "/tmp/mp-actor-log-XXXXXX";
  int log_fd = ::mkstemp(path);
  REQUIRE(log_fd >= 0);
  mp::log_to_stderr(mp::LogLevel::warning);
  int saved_stderr = ::dup(2);
  ::dup2(log_fd, 2);
  auto a = mp::spawn(plain_counter);
  ::dup2(saved_stderr, 2);
  ::close(saved_stderr);
  ::close(log_fd);
  mp::get_logger().set_level(mp::LogLevel::critical);  // only the actor's copy logs warnings

  const auto add_id = mp::detail::message_type_id<Add>();
  int fd = raw_connect(a.address());
  REQUIRE(fd >= 0);
  raw_write(fd, framed("xy"));                                           // too short for a header
  raw_write(fd, framed(actor_payload(0, add_id, 0, "\xc1")));            // not MessagePack
  raw_write(fd, framed(actor_payload(0, add_id, 0, "\xa3" "abc")));      // a string, not an Add
  raw_write(fd, framed(actor_payload(0, 0x1234, 0, "\x91\x01")));       // an unknown type id
  raw_write(fd, framed(actor_payload(9, add_id, 0, "\x91\x01")));       // an unknown kind
  raw_write(fd, framed(actor_payload(0, add_id, 0, "\x91\x07")));       // a good Add{7}
  raw_write(fd, std::string("\x00\x00\x00\x30", 4) + "truncated");      // then the peer leaves
  ::close(fd);
  int bad_length = raw_connect(a.address());
  raw_write(bad_length, std::string("\xff\xff\xff\xf0", 4));            // a negative length
  char c;
  CHECK(::recv(bad_length, &c, 1, 0) == 0);                             // that peer is dropped
  ::close(bad_length);
  CHECK(a.request<int>(Get{}, patience) == 7);
  a.stop();
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  ::unlink(path);
  auto log = text.str();
  CHECK(log.find("too short") != std::string::npos);
  CHECK(log.find("not MessagePack") != std::string::npos);
  CHECK(log.find("no handler for message type id 0x1234") != std::string::npos);
  CHECK(log.find("unknown kind 9") != std::string::npos);
  CHECK(log.find("bad frame") != std::string::npos);
}

// ---- lifetimes -----------------------------------------------------------------------------

namespace {
void spawn_and_leave(mp::ActorRef the_box) { the_box.send(Put{mp::spawn(plain_counter)}); }
}  // namespace

TEST_CASE("actor: a spawner's normal exit stops the actors it spawned", "[actor]") {
  auto the_box = mp::spawn(box);
  mp::Process p(spawn_and_leave, the_box);
  p.start();
  multiproc_test::join_or_kill(p);
  CHECK(p.exitcode() == 0);
  auto orphan = the_box.request<mp::ActorRef>(Take{}, patience);
  REQUIRE(orphan);
  CHECK_FALSE(orphan.alive());
  the_box.stop();
}

TEST_CASE("actor: no process or descriptor is left once the actors ended", "[actor]") {
  int fds_before = open_fd_count();
  {
    mp::Event busy;
    auto crashing = mp::spawn(counter, 0, busy);
    auto killed = mp::spawn(counter, 0, busy);
    auto stopped = mp::spawn(plain_counter);
    auto named = mp::spawn(mp::ActorOptions{.name = unique_name("fds")}, plain_counter);
    CHECK(mp::whereis(named.name()) == named);
    for (auto& a : {crashing, killed, stopped, named}) CHECK(a.request<int>(Get{}, patience) == 0);
    CHECK_THROWS_AS(crashing.request<int>(Boom{"x"}, patience), mp::RemoteError);
    ::kill(killed.pid(), SIGKILL);
    CHECK_THROWS_AS(killed.request<int>(Get{}, patience), mp::ActorExited);
    stopped.stop();
    named.stop();
    crashing.stop();  // it is ending: stop waits for that
    CHECK_FALSE(crashing.alive());
    CHECK_FALSE(killed.alive());
  }
  CHECK(no_children_left());
  // Not more than before: run in one process with the others, this test may also see the end of
  // an earlier test's connection (to an actor that has ended since) and close it.
  CHECK(open_fd_count() <= fds_before);
}

// ---- type ids ------------------------------------------------------------------------------

namespace app {
struct Named {
  static constexpr std::string_view actor_type_name = "app.Named";
  int x = 0;
  MSGPACK_DEFINE(x);
};
struct Plain {
  int x = 0;
  MSGPACK_DEFINE(x);
};
}  // namespace app

TEST_CASE("actor: a message type's id is the hash of its name, which a type can fix", "[actor]") {
  STATIC_REQUIRE(mp::detail::message_type_name<app::Plain>() == "app::Plain");
  STATIC_REQUIRE(mp::detail::message_type_name<std::string>().find("basic_string") != std::string_view::npos);
  STATIC_REQUIRE(mp::detail::message_type_id<app::Named>() == mp::detail::fnv1a("app.Named"));
  STATIC_REQUIRE(mp::detail::message_type_id<app::Plain>() != mp::detail::message_type_id<app::Named>());
  auto a = mp::spawn([](mp::ActorContext&) -> mp::Behavior { return {[](const app::Named& n) { return n.x; }}; });
  CHECK(a.request<int>(app::Named{4}, patience) == 4);
  a.stop();
}
