// Two actors play ping-pong, each monitoring the other: when one ends, the other receives Down
// with its exit code and ends too. Python has no monitors; the nearest is a parent that waits on
// its children's sentinels with multiprocessing.connection.wait.
#include <iostream>
#include <memory>

#include <multiproc/multiproc.hpp>

#include "check.hpp"

namespace mp = multiproc;
using namespace std::chrono_literals;

struct Ball {
  int hits = 0;
  mp::ActorRef from;
  MSGPACK_DEFINE(hits, from);
};
struct Serve {
  mp::ActorRef to;
  int rounds = 0;
  MSGPACK_DEFINE(to, rounds);
};
struct Partner {
  mp::ActorRef other;
  MSGPACK_DEFINE(other);
};

// A player returns the ball until it has been hit `rounds` times, then ends with exit code 3.
// Whoever sees the other end (a Down) ends with exit code 0.
mp::Behavior player(mp::ActorContext& ctx, std::string name, mp::Event done) {
  auto rounds = std::make_shared<int>(0);
  return {
      [&ctx](const Partner& p) { ctx.monitor(p.other); },
      [&ctx, rounds](const Serve& s) {
        *rounds = s.rounds;
        s.to.send(Ball{1, ctx.self()});
      },
      [&ctx, name, rounds](const Ball& b) {
        if (b.hits % 2000 == 0) std::cout << name << " hit " << b.hits << std::endl;
        if (*rounds && b.hits >= *rounds) return ctx.quit(3);
        b.from.send(Ball{b.hits + 1, ctx.self()});
      },
      [&ctx, name, done](const mp::Down& d) mutable {
        std::cout << name << " saw its partner end with exit code " << d.exitcode << std::endl;
        done.set();
        ctx.quit(0);
      },
  };
}

int main(int argc, char** argv) {
  mp::init(argc, argv);
  mp::Event done;
  auto ping = mp::spawn(player, std::string("ping"), done);
  auto pong = mp::spawn(player, std::string("pong"), done);
  ping.request(Partner{pong}, 10s);  // requests: both monitor before the first ball
  pong.request(Partner{ping}, 10s);
  ping.send(Serve{pong, 4000});
  example::check(done.wait(50s), "the game ended");
  ping.stop();  // it ends on its own after the Down: stop waits for that
  pong.stop();
  std::cout << "both ended: " << std::boolalpha << (!ping.alive() && !pong.alive()) << std::endl;
}
