// Actors on nodes (ActorOptions::node): an actor spawned on a node process (loopback, or another
// network namespace) reached through its ActorRef from this process and from local actors.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <tuple>
#include <string>
#include <thread>
#include <vector>

#include "ipc_test_support.hpp"
#include "programs/proc_children.hpp"
#include "two_hosts.hpp"

using namespace multiproc_test;

namespace {

const std::string good_key = "the actor node key";
constexpr auto heartbeat_bound = std::chrono::seconds(7);  // 5 s, and 2 s for a loaded machine

struct Add {
  int n = 0;
  MSGPACK_DEFINE(n);
};
struct Get {
  int unused = 0;
  MSGPACK_DEFINE(unused);
};
struct WhoAmI {  // answers {getpid(), getppid()}
  int unused = 0;
  MSGPACK_DEFINE(unused);
};
struct Ask {  // requests Get of target and answers with its answer
  mp::ActorRef target;
  MSGPACK_DEFINE(target);
};
struct Nap {
  int ms = 0;
  MSGPACK_DEFINE(ms);
};
struct Watch {  // monitors target; its Down goes to the watcher's report connection
  mp::ActorRef target;
  MSGPACK_DEFINE(target);
};

struct Echo {  // answers with the ref it was sent
  mp::ActorRef ref;
  MSGPACK_DEFINE(ref);
};
struct AddressOf {  // answers with the address of the ref it was sent, as the receiver sees it
  mp::ActorRef ref;
  MSGPACK_DEFINE(ref);
};
struct StopIt {  // stops target (1 s grace) and answers whether it still runs
  mp::ActorRef target;
  MSGPACK_DEFINE(target);
};

struct Keep {  // keeps ref, for UseKept
  mp::ActorRef ref;
  MSGPACK_DEFINE(ref);
};
struct UseKept {  // requests Get of the kept ref and answers with its answer
  int unused = 0;
  MSGPACK_DEFINE(unused);
};
struct Self {  // the local actor answers with its own ref
  int unused = 0;
  MSGPACK_DEFINE(unused);
};
struct ThroughAnswer {  // asks target for its own ref, then Get of that ref: {its address as seen, the answer}
  mp::ActorRef target;
  MSGPACK_DEFINE(target);
};
struct ViaHere {  // starts a helper actor on this host (answering Get with 3) and asks `via` to Ask it
  mp::ActorRef via;
  MSGPACK_DEFINE(via);
};

int ask(const Ask& a) { return a.target.request<int>(Get{}, patience); }
mp::Behavior node_counter(mp::ActorContext&, int start);

int ask_via_here(const ViaHere& v) {
  auto helper = mp::spawn(node_counter, 3);
  int answer = v.via.request<int>(Ask{helper}, patience);
  helper.stop();
  return answer;
}

// The actor the nodes run: a counter that also asks others.
mp::Behavior node_counter(mp::ActorContext&, int start) {
  auto total = std::make_shared<int>(start);
  auto kept = std::make_shared<mp::ActorRef>();
  return mp::Behavior([total](const Add& a) { *total += a.n; }, [total](const Get&) { return *total; },
                      [](const WhoAmI&) { return std::vector<int>{::getpid(), ::getppid()}; }, ask,
                      ask_via_here, [](const Echo& e) { return e.ref; },
                      [kept](const Keep& k) { *kept = k.ref; },
                      [](const ThroughAnswer& t) {
                        auto ref = t.target.request<mp::ActorRef>(Self{}, patience);
                        return std::make_tuple(ref.address(), ref.request<int>(Get{}, patience));
                      },
                      [kept](const UseKept&) { return kept->request<int>(Get{}, patience); }, [](const AddressOf& a) { return a.ref.address(); },
                      [](const StopIt& s) {
                        s.target.stop(std::chrono::seconds(1));
                        return s.target.alive();
                      },
                      [](const Nap& n) { std::this_thread::sleep_for(std::chrono::milliseconds(n.ms)); });
}
MULTIPROC_EXPORT(node_counter);

// In a child process: gives keeper ref, along this process's own link to keeper's node.
void hand_over(mp::ActorRef keeper, mp::ActorRef ref) { keeper.request<void>(Keep{ref}, patience); }

// An actor the nodes run that answers Get with the answer of the actor it was spawned with.
mp::Behavior node_relay(mp::ActorContext&, mp::ActorRef target) {
  return mp::Behavior([target](const Get&) { return target.request<int>(Get{}, patience); });
}
MULTIPROC_EXPORT(node_relay);

mp::Behavior not_exported(mp::ActorContext&) { return mp::Behavior([](const Get&) { return 0; }); }

// A local actor: answers Get with 7, asks others, reports the Down of what it watches.
mp::Behavior local_actor(mp::ActorContext& ctx, mp::Connection report) {
  return mp::Behavior([](const Get&) { return 7; }, ask, [&ctx](const Watch& w) { ctx.monitor(w.target); },
                      [&ctx](const Self&) { return ctx.self(); },
                      [report](const mp::Down& d) mutable { report.send(d.exitcode); });
}

void serve_at(const std::string& address, mp::Connection& report) {
  mp::serve_node(address, good_key, [&](const std::string& bound) { report.send(bound); });
}

void serve_in_child(mp::Connection report) { serve_at("127.0.0.1:0", report); }

void serve_on_host(std::string netns, mp::Connection report) {
  enter_netns(netns);
  serve_at("10.213.0.2:0", report);
}

// A node process on loopback, killed and reaped at the end of the test.
class Node {
public:
  Node() {
    auto [r, w] = mp::Pipe(false);
    process_ = mp::Process(serve_in_child, w);
    process_.start();
    w.close();
    REQUIRE(r.poll(patience));
    address_ = r.recv<std::string>();
  }
  ~Node() { kill(); }
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  void kill() {
    if (process_.is_alive()) process_.kill();
    process_.join();
  }
  const std::string& address() const { return address_; }
  pid_t pid() const { return process_.pid().value_or(-1); }
  bool alive() { return process_.is_alive(); }

private:
  mp::Process process_;
  std::string address_;
};

mp::ActorOptions on(const std::string& node, std::string key = good_key) {
  return mp::ActorOptions{.node = node, .authkey = std::move(key)};
}

// Waits (polling /proc, nothing else to wait on) until pid has no children besides `allowed`.
bool children_end(pid_t pid, std::vector<pid_t> allowed = {}) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  for (;;) {
    auto kids = children_of(pid);
    bool only_allowed = std::all_of(kids.begin(), kids.end(), [&](const ChildEntry& c) {
      return std::find(allowed.begin(), allowed.end(), c.pid) != allowed.end();
    });
    if (only_allowed) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Waits (polling: an actor that is not ours has no end to wait on) until a's process has ended.
bool ends_within(const mp::ActorRef& a, std::chrono::milliseconds bound) {
  for (auto deadline = std::chrono::steady_clock::now() + bound; a.alive();) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

template <class Duration>
double seconds(Duration d) {
  return std::chrono::duration<double>(d).count();
}

} // namespace

TEST_CASE("actor node: MULTIPROC_EXPORT registers an actor init as an actor, not as a task", "[actor_node]") {
  const auto* entry = mp::detail::find_export("node_counter");
  REQUIRE(entry != nullptr);
  CHECK(entry->actor != nullptr);
  CHECK(entry->star == nullptr);
  CHECK(entry->each == nullptr);
}

TEST_CASE("actor node: an actor spawned on a node answers send, request and request_async, and stops",
          "[actor_node]") {
  Node node;
  auto counter = mp::spawn(on(node.address()), node_counter, 40);
  REQUIRE(counter);
  counter.send(Add{2});
  CHECK(counter.request<int>(Get{}, patience) == 42);
  CHECK(counter.request_async<int>(Get{}).get(patience) == 42);
  auto who = counter.request<std::vector<int>>(WhoAmI{}, patience);
  CHECK(who.at(0) == counter.pid());  // the remote pid
  CHECK(who.at(1) == node.pid());     // a child of the node
  CHECK(counter.alive());
  counter.stop();
  CHECK(!counter.alive());
  CHECK_THROWS_AS(counter.request<int>(Get{}, patience), mp::ActorExited);
  // Neither the actor nor this process's link process is left.
  CHECK(children_end(node.pid()));
  CHECK(children_end(::getpid(), {node.pid()}));
  CHECK(node.alive());
}

TEST_CASE("actor node: a local actor requests an actor on a node, and the actor on the node a local one",
          "[actor_node]") {
  Node node;
  auto [r, w] = mp::Pipe(false);
  auto counter = mp::spawn(on(node.address()), node_counter, 5);
  auto local = mp::spawn(local_actor, w);
  CHECK(local.request<int>(Ask{counter}, patience) == 5);    // local -> node, in a message
  CHECK(counter.request<int>(Ask{local}, patience) == 7);    // node -> local, in a message
  local.stop();
  counter.stop();
  CHECK(children_end(node.pid()));
  CHECK(children_end(::getpid(), {node.pid()}));
}

TEST_CASE("actor node: a local actor's ref sent to (or spawned with) an actor on a node is routed back through "
          "the node, and returns as itself",
          "[actor_node]") {
  Node node;
  auto [r, w] = mp::Pipe(false);
  auto counter = mp::spawn(on(node.address()), node_counter, 5);
  auto local = mp::spawn(local_actor, w);
  auto seen = counter.request<std::string>(AddressOf{local}, patience);
  CHECK(seen == node.address() + "!" + seen.substr(seen.find('!') + 1));  // node!route/@address
  CHECK(seen.ends_with("/" + local.address()));
  CHECK(counter.request<mp::ActorRef>(Echo{local}, patience) == local);
  CHECK(counter.request<int>(Ask{local}, patience) == 7);
  CHECK(counter.request<int>(ViaHere{local}, patience) == 3);  // and the node's refs along it
  auto [seen_in_answer, answered] = counter.request<std::tuple<std::string, int>>(ThroughAnswer{local}, patience);
  CHECK(seen_in_answer.find('!') != std::string::npos);  // a ref in an answer along the way back is routed too
  CHECK(answered == 7);
  CHECK(counter.request<mp::ActorRef>(Echo{counter}, patience) == counter);  // a node's ref stays as it is
  auto relay = mp::spawn(on(node.address()), node_relay, local);               // a ref among spawn's arguments
  CHECK(relay.request<int>(Get{}, patience) == 7);
  relay.stop();
  CHECK(!counter.request<bool>(StopIt{local}, patience));  // stop() along the route: ended, as the node sees it
  CHECK(ends_within(local, patience));                     // its process ends here (it closes its sockets first)
  counter.stop();
  CHECK(children_end(node.pid()));
  CHECK(children_end(::getpid(), {node.pid()}));
}

namespace {

// A listening socket at the abstract address `@name` (nonblocking), or -1.
int listen_at(const std::string& name) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path + 1, name.data(), name.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 || ::listen(fd, 8) != 0) {
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

mp::ActorRef ref_at(const std::string& address) {
  return mp::detail::decode<mp::ActorRef>(mp::detail::encode(std::make_tuple(std::string(), 1, address)));
}

} // namespace

TEST_CASE("actor node: the way back reaches only actors' sockets: a routed ref to another socket of this host is "
          "refused",
          "[actor_node]") {
  Node node;
  auto [r, w] = mp::Pipe(false);
  auto counter = mp::spawn(on(node.address()), node_counter, 5);
  auto prober = mp::spawn(on(node.address()), node_counter, 0);
  auto local = mp::spawn(local_actor, w);
  auto seen = counter.request<std::string>(AddressOf{local}, patience);  // node!route/@<local's address>
  std::string other = "multiproc-test-not-an-actor-" + std::to_string(::getpid());
  int fd = listen_at(other);
  REQUIRE(fd >= 0);
  auto forged = ref_at(seen.substr(0, seen.find("/@") + 1) + "@" + other);
  try {
    prober.request<int>(Ask{forged}, patience);
    FAIL("the node reached a socket that is not an actor's");
  } catch (const mp::RemoteError& e) {
    CHECK_THAT(e.what(), Catch::Matchers::Contains("only reach the actors"));
  }
  CHECK(::accept(fd, nullptr, nullptr) < 0);  // nobody connected
  CHECK(errno == EAGAIN);
  ::close(fd);
  CHECK_THROWS_AS(prober.request<int>(Get{}, patience), mp::ActorExited);  // its handler threw: it crashed
  CHECK(counter.request<int>(Ask{local}, patience) == 7);                  // the route itself still works
  local.stop();
  counter.stop();
  CHECK(children_end(node.pid()));
  CHECK(children_end(::getpid(), {node.pid()}));
}

TEST_CASE("actor node: a way back ends with the link it names: a request along it is then ActorExited, not a hang",
          "[actor_node]") {
  Node node;
  auto [r, w] = mp::Pipe(false);
  auto keeper = mp::spawn(on(node.address()), node_counter, 5);
  auto local = mp::spawn(local_actor, w);
  mp::Process courier(hand_over, keeper, local);  // gives keeper local's ref along its own link
  courier.start();
  join_or_kill(courier);
  REQUIRE(courier.exitcode() == 0);
  // The courier's link ends with it, its way back a moment later: until then the kept ref works.
  std::string outcome;
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       outcome.empty() && std::chrono::steady_clock::now() < deadline;) {
    try {
      int answer = keeper.request<int>(UseKept{}, patience);
      CHECK(answer == 7);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } catch (const mp::RemoteError& e) {
      outcome = e.type_name();
    }
  }
  CHECK(outcome == "multiproc::ActorExited");
  CHECK(ends_within(keeper, patience));  // its handler threw: it crashed
  CHECK(local.alive());         // only the way to it has ended
  local.stop();
  CHECK(children_end(node.pid()));
  CHECK(children_end(::getpid(), {node.pid()}));
}

TEST_CASE("actor node: an init that is not exported is ValueError naming MULTIPROC_EXPORT", "[actor_node]") {
  Node node;
  CHECK_THROWS_WITH(mp::spawn(on(node.address()), not_exported), Catch::Contains("MULTIPROC_EXPORT"));
  CHECK_THROWS_AS(mp::spawn(on(node.address()), not_exported), mp::ValueError);
  auto capturing = [n = 1](mp::ActorContext&) { return mp::Behavior([n](const Get&) { return n; }); };
  CHECK_THROWS_AS(mp::spawn(on(node.address()), capturing), mp::ValueError);
  CHECK_THROWS_AS(mp::spawn(on(node.address(), ""), node_counter, 1), mp::ValueError);
  CHECK(children_end(::getpid(), {node.pid()}));
}

TEST_CASE("actor node: a wrong key is AuthenticationError and the node keeps serving", "[actor_node]") {
  Node node;
  CHECK_THROWS_AS(mp::spawn(on(node.address(), "not the key"), node_counter, 1), mp::AuthenticationError);
  CHECK(node.alive());
  auto counter = mp::spawn(on(node.address()), node_counter, 3);
  CHECK(counter.request<int>(Get{}, patience) == 3);
  counter.stop();
  CHECK(children_end(::getpid(), {node.pid()}));
}

TEST_CASE("actor node: a killed node ends its actors: monitors get Down, pending requests ActorExited",
          "[actor_node]") {
  auto node = std::make_unique<Node>();
  auto [r, w] = mp::Pipe(false);
  auto counter = mp::spawn(on(node->address()), node_counter, 0);
  auto watcher = mp::spawn(local_actor, w);
  watcher.send(Watch{counter});
  CHECK(watcher.request<int>(Get{}, patience) == 7);  // the Watch is handled
  auto pending = counter.request_async<void>(Nap{60000});
  auto killed_at = std::chrono::steady_clock::now();
  node.reset();
  CHECK_THROWS_AS(pending.get(patience), mp::ActorExited);
  REQUIRE(r.poll(patience));
  auto took = std::chrono::steady_clock::now() - killed_at;
  r.recv<int>();
  INFO("ended after " << seconds(took) << " s");
  CHECK(took < heartbeat_bound);
  CHECK(!counter.alive());
  watcher.stop();
  CHECK(children_end(::getpid()));
}

TEST_CASE("actor node: stop kills an actor on a node that does not stop within the grace", "[actor_node]") {
  Node node;
  auto sleeper = mp::spawn(on(node.address()), node_counter, 0);
  sleeper.send(Nap{60000});
  auto asked_at = std::chrono::steady_clock::now();
  sleeper.stop(std::chrono::milliseconds(200));
  INFO("stopped after " << seconds(std::chrono::steady_clock::now() - asked_at) << " s");
  CHECK(std::chrono::steady_clock::now() - asked_at < std::chrono::seconds(5));
  CHECK(!sleeper.alive());
  CHECK(children_end(node.pid()));
  CHECK(node.alive());
}

namespace {

// Spawns an actor on the node at address, says it answers, and exits without stopping it.
void spawn_and_leave(std::string address, mp::Connection report) {
  auto counter = mp::spawn(on(address), node_counter, 1);
  report.send(counter.request<int>(Get{}, patience));
}

} // namespace

TEST_CASE("actor node: an actor on a node ends with the process that spawned it", "[actor_node]") {
  Node node;
  auto [r, w] = mp::Pipe(false);
  mp::Process spawner(spawn_and_leave, node.address(), w);
  spawner.start();
  REQUIRE(r.poll(patience));
  CHECK(r.recv<int>() == 1);
  join_or_kill(spawner);
  CHECK(spawner.exitcode() == 0);
  CHECK(children_end(node.pid()));
}

namespace {

// In network namespace a: an actor on the node at address (another namespace) answers this
// process and a local actor; then the wire is cut (report says "cut") and a pending request must
// fail. Reports the outcome.
void use_node_from_host(std::string netns, std::string address, mp::Connection report) {
  enter_netns(netns);
  auto [r, w] = mp::Pipe(false);
  auto counter = mp::spawn(on(address), node_counter, 11);
  auto local = mp::spawn(local_actor, w);
  int direct = counter.request<int>(Get{}, patience);
  int via_local = local.request<int>(Ask{counter}, patience);
  int back_here = counter.request<int>(Ask{local}, patience);  // only the route reaches this host
  int spawned_with = mp::spawn(on(address), node_relay, local).request<int>(Get{}, patience);
  int node_helper = counter.request<int>(ViaHere{local}, patience);  // a ref of the node's host, routed
  int in_answer = std::get<1>(counter.request<std::tuple<std::string, int>>(ThroughAnswer{local}, patience));
  report.send(std::vector<int>{direct, via_local, back_here, spawned_with, node_helper, in_answer});
  auto pending = counter.request_async<void>(Nap{60000});
  report.recv<std::string>();  // the wire is cut now
  std::string outcome = "answered";
  try {
    pending.get(patience);
  } catch (const mp::ActorExited&) {
    outcome = "ActorExited";
  } catch (const std::exception& e) {
    outcome = e.what();
  }
  report.send(outcome);
  local.stop();
}

} // namespace

TEST_CASE("actor node: an actor on another host works like a local one, and ends for us when the wire is cut",
          "[actor_node][netns]") {
  if (!can_make_hosts()) {
    WARN("skipped: creating network namespaces needs root and iproute2");
    return;
  }
  TwoHosts hosts;
  REQUIRE(hosts.ok());
  auto [node_r, node_w] = mp::Pipe(false);
  Team team;
  team.start(serve_on_host, hosts.b(), node_w);
  REQUIRE(node_r.poll(patience));
  auto address = node_r.recv<std::string>();
  auto [here, there] = mp::Pipe(true);
  team.start(use_node_from_host, hosts.a(), address, there);
  REQUIRE(here.poll(patience));
  CHECK(here.recv<std::vector<int>>() == std::vector<int>{11, 11, 7, 7, 3, 7});
  REQUIRE(hosts.cut());
  auto cut_at = std::chrono::steady_clock::now();
  here.send(std::string("cut"));
  REQUIRE(here.poll(patience));
  auto took = std::chrono::steady_clock::now() - cut_at;
  CHECK(here.recv<std::string>() == "ActorExited");
  INFO("ended after " << seconds(took) << " s");
  CHECK(took < heartbeat_bound);
  join_or_kill(team[1]);
  CHECK(team[1].exitcode() == 0);
}
