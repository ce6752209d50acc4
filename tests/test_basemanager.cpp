// BaseManager: typeids served by a server of your own, on a Unix path or TCP, behind the authkey;
// hostile and broken clients; and the seed's job queue across two network namespaces ("hosts").
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "../examples/job_queue.hpp"
#include "ipc_test_support.hpp"
#include "two_hosts.hpp"
#include "multiproc/detail/errc.hpp"

using namespace multiproc_test;

namespace {

struct Counter {
  int value = 0;
  int add(int n) { return value += n; }
  int get() const { return value; }
  void fail(std::string why) { throw std::invalid_argument(why); }
};

void register_counter(mp::BaseManager& m, mp::Scope scope = mp::Scope::per_call) {
  m.register_class<Counter>("Counter", scope).expose("add", &Counter::add).expose("get", &Counter::get).expose("fail", &Counter::fail);
}

std::string unique_unix_address() {
  return (std::filesystem::temp_directory_path() / ("mp-basemanager-" + std::to_string(::getpid()) + "-" +
                                                    std::to_string(std::rand()) + ".sock")).string();
}

// The reply to one raw request frame on an authenticated connection: [code, ...].
mp::Object raw_exchange(mp::Connection& conn, std::string_view payload) {
  conn.send_bytes(payload);
  REQUIRE(conn.poll(patience));
  return mp::Object::from_msgpack(conn.recv_bytes());
}

std::int64_t reply_code(const mp::Object& reply) { return reply.as_array().at(0).as<std::int64_t>(); }

void serve_in_child(std::string address, std::string authkey, mp::Connection report) {
  mp::BaseManager manager(address, authkey);
  register_counter(manager, mp::Scope::shared);
  manager.get_server().serve_forever([&](const std::string& bound) { report.send(bound); });
}

void run_worker(std::string address) { job_queue::worker(address, "jobs"); }

void master_on_host(std::string netns, mp::Connection ready) {
  enter_netns(netns);
  auto results = job_queue::master("10.213.0.1:58881", "jobs", [&](const std::string&) { ready.send(true); });
  std::sort(results.begin(), results.end());
  if (results != job_queue::expected_results()) throw std::runtime_error("the master got wrong results");
}

void worker_on_host(std::string netns) {
  enter_netns(netns);
  if (job_queue::worker("10.213.0.1:58881", "jobs") != 20) throw std::runtime_error("the worker ran the wrong number of jobs");
}

} // namespace

TEST_CASE("basemanager: the seed's job queue runs master and worker over TCP", "[basemanager]") {
  Team team;
  auto results = job_queue::master("127.0.0.1:0", "jobs", [&](const std::string& address) { team.start(run_worker, address); });
  for (int code : team.join_all()) CHECK(code == 0);
  std::sort(results.begin(), results.end());
  CHECK(results == job_queue::expected_results());
}

TEST_CASE("basemanager: the seed's job queue runs master and worker on two hosts", "[basemanager][netns]") {
  if (::geteuid() != 0 || !run_quietly("ip -V")) {
    WARN("skipped: creating network namespaces needs root and iproute2");
    return;
  }
  TwoHosts hosts;
  REQUIRE(hosts.ok());
  auto [ready_r, ready_w] = mp::Pipe(false);
  Team team;
  team.start(master_on_host, hosts.a(), ready_w);
  REQUIRE(ready_r.poll(patience));
  CHECK(ready_r.recv<bool>());
  team.start(worker_on_host, hosts.b());
  for (int code : team.join_all()) CHECK(code == 0);
}

TEST_CASE("basemanager: a shared typeid gives every caller one object, a per-call typeid a new one", "[basemanager]") {
  mp::BaseManager manager(unique_unix_address(), "secret");
  manager.register_typeid("shared_dict", mp::Builtin::dict, mp::Scope::shared);
  manager.register_typeid("bounded_queue", mp::Builtin::Queue, mp::Scope::per_call, 1);
  manager.start();
  auto d1 = manager.proxy<mp::DictProxy<int, int>>("shared_dict");
  auto d2 = manager.proxy<mp::DictProxy<int, int>>("shared_dict");
  d1[1] = 1;
  CHECK(d2.at(1) == 1);
  auto q1 = manager.proxy<mp::QueueProxy<int>>("bounded_queue");
  auto q2 = manager.proxy<mp::QueueProxy<int>>("bounded_queue");
  q1.put(1);
  CHECK(q1.full());  // the registered default maxsize, 1
  CHECK(q2.empty());
  auto q3 = manager.proxy<mp::QueueProxy<int>>("bounded_queue", 3);  // a caller's arguments win
  q3.put(1);
  CHECK_FALSE(q3.full());
  auto plain = manager.proxy<mp::ListProxy<int>>("list");  // built-in kinds need no registration
  plain.append(1);
  CHECK(plain.size() == 1);
  std::string path = manager.address();
  manager.shutdown();
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("basemanager: a registered class's exposed methods are called by name", "[basemanager]") {
  mp::BaseManager manager("127.0.0.1:0", "secret");
  register_counter(manager);
  manager.start();
  auto c = manager.proxy("Counter");
  CHECK(c.call<int>("add", 5) == 5);
  CHECK(c.call<int>("add", 2) == 7);
  CHECK(c.call<int>("get") == 7);
  CHECK(manager.proxy("Counter").call<int>("get") == 0);  // per call: a new counter
  CHECK_THROWS_AS(c.call("nope"), mp::AttributeError);
  CHECK_THROWS_AS(c.call<int>("add", std::string("x")), mp::TypeError);
  try {
    c.call("fail", std::string("on purpose"));
    FAIL("fail() should throw");
  } catch (const mp::RemoteError& e) {
    CHECK(e.type_name() == "std::invalid_argument");
    CHECK_THAT(e.what(), Catch::Contains("on purpose"));
  }
  CHECK(c.call<int>("get") == 7);  // the object survived its method's exception
}

TEST_CASE("basemanager: unknown typeids, methods and objects are errors", "[basemanager]") {
  mp::BaseManager manager("127.0.0.1:0", "secret");
  manager.start();
  CHECK_THROWS_AS(manager.proxy("no_such_typeid"), mp::ValueError);
  auto d = manager.proxy<mp::DictProxy<int, int>>("dict");
  mp::AutoProxy as_auto(d.ref());
  CHECK_THROWS_AS(as_auto.call("no_such_method"), mp::AttributeError);
  mp::AutoProxy ghost(mp::detail::ProxyRef{d.ref().endpoint, 999999});
  CHECK_THROWS_AS(ghost.call("get"), mp::KeyError);
  d[1] = 2;
  CHECK(d.at(1) == 2);
}

TEST_CASE("basemanager: a wrong authkey is AuthenticationError and the server keeps serving", "[basemanager]") {
  mp::BaseManager manager("127.0.0.1:0", "right key");
  manager.start();
  mp::BaseManager intruder(manager.address(), "wrong key");
  CHECK_THROWS_AS(intruder.connect(), mp::AuthenticationError);
  CHECK_THROWS_AS(intruder.proxy<mp::ListProxy<int>>("list"), mp::AuthenticationError);
  mp::BaseManager friendly(manager.address(), "right key");
  friendly.connect();
  auto l = friendly.proxy<mp::ListProxy<int>>("list");
  l.append(1);
  CHECK(l.copy() == std::vector<int>{1});
}

TEST_CASE("basemanager: garbage, malformed and truncated frames never reach an object or crash the server",
          "[basemanager]") {
  mp::BaseManager manager(unique_unix_address(), "key");
  manager.start();
  auto d = manager.proxy<mp::DictProxy<int, int>>("dict");
  d[1] = 1;

  SECTION("garbage instead of the handshake") {
    mp::connection::Client raw(manager.address());  // no authkey: no handshake from this side
    REQUIRE(raw.poll(patience));
    raw.recv_bytes();  // the server's challenge
    raw.send_bytes("this is not an HMAC digest");
    REQUIRE(raw.poll(patience));
    CHECK(raw.recv_bytes().find("FAILURE") != std::string::npos);
  }
  SECTION("authenticated, but not MessagePack, or not a request") {
    mp::connection::Client conn(manager.address(), std::string("key"));
    CHECK(reply_code(raw_exchange(conn, "\xc1\xc1\xc1")) == static_cast<int>(mp::errc::error));
    CHECK(reply_code(raw_exchange(conn, mp::detail::encode(std::vector<int>{1, 2, 3}))) ==
          static_cast<int>(mp::errc::error));
    CHECK(reply_code(raw_exchange(conn, mp::detail::encode(std::make_tuple(d.id(), "set", 5)))) ==
          static_cast<int>(mp::errc::error));
    CHECK(reply_code(raw_exchange(conn, mp::detail::encode(std::make_tuple(d.id(), "set", std::vector<int>{})))) ==
          static_cast<int>(mp::errc::type_error));
    CHECK(reply_code(raw_exchange(conn, mp::detail::encode(std::make_tuple(d.id(), "getitem", std::vector<int>{1})))) ==
          0);
  }
  SECTION("two requests in one write get two replies, in order") {
    mp::connection::Client conn(manager.address(), std::string("key"));
    std::string both;
    mp::detail::append_frame(both, mp::detail::encode(std::make_tuple(d.id(), "set", std::vector<int>{5, 6})));
    mp::detail::append_frame(both, mp::detail::encode(std::make_tuple(d.id(), "getitem", std::vector<int>{5})));
    mp::detail::write_bytes(conn.fileno(), both);
    REQUIRE(conn.poll(patience));
    CHECK(reply_code(mp::Object::from_msgpack(conn.recv_bytes())) == 0);
    REQUIRE(conn.poll(patience));
    CHECK(mp::Object::from_msgpack(conn.recv_bytes()).as_array().at(1) == mp::Object(6));
  }
  SECTION("a truncated frame, then the connection closes") {
    mp::connection::Client conn(manager.address(), std::string("key"));
    const char partial[] = "\x00\x00\x00\x64only ten b";  // announces 100 bytes, sends 10
    REQUIRE(::write(conn.fileno(), partial, sizeof partial - 1) == static_cast<ssize_t>(sizeof partial - 1));
    conn.close();
  }
  SECTION("an absurd frame length") {
    mp::connection::Client conn(manager.address(), std::string("key"));
    const char huge[] = "\x7f\xff\xff\xff";
    REQUIRE(::write(conn.fileno(), huge, 4) == 4);
    REQUIRE(conn.poll(patience));
    CHECK_THROWS_AS(conn.recv_bytes(), mp::EOFError);  // refused: the server hung up
  }
  CHECK(d.at(1) == 1);  // the server still serves
  d[2] = 2;
  CHECK(d.at(2) == 2);
}

TEST_CASE("basemanager: get_server().serve_forever() serves from the calling process", "[basemanager]") {
  auto [report_r, report_w] = mp::Pipe(false);
  Team team;
  auto& server = team.start(serve_in_child, std::string("127.0.0.1:0"), std::string("k"), report_w);
  REQUIRE(report_r.poll(patience));
  auto address = report_r.recv<std::string>();
  mp::BaseManager client(address, "k");
  client.connect();
  client.proxy("Counter").call<int>("add", 3);
  CHECK(client.proxy("Counter").call<int>("get") == 3);  // shared scope: the same counter
  server.kill();  // SIGKILL: the forked test binary's signal handlers must not report a failure
  join_or_kill(server);
  CHECK_THROWS_AS(client.proxy("Counter"), mp::Error);
}

TEST_CASE("basemanager: start() twice is ProcessError; shutdown() of a client leaves the server", "[basemanager]") {
  mp::BaseManager manager("127.0.0.1:0", "k");
  manager.start();
  CHECK_THROWS_AS(manager.start(), mp::ProcessError);
  {
    mp::BaseManager client(manager.address(), "k");
    client.connect();
    client.shutdown();
  }
  manager.connect();
}

TEST_CASE("basemanager: a server that cannot listen makes start() throw ProcessError", "[basemanager]") {
  mp::BaseManager first(unique_unix_address(), "k");
  first.start();
  mp::BaseManager second(first.address(), "k");
  CHECK_THROWS_AS(second.start(), mp::ProcessError);
  first.connect();  // the first server and its socket are untouched
}
