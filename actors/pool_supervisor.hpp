// The Pool's supervisor: a CAF broker in the parent that watches every worker's pidfd, and on a
// worker's end settles the tasks it held, applies the restart intensity (Erlang/OTP's
// intensity and period) and starts the replacement, or declares the pool broken.
//
// This header is CAF-free: the pool talks to the actor through the pool_supervisor interface,
// which libmultiproc_actors implements (actors/plugin.hpp), and the decisions live in plain
// structs (restart_intensity, inline so that tests use it without the plugin or an actor system).
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <memory>
#include <string>

namespace multiproc::actors {

// What the supervisor asks of the pool. Called on the supervisor's thread.
class pool_control {
public:
  virtual ~pool_control() = default;
  // The worker in `slot` ended: reap it, deliver what it answered, fail the task it was running
  // with WorkerLost. true when that was a crash (not a planned retirement, nor a kill at task_timeout:
  // neither counts against max_restarts).
  virtual bool settle_exit(std::size_t slot) = 0;
  // Starts a worker in `slot`: a descriptor that becomes readable when it ends (the supervisor
  // owns it), or -1 when the pool needs no worker there any more (closed and idle, terminated).
  virtual int start_worker(std::size_t slot) = 0;
  // Too many crashes: every pending and later task fails with BrokenPool.
  virtual void break_pool(const std::string& why) = 0;
};

// At most max_restarts crashes within period.
class restart_intensity {
public:
  using clock = std::chrono::steady_clock;
  restart_intensity(unsigned max_restarts, clock::duration period) : max_(max_restarts), period_(period) {}
  // Records a crash at `now`; false when it is one too many.
  bool record(clock::time_point now) {
    crashes_.push_back(now);
    while (!crashes_.empty() && now - crashes_.front() > period_) crashes_.pop_front();
    return crashes_.size() <= max_;
  }

private:
  unsigned max_;
  clock::duration period_;
  std::deque<clock::time_point> crashes_;
};

// The supervisor actor, seen from the pool. Destroying it stops it.
class pool_supervisor {
public:
  pool_supervisor() = default;
  virtual ~pool_supervisor() = default;
  pool_supervisor(const pool_supervisor&) = delete;
  pool_supervisor& operator=(const pool_supervisor&) = delete;

  // Watches the worker in `slot` through exit_fd (a pidfd; the supervisor closes it).
  virtual void watch(std::size_t slot, int exit_fd) = 0;
  // Stops the actor and returns once it is gone: no worker is settled or started after this.
  virtual void stop() = 0;
};

// Spawns the supervisor actor for `pool` (in libmultiproc_actors; the pool reaches it through
// the plugin table).
std::unique_ptr<pool_supervisor> make_pool_supervisor(pool_control& pool, restart_intensity intensity);

} // namespace multiproc::actors
