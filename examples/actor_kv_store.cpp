// A key-value store actor registered under a name, found by other processes with whereis.
// Python's nearest is a Manager dict shared by address and authkey; here the "address" is a
// host-wide name for the same user, and the store is an ordinary actor:
//
//   store = Manager().dict()          # then in any process that has it:
//   store['answer'] = 42; store.get('answer')
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

struct Set {
  std::string key;
  std::string value;
  MSGPACK_DEFINE(key, value);
};
struct Lookup {
  std::string key;
  MSGPACK_DEFINE(key);
};

mp::Behavior kv_store(mp::ActorContext&) {
  auto data = std::make_shared<std::map<std::string, std::string>>();
  return {
      [data](const Set& s) { (*data)[s.key] = s.value; },
      [data](const Lookup& l) -> std::optional<std::string> {
        auto it = data->find(l.key);
        if (it == data->end()) return std::nullopt;
        return it->second;
      },
  };
}

// Knows only the store's name.
void writer() {
  auto store = mp::whereis("example-kv-store");
  example::check(bool(store), "the writer finds the store by name");
  store.request(Set{"language", "C++"}, 10s);  // waits until stored
  store.request(Set{"answer", "42"}, 10s);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  auto store = mp::spawn(mp::ActorOptions{.name = "example-kv-store"}, kv_store);
  try {
    mp::spawn(mp::ActorOptions{.name = "example-kv-store"}, kv_store);
    example::check(false, "a second actor cannot take the name");
  } catch (const mp::ValueError& e) {
    std::cout << "second spawn refused: " << e.what() << std::endl;
  }
  mp::Process w(writer);
  w.start();
  w.join();
  example::check(w.exitcode() == 0, "the writer succeeded");
  auto found = mp::whereis("example-kv-store");
  example::check(found == store, "whereis gives the same actor");
  std::cout << "answer = " << found.request<std::optional<std::string>>(Lookup{"answer"}, 10s).value_or("None")
            << std::endl;
  std::cout << "missing = " << found.request<std::optional<std::string>>(Lookup{"missing"}, 10s).value_or("None")
            << std::endl;
  store.stop();
  std::cout << "after stop, whereis finds: " << (mp::whereis("example-kv-store") ? "an actor" : "nothing")
            << std::endl;
}
