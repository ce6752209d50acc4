// A storm of signals at one thread, as a profiler's SIGPROF or an interval timer makes: a child
// process sends SIGUSR2 to the thread that made the storm every half millisecond, to a handler
// installed without SA_RESTART, so that every blocking call of that thread keeps failing with
// EINTR. For the regression tests of timed waits: a wait that restarts with its whole timeout
// after EINTR never expires while the storm lasts.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "multiproc/multiproc.hpp"

namespace multiproc_test {

class SignalStorm {
public:
  // Long enough that a wait that never expires under the storm is told from one that does;
  // bounded so that such a wait still ends (after the storm).
  static constexpr auto longest = std::chrono::seconds(6);

  SignalStorm() {
    count();  // the counter exists before the first signal
    struct sigaction sa{};
    sa.sa_handler = [](int) { received().fetch_add(1, std::memory_order_relaxed); };
    ::sigaction(SIGUSR2, &sa, &saved_);  // sa_flags 0: no SA_RESTART, every signal is an EINTR
    auto [ours, theirs] = multiproc::Pipe();
    ctl_ = ours;
    storm_ = multiproc::Process(blow, ::getpid(), ::gettid(), theirs);
    storm_.start();
    // Returns once the storm is on, so that a wait that follows is interrupted from its start.
    if (!ctl_.poll(std::chrono::seconds(30))) throw multiproc::Error("the signal storm did not start");
    ctl_.recv();
  }
  SignalStorm(const SignalStorm&) = delete;
  SignalStorm& operator=(const SignalStorm&) = delete;
  ~SignalStorm() {
    ctl_.send(true);  // the child has a copy of this end too: it would never see EOF
    if (!storm_.join(std::chrono::seconds(30))) {
      storm_.kill();
      storm_.join();
    }
    ::sigaction(SIGUSR2, &saved_, nullptr);
  }

  // Signals this thread has taken so far.
  static int count() { return received().load(std::memory_order_relaxed); }

private:
  static std::atomic<int>& received() {
    static std::atomic<int> n{0};
    return n;
  }

  // The child: signals thread tid of process pid, says so on ctl after the first signal, and
  // goes on until ctl has a message or `longest` has passed.
  static void blow(pid_t pid, pid_t tid, multiproc::Connection ctl) {
    auto end = std::chrono::steady_clock::now() + longest;
    for (bool first = true; !ctl.poll() && std::chrono::steady_clock::now() < end; first = false) {
      if (::tgkill(pid, tid, SIGUSR2) != 0) return;
      if (first) ctl.send(true);
      std::this_thread::sleep_for(std::chrono::microseconds(500));  // the storm's pace, not a wait for anything
    }
  }

  struct sigaction saved_{};
  multiproc::Connection ctl_;
  multiproc::Process storm_;
};

}  // namespace multiproc_test
