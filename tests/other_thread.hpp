// Runs a call on a thread other than the test's own, for the claims that an object made on one
// thread may end on another.
#pragma once

#include <chrono>
#include <cstdlib>
#include <functional>
#include <future>
#include <iostream>
#include <thread>

namespace multiproc_test {

// Runs f on a new thread and waits for it at most `limit`. A call that never returns ends the
// test program with exit code 1 (after saying so): its thread can be neither joined nor left
// behind, since a blocked thread would hold up the program's exit as well.
inline void run_on_another_thread(const std::function<void()>& f, std::chrono::seconds limit,
                                  const char* what) {
  std::packaged_task<void()> task(f);
  auto done = task.get_future();
  std::thread(std::move(task)).detach();
  if (done.wait_for(limit) != std::future_status::ready) {
    std::cerr << what << ": did not return within " << limit.count() << " s on another thread\n";
    std::_Exit(1);
  }
  done.get();  // rethrows what f threw
}

}  // namespace multiproc_test
