// A service tree: a supervisor over a key-value store and a subtree of square workers, each found
// by its name. Python's multiprocessing has no supervisors; Erlang/OTP's would read:
//
//   init(_) -> {ok, {#{strategy => one_for_one},
//                    [#{id => kv, start => {kv, start_link, []}},
//                     #{id => workers, type => supervisor, start => {workers_sup, start_link, []}}]}}.
//
// Any of them is killed with SIGKILL from outside, and the client carries on: it asks by name
// again and the new incarnation answers. The children's init functions are plain functions, so
// the tree runs under every start method (MULTIPROC_START_METHOD); a child supervisor's own
// process is always forked, as it holds its children's specs.
#include <signal.h>

#include <iostream>
#include <map>
#include <memory>
#include <string>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

struct Set {
  std::string key;
  int value = 0;
  MSGPACK_DEFINE(key, value);
};
struct Lookup {
  std::string key;
  MSGPACK_DEFINE(key);
};
struct Square {
  int x = 0;
  MSGPACK_DEFINE(x);
};

mp::Behavior kv_store(mp::ActorContext&) {
  auto data = std::make_shared<std::map<std::string, int>>();
  return {
      [data](const Set& s) { (*data)[s.key] = s.value; },
      [data](const Lookup& l) { return data->count(l.key) ? data->at(l.key) : -1; },
  };
}

mp::Behavior square_worker(mp::ActorContext&) {
  return {[](const Square& s) { return s.x * s.x; }};
}

mp::ChildSpec named(mp::ChildSpec spec, std::string name) {
  spec.name = std::move(name);
  return spec;
}

// Asks whichever actor holds `name` now. One that dies before it answers is asked again: its
// supervisor holds the name while it restarts, so whereis waits for the new incarnation.
template <class R, class M>
R ask(const std::string& name, const M& msg) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    try {
      if (auto actor = mp::whereis(name)) return actor.template request<R>(msg, 5s);
    } catch (const mp::ActorExited&) {
    }
  }
  throw std::runtime_error(name + " did not come back");
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Supervisor services(
      {.strategy = mp::Strategy::one_for_one, .intensity = 5, .period = 5s},
      {named(mp::child("kv", kv_store), "example-tree-kv"),
       mp::supervisor_child("workers", {.strategy = mp::Strategy::one_for_all, .intensity = 5, .period = 5s},
                            {named(mp::child("w1", square_worker), "example-tree-w1"),
                             named(mp::child("w2", square_worker), "example-tree-w2")})});

  int answered = 0;
  for (int i = 1; i <= 300; ++i) {
    if (i == 100) {
      std::cout << "kill -9 the key-value store" << std::endl;
      ::kill(mp::whereis("example-tree-kv").pid(), SIGKILL);
    }
    if (i == 200) {
      std::cout << "kill -9 worker w1" << std::endl;
      ::kill(mp::whereis("example-tree-w1").pid(), SIGKILL);
    }
    auto worker = i % 2 ? "example-tree-w1" : "example-tree-w2";
    int square = ask<int>(worker, Square{i});
    example::check(square == i * i, "a worker squares");
    ask<void>("example-tree-kv", Set{"last", square});
    example::check(ask<int>("example-tree-kv", Lookup{"last"}) == square, "the store keeps what it was given");
    ++answered;
  }
  std::cout << "client done: " << answered << " rounds answered" << std::endl;
  for (auto& info : services.which_children())
    std::cout << info.id << (info.is_supervisor ? " (supervisor)" : "") << ": restarts " << info.restarts << std::endl;
  services.stop();
  std::cout << "tree stopped" << std::endl;
}
