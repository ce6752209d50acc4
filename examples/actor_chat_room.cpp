// A chat room (publish/subscribe): members are actors whose refs travel inside Join messages;
// the room forwards every Post to each member, which keeps what it heard. Python's nearest is a
// Manager Queue per subscriber, with the publisher holding the list of queues.
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

struct Join {
  mp::ActorRef member;
  MSGPACK_DEFINE(member);
};
struct Post {
  std::string from, text;
  MSGPACK_DEFINE(from, text);
};
struct Heard {
  MSGPACK_DEFINE();
};

mp::Behavior room(mp::ActorContext& ctx) {
  auto members = std::make_shared<std::vector<mp::ActorRef>>();
  return {
      [&ctx, members](const Join& j) {
        members->push_back(j.member);
        ctx.monitor(j.member);  // a member that ends leaves the room
      },
      [members](const Post& p) {
        for (auto& m : *members) m.send(p);
      },
      [members](const mp::Down& d) { std::erase(*members, d.actor); },
  };
}

mp::Behavior member(mp::ActorContext&, std::string name) {
  auto heard = std::make_shared<std::vector<std::string>>();
  return {
      [name, heard](const Post& p) { heard->push_back(name + " heard " + p.from + ": " + p.text); },
      [heard](const Heard&) { return *heard; },
  };
}

// A process of its own that joins its member and talks.
void talker(mp::ActorRef the_room, std::string name) {
  the_room.request(Post{name, "hello from pid " + std::to_string(mp::current_process().pid)}, 10s);
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  auto the_room = mp::spawn(room);
  std::vector<mp::ActorRef> members;
  for (std::string name : {"ann", "bob", "cid"}) {
    members.push_back(mp::spawn(member, name));
    the_room.request(Join{members.back()}, 10s);
  }
  mp::Process p(talker, the_room, std::string("dan"));
  p.start();
  p.join();
  the_room.request(Post{"main", "bye"}, 10s);
  for (auto& m : members) {
    // Posts reach members through the room, on another connection than ours: ask until both
    // arrived.
    std::vector<std::string> heard;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (heard.size() < 2 && std::chrono::steady_clock::now() < deadline)
      heard = m.request<std::vector<std::string>>(Heard{}, 10s);
    example::check(heard.size() == 2, "every member heard both posts");
    for (auto& line : heard) std::cout << line << std::endl;
  }
  for (auto& m : members) m.stop();
  the_room.stop();
}
