// A storm of signals at one thread, as a profiler's SIGPROF or an interval timer makes: a kernel
// timer sends SIGUSR2 to the thread that made the storm every half millisecond, to a handler
// installed without SA_RESTART, so that every blocking call of that thread keeps failing with
// EINTR. For the regression tests of timed waits: a wait that restarts with its whole timeout
// after EINTR never expires while the storm lasts.
//
// The kernel's timer fires on time however busy the machine is (a storm sent by another process
// stalled whenever that process was not scheduled, and tests saw too few signals under load);
// what load can still do is keep the waiting thread off the CPU, so quietest() says whether the
// storm really left no gap a restarted timeout could have expired in.
#pragma once

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <optional>

#include "multiproc/multiproc.hpp"

namespace multiproc_test {

class SignalStorm {
public:
  // Long enough that a wait that never expires under the storm is told from one that does;
  // bounded so that such a wait still ends (the timer disarms itself then).
  static constexpr auto longest = std::chrono::seconds(6);
  static constexpr auto pace = std::chrono::microseconds(500);

  SignalStorm() {
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    ::sigaction(SIGUSR2, &sa, &saved_);  // sa_flags 0: no SA_RESTART, every signal is an EINTR
    sigevent ev{};
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGUSR2;
    ev._sigev_un._tid = ::gettid();
    if (::timer_create(CLOCK_MONOTONIC, &ev, &timer()) != 0) throw multiproc::OSError("timer_create failed", errno);
    end_ns() = now_ns() + std::chrono::nanoseconds(longest).count();
    mark();
    itimerspec every{{0, std::chrono::nanoseconds(pace).count()}, {0, std::chrono::nanoseconds(pace).count()}};
    ::timer_settime(timer(), 0, &every, nullptr);
  }
  SignalStorm(const SignalStorm&) = delete;
  SignalStorm& operator=(const SignalStorm&) = delete;
  ~SignalStorm() {
    ::timer_delete(timer());
    ::sigaction(SIGUSR2, &saved_, nullptr);
  }

  // Signals this thread has taken so far.
  static int count() { return received().load(std::memory_order_relaxed); }

  // Starts a new measure of quietest().
  void mark() {
    last_ns() = now_ns();
    quiet_ns() = 0;
  }
  // The longest stretch since mark() in which this thread took no signal, up to now.
  std::chrono::nanoseconds quietest() const {
    std::int64_t quiet = quiet_ns(), last = last_ns();
    return std::chrono::nanoseconds(std::max(quiet, now_ns() - last));
  }

private:
  static std::int64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe, unlike std::chrono's clocks
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  }
  static void on_signal(int) {
    int saved_errno = errno;
    received().fetch_add(1, std::memory_order_relaxed);
    std::int64_t now = now_ns(), quiet = quiet_ns(), last = last_ns();
    quiet_ns() = std::max(quiet, now - last);
    last_ns() = now;
    if (now >= end_ns()) {
      itimerspec off{};
      ::timer_settime(timer(), 0, &off, nullptr);  // async-signal-safe
    }
    errno = saved_errno;
  }
  // Statics: the handler cannot reach an object; one storm at a time per test program.
  static std::atomic<int>& received() {
    static std::atomic<int> n{0};
    return n;
  }
  static timer_t& timer() {
    static timer_t t{};
    return t;
  }
  static std::int64_t& end_ns() {
    static std::int64_t t = 0;
    return t;
  }
  static volatile std::int64_t& last_ns() {
    static volatile std::int64_t t = 0;
    return t;
  }
  static volatile std::int64_t& quiet_ns() {
    static volatile std::int64_t t = 0;
    return t;
  }

  struct sigaction saved_{};
};

// How long wait() (a wait of `timeout` that should expire) took under a storm that kept its
// thread interrupted throughout: no quiet stretch of half the timeout, in which a wait that
// restarts its whole timeout at every signal could have expired too. A busy machine can leave
// the thread unscheduled that long, so the wait is tried again, up to 5 times; nullopt when the
// storm never held.
template <class Wait>
std::optional<std::chrono::steady_clock::duration> time_under_storm(std::chrono::milliseconds timeout, Wait wait) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    SignalStorm storm;
    auto t0 = std::chrono::steady_clock::now();
    wait();
    auto took = std::chrono::steady_clock::now() - t0;
    if (storm.quietest() < timeout / 2) return took;
  }
  return std::nullopt;
}

}  // namespace multiproc_test
